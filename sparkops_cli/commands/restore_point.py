"""`sparkops restore-point create NAME`: a named point to restore to (before a risky change)."""

from __future__ import annotations

import click

from runbooks import restore_point, sites
from sparkops import defaults
from sparkops_cli.conduct import conduct, db_target_options, runbook_options


@click.group("restore-point")
def command() -> None:
    """Named restore points in the WAL (targets for `sparkops restore --restore-point`)."""


@command.command("create")
@click.argument("name")
@db_target_options()
@click.option(
    "--archive-timeout",
    type=float,
    default=2.0 * defaults.ARCHIVE_TIMEOUT_SECONDS,
    show_default=True,
    help="Seconds to wait for the archiver.",
)
@runbook_options
def create(
    name,
    host,
    inventory,
    target_file,
    stanza,
    archive_timeout,
    dry_run,
    yes,
    json_output,
    evidence_dir,
) -> None:
    """Create restore point NAME and archive it; prints its LSN."""
    state = {}

    def prepare(run):
        target = sites.db_target(host, inventory, target_file, stanza)
        state["target"] = target
        return restore_point.prepare(target, name, run)

    def act(run, prepared):
        lsn = restore_point.create(state["target"], prepared, run, archive_timeout)
        run.say(f"restore point {prepared} at {lsn}")

    conduct(
        "restore-point",
        json_output=json_output,
        evidence_dir=evidence_dir,
        dry_run=dry_run,
        yes=yes,
        prepare=prepare,
        act=act,
        question="",
        destructive=False,
    )
