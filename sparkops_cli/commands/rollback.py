"""`sparkops rollback`: the app back to the previous good release (runbooks.rollback)."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from runbooks import releases, rollback, sites
from runbooks.checklist import StepFailed
from sparkops_cli.conduct import conduct, runbook_options


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
    dry_run,
    yes,
    json_output,
    evidence_dir,
) -> None:
    """Roll the app back: atomic switch of `current`, restart, health gate on /readyz and
    /version; returns to the release it started from (and marks the target BAD) when the gate
    fails. Refuses, unless --force, when the database schema is ahead of the target release
    by a migration that is not backward compatible. Exit codes: 0 done, 1 failed (returned to
    the starting release), 2 refused, 3 not confirmed.
    """

    def prepare(run):
        if target_file:
            apps = [sites.app_target_from_file(target_file)]
            apps[0].command_args = f"--target-file {shlex.quote(str(target_file))}"
        else:
            found = sites.load_inventory(inventory)
            names = hosts or [h.name for h in found.group("app")]
            apps = [sites.app_target_for_host(name, found) for name in names]
            for app in apps:
                app.command_args = f"--host {shlex.quote(app.label)}" + (
                    f" --inventory {shlex.quote(str(inventory))}" if inventory else ""
                )
        # Every host's preconditions before any host changes.
        plans = [rollback.prepare(app, wanted, force, gate_timeout) for app in apps]
        run.plan = [line for plan in plans for line in plan.lines]
        rollback.record(plans, run)
        return plans

    def act(run, plans):
        done = []
        try:
            for plan in plans:
                if not rollback.execute(plan, run):
                    raise StepFailed(
                        f"{plan.target.name} failed its health gate on {plan.app.label}: marked "
                        f"BAD, back on {plan.origin}"
                        + (f"; already rolled back: {', '.join(done)}" if done else "")
                    )
                done.append(plan.app.label)
                run.say(
                    f"{plan.app.label}: release {plan.target.name} is live "
                    f"({plan.facts.get('rollback_seconds')} s from switch to healthy)"
                )
        finally:
            rollback.record(plans, run)

    conduct(
        "rollback",
        json_output=json_output,
        evidence_dir=evidence_dir,
        dry_run=dry_run,
        yes=yes,
        prepare=prepare,
        act=act,
        question="Roll back now?",
    )
