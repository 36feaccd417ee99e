"""`sparkops drill`: restore the latest backup somewhere harmless and prove it (runbooks.drill)."""

from __future__ import annotations

import contextlib
import os

import click

from runbooks import drill, sites
from sparkops import defaults, layout
from sparkops.localhost import free_port, make_workdir
from sparkops_cli.conduct import conduct, db_target_options, runbook_options


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
@click.option("--keep", is_flag=True, help="Leave the copy running for inspection.")
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
    dry_run,
    yes,
    json_output,
    evidence_dir,
) -> None:
    """Restore drill: latest backup + archived WAL onto a scratch copy, amcheck, checksums,
    business invariants (every order has its outbox event, no duplicate open positions,
    balances add up), restore and replay times, evidence, teardown, metrics.

    Exit codes: 0 passed, 1 failed (the failing check is named), 2 refused.
    """

    def prepare(run):
        source = sites.db_target(host, inventory, target_file, stanza)
        executor = source.executor
        if to_host and to_host != source.label:
            executor = sites.ssh_executor(to_host, sites.load_inventory(inventory))
        data_dir, own_parent = scratch_dir, False
        if data_dir is None and target_file:
            # A temporary directory of this run's own (owned by the postgres user).
            data_dir, own_parent = f"{make_workdir('drill')}/data", True
            made.append(data_dir)
        elif data_dir is None:
            data_dir = layout.DRILL_SCRATCH_DIR
        port = scratch_port or free_port()
        scratch = sites.scratch_target(
            source, data_dir, port, executor, label=to_host or f"{source.label}-drill"
        )
        metrics = metrics_file or drill.default_metrics_path(source.executor)
        # Metrics go where node_exporter runs: the db host.
        return drill.prepare(
            source,
            scratch,
            run,
            metrics_path=metrics,
            metrics_executor=source.executor,
            keep=keep,
            own_parent=own_parent,
        )

    def act(run, prepared):
        drill.execute(prepared, run)

    made: list[str] = []  # a temporary parent this command made (local targets)
    try:
        conduct(
            "drill",
            json_output=json_output,
            evidence_dir=evidence_dir,
            dry_run=dry_run,
            yes=yes,
            prepare=prepare,
            act=act,
            question="",
            destructive=False,
        )
    finally:
        # Refused, dry run or kept: the teardown did not remove it; an empty one goes.
        for parent in made:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(parent))
