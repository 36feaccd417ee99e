"""`sparkops watch --since 48h`: the seed's red flags over a window of Prometheus's history."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from sparkops import defaults


@click.command("watch")
@click.option("--since", "window", default="48h", show_default=True, metavar="DURATION",
              help="The window to read, back from now: 48h, 90m, 2d.")  # fmt: skip
@click.option("--prometheus", "prometheus_url", default=None, metavar="URL",
              help="Prometheus's base URL (default: the monitor host's).")  # fmt: skip
@click.option("--inventory", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The pyinfra inventory [inventories/lab.py].")  # fmt: skip
@click.option("--monitor-host", default="monitor", show_default=True,
              help="The monitor host's name (its Prometheus: --prometheus's default).")  # fmt: skip
@click.option("--evidence-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the run's folder goes (default: <repo>/evidence).")  # fmt: skip
def command(window, prometheus_url, inventory, monitor_host, evidence_dir) -> None:
    """Go or no-go after a release: the alerts that fired, the share of 5xx answers, the WAL
    archive's lag and failures and the restore drill's results over the window, from
    Prometheus's history. Writes evidence/<timestamp>-watch/go_no_go.md; exit 0 on GO, 1 on
    NO-GO (or when Prometheus cannot be asked)."""
    from signoff import watch
    from sparkops_cli import generated

    try:
        watch.check_window(window)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from exc
    if prometheus_url is None:
        from runbooks.checklist import Refused
        from runbooks.inventory import load as load_inventory
        from sparkops import webaccess

        try:
            inv = load_inventory(inventory)
            address = inv.host(monitor_host).address
        except Refused as exc:
            raise click.ClickException(str(exc)) from exc
        # HTTPS with the environment's CA and basic auth (Prometheus' web.config.file).
        prometheus_url = webaccess.monitor_url(address, defaults.PROMETHEUS_PORT, inv.environment)
    try:
        flags = watch.evaluate(prometheus_url, window)
    except watch.WatchError as exc:
        raise click.ClickException(f"no verdict: {exc}") from exc
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = (evidence_dir or generated.REPO_ROOT / "evidence") / f"{stamp}-watch"
    folder.mkdir(parents=True)
    (folder / "go_no_go.md").write_text(watch.summary(flags, window, prometheus_url))
    for f in flags:
        click.echo(f"{f.verdict:5} {f.name}: {f.message}")
    click.echo(f"evidence: {folder}")
    result = watch.verdict(flags)
    if result != watch.GO:
        raise click.ClickException(f"watch over the last {window}: {result}")
    click.echo(f"watch over the last {window}: {result}")
