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
                help="Where the evidence folder goes (default: <repo>/evidence).",
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
