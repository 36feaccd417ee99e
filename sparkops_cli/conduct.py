"""What every runbook command shares on the command line: `--dry-run`, `--yes`, `--json`,
`--evidence-dir`, and one way of ending (exit code, message, JSON result)."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import click

from runbooks.checklist import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_CONFIRMED,
    EXIT_OK,
    EXIT_REFUSED,
    Interrupted,
    Refused,
    Run,
    StepFailed,
    confirm,
    interruptible,
)
from runbooks.evidence import Evidence
from runbooks.executor import CommandFailed
from runbooks.target import TargetError
from sparkops.defaults import PGBACKREST_STANZA

# Where the console script keeps the arguments it was given (sparkops_cli.main), so a runbook can
# print the exact command that resumes or repeats it.
ARGV_META = "sparkops.argv"


def runbook_options(func: Callable) -> Callable:
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
        func = option(func)
    return func


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


def conduct(
    name: str,
    *,
    json_output: bool,
    evidence_dir: Path | None,
    dry_run: bool,
    yes: bool,
    prepare: Callable[[Run], object],
    act: Callable[[Run, object], None],
    question: str,
    destructive: bool = True,
) -> None:
    """Preconditions and plan (prepare), confirmation, then act; exits with the runbook's code.

    SIGINT, SIGTERM and SIGHUP end the run through the same path as a failure: the runbook's
    cleanup runs, and the last lines printed (and the JSON and the evidence) say what state
    was left and the one command that undoes it (`run.left`).
    """
    run = Run(name, json_mode=json_output)
    with interruptible(run.say):
        try:
            try:
                prepared = prepare(run)
            except (CommandFailed, TargetError) as exc:
                raise Refused(
                    f"could not read the target while checking: {exc}",
                    "fix what the message names and run the same command again",
                ) from exc
        except Refused as exc:
            run.say(f"REFUSED: {exc}")
            if exc.hint:
                run.say(f"  what to do: {exc.hint}")
            run.say("  nothing was changed")
            message = f"{exc} ({exc.hint})" if exc.hint else str(exc)
            _emit(run.finish("refused", message), json_output)
            sys.exit(EXIT_REFUSED)
        except Interrupted as exc:
            run.say(f"INTERRUPTED ({exc.signal}) while checking: nothing was changed")
            _emit(run.finish("interrupted", f"{exc} before any change"), json_output)
            sys.exit(EXIT_INTERRUPTED)
        if dry_run:
            run.show_plan()
            run.say("dry run: nothing was changed")
            _emit(run.finish("dry-run", "plan only"), json_output)
            sys.exit(EXIT_OK)
        run.evidence = Evidence(name, evidence_dir)
        run.facts["command"] = invocation()
        run.show_plan()
        try:
            confirmed = not destructive or confirm(question, yes=yes, run=run)
        except Interrupted as exc:
            confirmed, run.message = False, str(exc)
        if not confirmed:
            run.say("not confirmed: nothing was changed")
            _emit(run.finish("not-confirmed", "the operator did not confirm"), json_output)
            sys.exit(EXIT_NOT_CONFIRMED)
        code = EXIT_OK
        try:
            act(run, prepared)
        except Refused as exc:
            run.say(f"REFUSED: {exc}")
            if exc.hint:
                run.say(f"  what to do: {exc.hint}")
            run.finish("refused", f"{exc} ({exc.hint})" if exc.hint else str(exc))
            code = EXIT_REFUSED
        except (StepFailed, CommandFailed) as exc:
            run.say(f"FAILED: {exc}")
            run.finish("failed", str(exc))
            code = EXIT_FAILED
        except Interrupted as exc:
            run.say(f"INTERRUPTED ({exc.signal})")
            run.finish("interrupted", str(exc))
            code = EXIT_INTERRUPTED
        except Exception as exc:  # a bug: the runbook's own cleanup has run; say so plainly
            run.say(f"FAILED with an unexpected error: {type(exc).__name__}: {exc}")
            run.finish("failed", f"unexpected error: {type(exc).__name__}: {exc}")
            code = EXIT_FAILED
        else:
            if run.verified:
                run.finish("done", "verified")
            else:
                failed = ", ".join(c.name for c in run.checks if not c.ok)
                run.say(f"FAILED verification: {failed}")
                run.finish("failed", f"verification failed: {failed}")
                code = EXIT_FAILED
        run.say(f"evidence: {run.evidence.path}")
        if code != EXIT_OK:
            run.say_left()
        _emit(run.result(), json_output)
        sys.exit(code)


def _emit(result: dict, json_output: bool) -> None:
    if json_output:
        click.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
