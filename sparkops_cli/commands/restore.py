"""`sparkops restore`: point-in-time restore of the db host with pgBackRest (runbooks.pitr)."""

from __future__ import annotations

import click

from runbooks import flows
from sparkops import defaults
from sparkops_cli.conduct import (
    db_target_options,
    finish,
    invocation,
    restore_target,
    restore_target_options,
    runbook_options,
)


@click.command("restore")
@restore_target_options
@db_target_options()
@click.option(
    "--to-host",
    default=None,
    help="Restore onto this host instead of in place (the repository must be "
    "reachable from it); production is not touched.",
)
@click.option(
    "--to-data-dir",
    default=None,
    help="With --to-host (or alone, on the same host): the copy's data directory.",
)
@click.option(
    "--to-port",
    type=int,
    default=defaults.POSTGRES_PORT + 1,
    show_default=True,
    help="The copy's port (0: any free port, for a local copy).",
)
@click.option("--no-pause", is_flag=True, help="Do not pause pgBouncer around the restore.")
@runbook_options
def command(
    at_time,
    lsn,
    restore_point,
    latest,
    host,
    inventory,
    target_file,
    stanza,
    to_host,
    to_data_dir,
    to_port,
    check_sql,
    target_timeline,
    recovery_timeout,
    no_pause,
    pause_wait,
    disconnect_blockers,
    options,
) -> None:
    """Restore the database to a time, an LSN, a restore point or the latest WAL.

    Checks first (backup set, bounds, timeline, data-loss window; for a copy, that its
    directory and port are free) and prints the plan; then, confirmed: pause pgBouncer
    (bounded by --pause-wait), stop PostgreSQL, pgbackrest restore --delta, start, ask it to
    end recovery (pg_promote: it replays to the target first, then opens without waiting for
    a checkpoint), wait for recovery to end, resume pgBouncer, checkpoint, verify (amcheck,
    queries). A failure or a signal (SIGINT, SIGTERM, SIGHUP) resumes pgBouncer, restarts
    PostgreSQL when nothing was restored yet, asks a restored server still waiting to end
    recovery, and prints the state left and the one command that finishes or undoes it. Evidence
    goes to evidence/<timestamp>-restore/. Exit codes: 0 done, 1 failed, 2 refused, 3 not
    confirmed, 4 interrupted.
    """
    kind, value = restore_target(at_time, lsn, restore_point, latest)
    order = flows.RestoreOrder(
        kind=kind,
        value=value,
        where=flows.DbWhere(host, inventory, target_file, stanza),
        to_host=to_host,
        to_data_dir=to_data_dir,
        to_port=to_port,
        check_sql=tuple(check_sql),
        target_timeline=target_timeline,
        recovery_timeout=recovery_timeout,
        pause_bouncer=not no_pause,
        pause_wait=pause_wait,
        disconnect_blockers=disconnect_blockers,
        rerun_command=invocation(),
    )
    finish(flows.restore(order), options)
