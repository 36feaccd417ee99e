"""`sparkops rollback`: the app back to the previous good release (runbooks.rollback)."""

from __future__ import annotations

from pathlib import Path

import click

from runbooks import flows, releases
from sparkops_cli.conduct import finish, runbook_options


@click.command("rollback")
@click.option(
    "--to",
    "wanted",
    metavar="RELEASE",
    help="The release to go to (default: the previous one not marked BAD).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Go even when the schema gate refuses or the release is marked BAD.",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="An app host by its name in the inventory (repeatable; default: every host of the "
    "app group, one after the other).",
)
@click.option(
    "--inventory",
    type=click.Path(path_type=Path),
    default=None,
    help="The pyinfra inventory whose hosts --host names [inventories/lab.py].",
)
@click.option(
    "--target-file",
    type=click.Path(path_type=Path),
    help="A JSON description of a local app target instead of --host (tests).",
)
@click.option(
    "--gate-timeout",
    type=float,
    default=releases.DEFAULT_GATE_TIMEOUT,
    show_default=True,
    help="Seconds the release has to pass /readyz and /version.",
)
@runbook_options
def command(
    wanted,
    force,
    hosts,
    inventory,
    target_file,
    gate_timeout,
    options,
) -> None:
    """Roll the app back: atomic switch of `current`, restart, health gate on /readyz and
    /version; returns to the release it started from (and marks the target BAD) when the gate
    fails. Refuses, unless --force, when the database schema is ahead of the target release
    by a migration that is not backward compatible. Exit codes: 0 done, 1 failed (returned to
    the starting release), 2 refused, 3 not confirmed.
    """

    order = flows.RollbackOrder(
        wanted=wanted,
        force=force,
        hosts=tuple(hosts),
        inventory=inventory,
        target_file=target_file,
        gate_timeout=gate_timeout,
    )
    finish(flows.rollback_runbook(order), options)
