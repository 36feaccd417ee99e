"""`sparkops restore-point create NAME`: a named point to restore to (before a risky change)."""

from __future__ import annotations

import click

from runbooks import flows
from sparkops import defaults
from sparkops_cli.conduct import db_target_options, finish, runbook_options


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
    options,
) -> None:
    """Create restore point NAME and archive it; prints its LSN."""
    where = flows.DbWhere(host, inventory, target_file, stanza)
    finish(flows.restore_point_runbook(name, where, archive_timeout), options)
