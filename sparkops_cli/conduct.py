"""What every command that changes state shares on the command line: `--dry-run`, `--yes`,
`--json`, `--evidence-dir`, and one way of ending (runbooks.conduct: plan, confirmation, exit
code 0 done / 1 failed / 2 refused / 3 not confirmed / 4 interrupted, the JSON result)."""

from __future__ import annotations

import functools
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import click

from runbooks.bouncer import DEFAULT_PAUSE_WAIT_SECONDS
from runbooks.conduct import Options, Runbook, conduct
from sparkops.defaults import PGBACKREST_STANZA

# Where the console script keeps the arguments it was given (sparkops_cli.main), so a runbook can
# print the exact command that resumes or repeats it.
ARGV_META = "sparkops.argv"


def runbook_options(func: Callable) -> Callable:
    """`--dry-run`, `--yes`, `--json`, `--evidence-dir`, handed to the command as one
    `options` (runbooks.conduct.Options) for `finish`."""

    @functools.wraps(func)
    def command(*args, dry_run, yes, json_output, evidence_dir, **kwargs):
        options = Options(
            dry_run=dry_run,
            yes=yes,
            json_mode=json_output,
            evidence_dir=evidence_dir,
            command=invocation(),
        )
        return func(*args, options=options, **kwargs)

    for option in reversed(
        [
            click.option(
                "--dry-run",
                is_flag=True,
                help="Check the preconditions and print the plan; change nothing.",
            ),
            click.option(
                "--yes", "-y", is_flag=True, help="Do not ask for confirmation (automation)."
            ),
            click.option(
                "--json",
                "json_output",
                is_flag=True,
                help="Print the result as JSON on stdout (people read stderr).",
            ),
            click.option(
                "--evidence-dir",
                type=click.Path(path_type=Path),
                default=None,
                help="Where the evidence folder goes (default: $SPARKOPS_EVIDENCE_DIR, "
                "else <repo>/evidence).",
            ),
        ]
    ):
        command = option(command)
    return command


def db_target_options(
    host_help: str = "The db host, by its name in the inventory.",
) -> Callable[[Callable], Callable]:
    """`--host`, `--inventory`, `--target-file`, `--stanza`: where a db runbook acts."""

    def decorate(func: Callable) -> Callable:
        for option in reversed(
            [
                click.option("--host", default="db", show_default=True, help=host_help),
                click.option(
                    "--inventory",
                    type=click.Path(path_type=Path),
                    default=None,
                    help="The pyinfra inventory whose hosts --host names [inventories/lab.py].",
                ),
                click.option(
                    "--target-file",
                    type=click.Path(path_type=Path),
                    help="A JSON description of a local target instead of --host (tests, bench).",
                ),
                click.option(
                    "--stanza", default=None, help=f"pgBackRest stanza [{PGBACKREST_STANZA}]"
                ),
            ]
        ):
            func = option(func)
        return func

    return decorate


def invocation() -> str:
    """The command line this run was started with (to say "run it again" precisely)."""
    ctx = click.get_current_context(silent=True)
    argv = ctx.meta.get(ARGV_META) if ctx else None
    return "sparkops " + shlex.join(argv if argv is not None else sys.argv[1:])


def finish(book: Runbook, options: Options) -> NoReturn:
    """Run `book` the one way every state-changing command runs (runbooks.conduct), print
    the JSON result when asked, and exit with the runbook's code."""
    outcome = conduct(book, options)
    if options.json_mode:
        click.echo(json.dumps(outcome.result, indent=2, sort_keys=True, default=str))
    sys.exit(outcome.code)


def restore_target_options(func: Callable) -> Callable:
    """What `sparkops restore` and `sparkops cluster restore` share: the target (`--time`,
    `--lsn`, `--restore-point`, `--latest`; `restore_target` picks the one given), the
    checks, the timeline, recovery's deadline, and pgBouncer's bounded PAUSE."""
    for option in reversed(
        [
            click.option(
                "--time",
                "at_time",
                metavar="TIMESTAMP",
                help="Restore to this moment (ISO 8601 with a zone, e.g. 2026-11-29T08:15:00Z).",
            ),
            click.option(
                "--lsn", metavar="LSN", help="Restore to this WAL position (e.g. 0/16B3748)."
            ),
            click.option(
                "--restore-point",
                metavar="NAME",
                help="Restore to a named restore point (sparkops restore-point create NAME).",
            ),
            click.option(
                "--latest", is_flag=True, help="Restore everything archived (replay all WAL)."
            ),
            click.option(
                "--check-sql",
                multiple=True,
                metavar="[NAME=]SQL",
                help="A query to run after the restore (repeatable); default: orders count "
                "and checksums.",
            ),
            click.option(
                "--target-timeline",
                default=None,
                help="recovery_target_timeline: latest (PostgreSQL's default), current, or a "
                "number, for targets on an abandoned timeline.",
            ),
            click.option(
                "--recovery-timeout",
                type=float,
                default=3600,
                show_default=True,
                help="Seconds to wait for recovery to end.",
            ),
            click.option(
                "--pause-wait",
                type=click.FloatRange(min=1),
                default=DEFAULT_PAUSE_WAIT_SECONDS,
                show_default=True,
                help="Seconds pgBouncer's PAUSE may wait for running transactions; then it is "
                "resumed and the restore refuses, naming them.",
            ),
            click.option(
                "--disconnect-blockers",
                is_flag=True,
                help="When PAUSE runs out of time, end the transactions in its way "
                "(pg_terminate_backend: their clients get an error) and pause again.",
            ),
        ]
    ):
        func = option(func)
    return func


def restore_target(at_time, lsn, restore_point, latest) -> tuple[str, str | bool]:
    """(kind, value) of the one target given to a restore command, or a usage error."""
    given = [
        (k, v)
        for k, v in (("time", at_time), ("lsn", lsn), ("name", restore_point), ("latest", latest))
        if v
    ]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --time, --lsn, --restore-point, --latest")
    return given[0]
