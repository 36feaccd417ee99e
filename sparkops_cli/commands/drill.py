"""`sparkops drill`: restore the latest backup somewhere harmless and prove it (runbooks.drill)."""

from __future__ import annotations

import click

from runbooks import flows
from sparkops import defaults, layout
from sparkops_cli.conduct import db_target_options, finish, runbook_options


@click.command("drill")
@db_target_options("The db host whose backups are drilled, by its name in the inventory.")
@click.option(
    "--to-host",
    default=None,
    help="A scratch host to restore onto (its pgBackRest must reach the "
    "repository); default: a scratch directory on the db host.",
)
@click.option(
    "--scratch-dir",
    default=None,
    help="The copy's data directory: new or empty, and not inside (or containing) any "
    "cluster's data directory; refused otherwise, before anything is touched.",
)
@click.option(
    "--scratch-port",
    type=int,
    default=defaults.POSTGRES_PORT + 2,
    show_default=True,
    help="The copy's port (0: any free port, locally).",
)
@click.option(
    "--metrics-file",
    default=None,
    help="Where to write the Prometheus textfile metrics (default: "
    f"{layout.DRILL_METRICS_FILE} on the "
    "db host when that directory exists).",
)
@click.option(
    "--keep",
    is_flag=True,
    help="Leave the copy running for inspection (checkpointed); the run ends with its psql "
    "and the one command that removes it.",
)
@runbook_options
def command(
    host,
    inventory,
    target_file,
    stanza,
    to_host,
    scratch_dir,
    scratch_port,
    metrics_file,
    keep,
    options,
) -> None:
    """Restore drill: latest backup + archived WAL onto a scratch copy, amcheck, checksums,
    business invariants (every order has its outbox event, no duplicate open positions,
    balances add up), restore and replay times, evidence, teardown, metrics.

    Exit codes: 0 passed, 1 failed (the failing check is named), 2 refused.
    """

    order = flows.DrillOrder(
        where=flows.DbWhere(host, inventory, target_file, stanza),
        to_host=to_host,
        scratch_dir=scratch_dir,
        scratch_port=scratch_port,
        metrics_file=metrics_file,
        keep=keep,
    )
    finish(flows.drill_runbook(order), options)
