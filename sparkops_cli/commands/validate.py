"""`sparkops validate`: the release sign-off checklist against a deployed environment."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import click

from sparkops import defaults


@click.command("validate")
@click.option("--inventory", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The pyinfra inventory [inventories/lab.py].")  # fmt: skip
@click.option("--db-host", default="db", show_default=True, help="The db host's name.")
@click.option("--app-host", default="app", show_default=True,
              help="An app host's name (its :8000 is --app-url's default).")  # fmt: skip
@click.option("--monitor-host", default="monitor", show_default=True,
              help="The monitor host's name (its Prometheus: --prometheus's default).")  # fmt: skip
@click.option("--app-url", default=None, metavar="URL",
              help="Where the app answers (the front end when there is one).")  # fmt: skip
@click.option("--prometheus", "prometheus_url", default=None, metavar="URL",
              help="Prometheus's base URL.")  # fmt: skip
@click.option("--skip", multiple=True, metavar="CHECK",
              help="Leave out a check by name (repeatable): --skip 'restore drill'.")  # fmt: skip
@click.option("--evidence-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the run's folder goes (default: <repo>/evidence).")  # fmt: skip
@click.option("--archive-deadline", type=click.FloatRange(min=1), metavar="SECONDS",
              default=None, help="How long the WAL switch may take to be archived "
              "[archive_timeout + 30 s]; longer for a slow repository.")  # fmt: skip
def command(inventory, db_host, app_host, monitor_host, app_url, prometheus_url, skip,
            evidence_dir, archive_deadline) -> None:  # fmt: skip
    """Run the sign-off checklist (docs/validation-checklist.md): the position index, the
    idempotency first/duplicate/mismatch sequence (an API key made on --app-host for its own
    account, revoked after), the money suite's coverage, pgBackRest check and info, a WAL
    switch archived in time, pgBouncer's pools, the security headers, the alert rules loaded,
    the dashboard's queries, a restore drill. Every check runs; each writes its evidence to
    evidence/<timestamp>-validate/ with validation_summary.md and report.html (plots). Exit 0
    when all pass, 1 when any fails."""
    from runbooks import sites
    from runbooks.checklist import Refused
    from runbooks.inventory import load as load_inventory
    from signoff import report, validate
    from sparkops import webaccess
    from sparkops_cli import generated

    names = {name for name, _ in validate.CHECKS}
    unknown = set(skip) - names
    if unknown:
        raise click.BadParameter(
            f"{sorted(unknown)}; checks are {sorted(names)}", param_hint="--skip"
        )
    try:
        inv = load_inventory(inventory)
        app_url = app_url or f"http://{inv.host(app_host).address}:{defaults.APP_PORT}"
        # HTTPS with the environment's CA and basic auth (Prometheus' web.config.file).
        prometheus_url = prometheus_url or webaccess.monitor_url(
            inv.host(monitor_host).address, defaults.PROMETHEUS_PORT, inv.environment
        )
        db = sites.db_target_for_host(db_host, defaults.PGBACKREST_STANZA, inv)
    except Refused as exc:
        raise click.ClickException(str(exc)) from exc
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = (evidence_dir or generated.REPO_ROOT / "evidence") / f"{stamp}-validate"
    folder.mkdir(parents=True)
    keys = _HostKeys(app_host, inv)
    ctx = validate.Context(db, app_url.rstrip("/"), prometheus_url.rstrip("/"), folder,
                           api_key=keys.make)  # fmt: skip
    if archive_deadline is not None:
        ctx.archive_deadline = archive_deadline
    started = time.monotonic()
    try:
        outcomes = validate.run_all(ctx, set(skip), lambda line: click.echo(line, err=True))
    finally:
        keys.revoke_all()
    total = time.monotonic() - started
    validate.write_summary(ctx, outcomes, total)
    report.write(ctx, outcomes, total)
    failed = [o for o in outcomes if not o.ok]
    click.echo(f"evidence: {folder}")
    if failed:
        raise click.ClickException(
            f"validate: {len(failed)} of {len(outcomes)} checks failed ({total:.0f}s): "
            + "; ".join(o.name for o in failed)
        )
    click.echo(f"validate: all {len(outcomes)} checks passed in {total:.0f}s")


class _HostKeys:
    """API keys for the idempotency check, made on an app host with `sparkops app keys create`
    (the app's own settings) and revoked there when the run ends."""

    def __init__(self, app_host: str, inventory) -> None:
        self.app_host, self.inventory = app_host, inventory
        self.made: list[str] = []
        self._executor = None

    def _run(self, command: str):
        from runbooks import sites

        if self._executor is None:
            self._executor = sites.ssh_executor(self.app_host, self.inventory)
        return self._executor.run(["sh", "-c", command], timeout=120, check=False)

    def make(self) -> str:
        from signoff import validate
        from sparkops_cli.commands.app import keys_create_on_host, secret_in

        run = self._run(keys_create_on_host("sparkops-validate", [validate.SIGNOFF_ACCOUNT],
                                            ["read", "trade"]))  # fmt: skip
        if not run.ok:
            said = validate.error_line(run.stderr or f"exit {run.returncode}")
            raise validate.Failed(f"could not make an API key on {self.app_host}: {said}")
        for line in run.stdout.splitlines():
            if line.startswith("key id: "):
                self.made.append(line.removeprefix("key id: ").strip())
        return secret_in(run.stdout)

    def revoke_all(self) -> None:
        from sparkops_cli.commands.app import keys_revoke_on_host

        for key_id in self.made:
            run = self._run(keys_revoke_on_host(key_id))
            if not run.ok:
                click.echo(f"could not revoke API key {key_id} on {self.app_host}: "
                           f"{run.stderr.strip()[-200:]}", err=True)  # fmt: skip
