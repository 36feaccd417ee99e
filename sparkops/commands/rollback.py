"""`sparkops rollback`: the app back to the previous good release (runbooks.rollback)."""

from __future__ import annotations

from pathlib import Path

import click

from runbooks import releases, rollback, sites
from runbooks.checklist import StepFailed
from runbooks.cli import conduct, runbook_options


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
    default="app",
    show_default=True,
    help="The app host, by its name in the lab inventory.",
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
    wanted, force, host, target_file, gate_timeout, dry_run, yes, json_output, evidence_dir
) -> None:
    """Roll the app back: atomic switch of `current`, restart, health gate on /readyz and
    /version; returns to the release it started from (and marks the target BAD) when the gate
    fails. Refuses, unless --force, when the database schema is ahead of the target release
    by a migration that is not backward compatible. Exit codes: 0 done, 1 failed (returned to
    the starting release), 2 refused, 3 not confirmed.
    """

    def prepare(run):
        app = (
            sites.app_target_from_file(target_file)
            if target_file
            else sites.app_target_for_host(host)
        )
        return rollback.prepare(app, wanted, force, run, gate_timeout)

    def act(run, plan):
        if not rollback.execute(plan, run):
            raise StepFailed(
                f"{plan.target.name} failed its health gate: marked BAD, back on {plan.origin}"
            )
        run.say(
            f"release {plan.target.name} is live "
            f"({run.facts.get('rollback_seconds')} s from switch to healthy)"
        )

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
