"""`sparkops pgbouncer status|resume`: pgBouncer on a db host, as the runbooks reach it.

`resume` is the undo a runbook prints when it could not resume pgBouncer itself (the host
did not answer during its cleanup): RESUME when the database is paused, a no-op otherwise.
"""

from __future__ import annotations

import click

from runbooks import bouncer, flows
from runbooks.checklist import Refused
from sparkops_cli.conduct import db_target_options, finish, runbook_options


@click.group("pgbouncer")
def command() -> None:
    """pgBouncer on a db host: is it paused, and resume it."""


@command.command("status")
@db_target_options("The db host whose pgBouncer to ask.")
def status(host, inventory, target_file, stanza) -> None:
    """Print whether pgBouncer has the database paused (exit 0 not paused, 1 paused)."""
    try:
        target = flows.bouncer_target(flows.DbWhere(host, inventory, target_file, stanza))
    except Refused as exc:
        raise click.ClickException(f"{exc} ({exc.hint})") from None
    paused = bouncer.is_paused(target)
    click.echo(f"pgBouncer on {target.label}: {target.bouncer.database} "
               f"{'PAUSED' if paused else 'not paused'}")  # fmt: skip
    raise SystemExit(1 if paused else 0)


@command.command("resume")
@db_target_options("The db host whose pgBouncer to resume.")
@runbook_options
def resume(host, inventory, target_file, stanza, options) -> None:
    """RESUME the database in pgBouncer when it is paused (a no-op otherwise), verified."""

    where = flows.DbWhere(host, inventory, target_file, stanza)
    finish(flows.bouncer_resume_runbook(where), options)
