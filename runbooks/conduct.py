"""How every command that changes state runs: check and plan, confirm, act, end with one code.

`Runbook` is what a runbook (restore, drill, rollback, a purge, a requeue) hands over:
`prepare(run)` checks the preconditions and fills `run.plan` (refusing before anything
changed), `act(run, prepared)` does the work. `conduct` runs it the same way for all of them:

- prepare; a `Refused` (or a target that cannot be read) ends here: "nothing was changed";
- `dry_run`: print the plan, change nothing, exit 0;
- print the plan, confirm (unless `yes`), act;
- SIGINT, SIGTERM and SIGHUP end the run through the failure path, so the runbook's cleanup
  runs and the last lines say what state was left and the one command that undoes it.

Exit codes, the same for every such command: 0 done, 1 failed, 2 refused, 3 not confirmed,
4 interrupted. The command line (sparkops_cli/conduct.py) maps options onto this and prints
the result; the benchmark calls it directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class Runbook:
    name: str
    prepare: Callable[[Run], object]
    act: Callable[[Run, object], None]
    question: str = "Go ahead?"
    # Asks for confirmation (destructive) or not (a drill on a scratch copy).
    destructive: bool = True
    # Routine work (an hourly purge) leaves no evidence folder; runbooks do.
    keeps_evidence: bool = True
    # Runs whatever the outcome, after the end (a temporary directory this run made).
    cleanup: Callable[[], None] | None = None


@dataclass
class Options:
    dry_run: bool = False
    yes: bool = False
    json_mode: bool = False
    quiet: bool = False
    evidence_dir: Path | None = None
    command: str = ""  # the command line that started it (facts, "run it again")


@dataclass
class Outcome:
    code: int
    result: dict = field(default_factory=dict)
    run: Run | None = None


def conduct(book: Runbook, options: Options) -> Outcome:
    try:
        return _conduct(book, options)
    finally:
        if book.cleanup:
            book.cleanup()


def _conduct(book: Runbook, options: Options) -> Outcome:
    run = Run(book.name, json_mode=options.json_mode, quiet=options.quiet)
    with interruptible(run.say):
        try:
            try:
                prepared = book.prepare(run)
            except (CommandFailed, TargetError) as exc:
                raise Refused(
                    f"could not read the target while checking: {exc}",
                    "fix what the message names and run the same command again",
                ) from exc
        except Refused as exc:
            message = _say_refused(run, exc)
            run.say("  nothing was changed")
            return Outcome(EXIT_REFUSED, run.finish("refused", message), run)
        except Interrupted as exc:
            run.say(f"INTERRUPTED ({exc.signal}) while checking: nothing was changed")
            return Outcome(
                EXIT_INTERRUPTED, run.finish("interrupted", f"{exc} before any change"), run
            )
        if options.dry_run:
            run.show_plan()
            run.say("dry run: nothing was changed")
            return Outcome(EXIT_OK, run.finish("dry-run", "plan only"), run)
        if book.keeps_evidence:
            run.evidence = Evidence(book.name, options.evidence_dir)
        run.facts["command"] = options.command
        run.show_plan()
        try:
            confirmed = not book.destructive or confirm(book.question, yes=options.yes, run=run)
        except Interrupted as exc:
            confirmed, run.message = False, str(exc)
        if not confirmed:
            run.say("not confirmed: nothing was changed")
            return Outcome(
                EXIT_NOT_CONFIRMED, run.finish("not-confirmed", "the operator did not confirm"), run
            )
        code = EXIT_OK
        try:
            book.act(run, prepared)
        except Refused as exc:
            run.finish("refused", _say_refused(run, exc))
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
        if run.evidence:
            run.say(f"evidence: {run.evidence.path}")
        if code != EXIT_OK:
            run.say_left()
        return Outcome(code, run.result(), run)


def _say_refused(run: Run, exc: Refused) -> str:
    """Print a refusal and what to do; the one-line message the result records."""
    run.say(f"REFUSED: {exc}")
    if exc.hint:
        run.say(f"  what to do: {exc.hint}")
    return f"{exc} ({exc.hint})" if exc.hint else str(exc)
