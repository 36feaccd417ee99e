"""`sparkops restore`: point-in-time restore of the db host with pgBackRest (runbooks.pitr)."""

from __future__ import annotations

import click

from runbooks import bouncer, flows
from sparkops import defaults
from sparkops_cli.conduct import db_target_options, finish, invocation, runbook_options


@click.command("restore")
@click.option(
    "--time",
    "at_time",
    metavar="TIMESTAMP",
    help="Restore to this moment (ISO 8601 with a zone, e.g. 2026-11-29T08:15:00Z).",
)
@click.option("--lsn", metavar="LSN", help="Restore to this WAL position (e.g. 0/16B3748).")
@click.option(
    "--restore-point",
    metavar="NAME",
    help="Restore to a named restore point (sparkops restore-point create NAME).",
)
@click.option("--latest", is_flag=True, help="Restore everything archived (replay all WAL).")
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
@click.option(
    "--check-sql",
    multiple=True,
    metavar="[NAME=]SQL",
    help="A query to run after the restore (repeatable); default: orders count and checksums.",
)
@click.option(
    "--target-timeline",
    default=None,
    help="recovery_target_timeline: latest (PostgreSQL's default), current, or a "
    "number, for targets on an abandoned timeline.",
)
@click.option(
    "--recovery-timeout",
    type=float,
    default=3600,
    show_default=True,
    help="Seconds to wait for recovery to end.",
)
@click.option("--no-pause", is_flag=True, help="Do not pause pgBouncer around the restore.")
@click.option(
    "--pause-wait",
    type=click.FloatRange(min=1),
    default=bouncer.DEFAULT_PAUSE_WAIT_SECONDS,
    show_default=True,
    help="Seconds pgBouncer's PAUSE may wait for running transactions; then it is resumed "
    "and the restore refuses, naming them.",
)
@click.option(
    "--disconnect-blockers",
    is_flag=True,
    help="When PAUSE runs out of time, end the transactions in its way "
    "(pg_terminate_backend: their clients get an error) and pause again.",
)
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
    (bounded by --pause-wait), stop PostgreSQL, pgbackrest restore --delta, start, wait for
    recovery to end, resume pgBouncer, verify (amcheck, queries). A failure or a signal
    (SIGINT, SIGTERM, SIGHUP) resumes pgBouncer, restarts PostgreSQL when nothing was restored
    yet, and prints the state left and the one command that finishes or undoes it. Evidence
    goes to evidence/<timestamp>-restore/. Exit codes: 0 done, 1 failed, 2 refused, 3 not
    confirmed, 4 interrupted.
    """
    given = [
        (k, v)
        for k, v in (("time", at_time), ("lsn", lsn), ("name", restore_point), ("latest", latest))
        if v
    ]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --time, --lsn, --restore-point, --latest")
    kind, value = given[0]
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
