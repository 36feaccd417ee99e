"""`sparkops pgbouncer status|resume`: pgBouncer on a db host, as the runbooks reach it.

`resume` is the undo a runbook prints when it could not resume pgBouncer itself (the host
did not answer during its cleanup): RESUME when the database is paused, a no-op otherwise.
"""

from __future__ import annotations

import click

from runbooks import bouncer, sites
from runbooks.checklist import Refused
from sparkops_cli.conduct import conduct, db_target_options, runbook_options


@click.group("pgbouncer")
def command() -> None:
    """pgBouncer on a db host: is it paused, and resume it."""


def _target(host, inventory, target_file, stanza):
    target = sites.db_target(host, inventory, target_file, stanza)
    if target.bouncer is None:
        raise Refused(
            f"no pgBouncer admin console is known for {target.label}",
            "deploy pgBouncer there first (its admin password comes from the deploy's secrets)",
        )
    return target


@command.command("status")
@db_target_options("The db host whose pgBouncer to ask.")
def status(host, inventory, target_file, stanza) -> None:
    """Print whether pgBouncer has the database paused (exit 0 not paused, 1 paused)."""
    try:
        target = _target(host, inventory, target_file, stanza)
    except Refused as exc:
        raise click.ClickException(f"{exc} ({exc.hint})") from None
    paused = bouncer.is_paused(target)
    click.echo(f"pgBouncer on {target.label}: {target.bouncer.database} "
               f"{'PAUSED' if paused else 'not paused'}")  # fmt: skip
    raise SystemExit(1 if paused else 0)


@command.command("resume")
@db_target_options("The db host whose pgBouncer to resume.")
@runbook_options
def resume(host, inventory, target_file, stanza, dry_run, yes, json_output, evidence_dir) -> None:
    """RESUME the database in pgBouncer when it is paused (a no-op otherwise), verified."""

    def prepare(run):
        target = _target(host, inventory, target_file, stanza)
        paused = bouncer.is_paused(target)
        run.facts["paused_before"] = paused
        run.plan = [
            f"pgBouncer on {target.label}: {target.bouncer.database} is "
            f"{'PAUSED' if paused else 'not paused'}",
            "  steps:",
            f"    1. {'RESUME ' + target.bouncer.database if paused else 'nothing to do'}",
        ]
        return target

    def act(run, target):
        run.watch(target.executor)
        with run.step("Resume pgBouncer"):
            bouncer.resume(target)
        run.check("not paused", not bouncer.is_paused(target), target.bouncer.database)

    conduct(
        "pgbouncer-resume",
        json_output=json_output,
        evidence_dir=evidence_dir,
        dry_run=dry_run,
        yes=yes,
        prepare=prepare,
        act=act,
        question="",
        destructive=False,
    )
