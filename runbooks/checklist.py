"""The shape every runbook shares: preconditions, a printed plan, confirmation, timed steps,
verification, evidence, and a clear exit.

Exit codes: 0 done and verified; 1 failed while acting or in verification (the message says
what state things are in); 2 refused before any change (bad input, a precondition failed);
3 not confirmed (nothing changed); 4 interrupted (SIGINT, SIGTERM or SIGHUP: the runbook's
cleanup ran, and the message says what state things are in).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import click

from runbooks.evidence import Evidence
from runbooks.executor import Executor, Result

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_NOT_CONFIRMED, EXIT_INTERRUPTED = 0, 1, 2, 3, 4
INTERRUPTING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Refused(RuntimeError):
    """A precondition failed or the input is bad; nothing was changed."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class StepFailed(RuntimeError):
    """A step failed after changes began; the message says what state things are in."""


class Interrupted(BaseException):
    """A signal asked the runbook to stop. A BaseException, so no `except Exception` on the
    way swallows it; every `finally` (the runbook's cleanup) still runs."""

    def __init__(self, signum: int):
        self.signal = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.signal}")


@dataclass
class _Signals:
    """What interruptible() and shielded() share: one runbook per process."""

    quiet: int = 0  # deferred() sections open (starting a child process)
    pending: int | None = None  # a signal that arrived inside one
    raised: bool = False
    say: object = None
    # What each open shielded() section is doing, innermost last: told to whoever signalled.
    why: list[str] = field(default_factory=list)

    @property
    def depth(self) -> int:
        """shielded() sections open."""
        return len(self.why)


_SIGNALS = _Signals()


@contextlib.contextmanager
def interruptible(say) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP end the runbook through one path: the first raises
    `Interrupted` where the runbook is (or, inside a `shielded()` cleanup, as that cleanup
    ends); later ones are only reported, so no cleanup is cut short."""
    _SIGNALS.why, _SIGNALS.pending, _SIGNALS.raised, _SIGNALS.say = [], None, False, say
    _SIGNALS.quiet = 0

    def handler(signum, _frame):
        name = signal.Signals(signum).name
        if _SIGNALS.raised or _SIGNALS.depth or _SIGNALS.quiet:
            if not _SIGNALS.raised and _SIGNALS.pending is None:
                _SIGNALS.pending = signum
            if _SIGNALS.raised or _SIGNALS.depth:
                say(f"{name} received: {_SIGNALS.why[-1] if _SIGNALS.why else CLEANUP_FIRST}")
            return
        _SIGNALS.raised = True
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in INTERRUPTING_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A moment no signal may cut, silently: starting a child process. Raised inside
    `subprocess.Popen`, the interruption would leave the child running with nobody holding
    its pid (an interrupted rollback's switch then landed after its own undo, under load). A
    signal that arrives meanwhile is raised when the block ends. Main thread only: signals
    are handled there."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _SIGNALS.quiet += 1
    try:
        yield
    finally:
        _SIGNALS.quiet -= 1
    _raise_pending()


def _raise_pending() -> None:
    if (
        not _SIGNALS.depth
        and not _SIGNALS.quiet
        and _SIGNALS.pending is not None
        and not _SIGNALS.raised
    ):
        signum, _SIGNALS.pending, _SIGNALS.raised = _SIGNALS.pending, None, True
        raise Interrupted(signum)


CLEANUP_FIRST = "finishing the cleanup first"
STATE_FIRST = "reading the state this run leaves first"


@contextlib.contextmanager
def shielded(why: str = CLEANUP_FIRST) -> Iterator[None]:
    """A cleanup (or an action worse cut than finished) no signal interrupts: one that
    arrives meanwhile is told `why` and raised when the section ends."""
    _SIGNALS.why.append(why)
    try:
        yield
    finally:
        _SIGNALS.why.pop()
    _raise_pending()


@dataclass
class StepRecord:
    number: int
    name: str
    seconds: float
    ok: bool
    detail: str = ""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Run:
    """One execution of a runbook: collects the plan, the steps, the checks and the facts."""

    runbook: str
    evidence: Evidence | None = None
    json_mode: bool = False
    quiet: bool = False  # benchmarks: figures only
    plan: list[str] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    outcome: str = "planned"
    message: str = ""
    # When the run does not end as planned: the state it leaves, in the operator's words, and
    # the one command that undoes it (or finishes the job).
    left: list[str] = field(default_factory=list)
    undo: str | None = None
    _buffer: list[str] | None = None

    # --- output ---------------------------------------------------------------------------
    def say(self, text: str = "") -> None:
        # With --json, stdout carries only the JSON result; people read stderr.
        if not self.quiet:
            click.echo(text, err=self.json_mode)

    def watch(self, *executors: Executor) -> None:
        """Copy every command these executors run into the current step's log."""
        for executor in executors:
            if self._record not in executor.recorders:
                executor.recorders.append(self._record)

    def _record(self, result: Result) -> None:
        if self._buffer is not None:
            self._buffer.append(
                f"$ {result.shown}\n# exit {result.returncode} in {result.seconds:.2f}s\n"
                f"{result.output()}\n"
            )

    def note(self, text: str) -> None:
        if self._buffer is not None:
            self._buffer.append(text + "\n")

    def leave(self, lines: list[str], undo: str | None = None) -> None:
        self.left, self.undo = list(lines), undo

    def leave_as_read(self, read: Callable[[], tuple[list[str], str | None]]) -> None:
        """Record the state left as `read` finds it now on the hosts (commands: seconds). A
        signal meanwhile waits until it is recorded: an operator who stops a failed run
        while it looks still gets the state and the undo, not a bare INTERRUPTED."""
        with shielded(STATE_FIRST):
            self.leave(*read())

    def say_left(self) -> None:
        if self.left:
            self.say("STATE LEFT:")
            for line in self.left:
                self.say(f"  - {line}")
        if self.undo:
            self.say(f"TO UNDO: {self.undo}")

    # --- plan -----------------------------------------------------------------------------
    def show_plan(self) -> None:
        text = "\n".join(self.plan)
        self.say(text)
        if self.evidence:
            self.evidence.write("plan.txt", text)

    # --- steps ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        number = len(self.steps) + 1
        start = time.monotonic()
        ok, detail = False, ""
        self._buffer = []
        try:
            # Inside the try: a signal that lands while the line is printed still counts as
            # an interruption of this step.
            self.say(f"[{number}] {name} ...")
            yield
            ok = True
        except BaseException as exc:
            detail = str(exc) or type(exc).__name__
            raise
        finally:
            seconds = time.monotonic() - start
            self.steps.append(StepRecord(number, name, round(seconds, 3), ok, detail))
            lines = self._buffer or []
            self._buffer = None
            status = "ok" if ok else f"FAILED: {detail}"
            if self.evidence:
                header = f"step {number}: {name}\nstatus: {status}\nseconds: {seconds:.3f}\n\n"
                self.evidence.step_log(number, name, header + "".join(lines))
            self.say(f"    {'ok' if ok else 'FAILED'} ({seconds:.1f} s)")

    def step_seconds(self, name: str) -> float | None:
        return next((s.seconds for s in self.steps if s.name == name), None)

    # --- verification ---------------------------------------------------------------------
    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, bool(ok), detail))
        self.say(f"    {'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
        return bool(ok)

    @property
    def verified(self) -> bool:
        return all(c.ok for c in self.checks)

    # --- the end --------------------------------------------------------------------------
    def result(self) -> dict:
        return {
            "runbook": self.runbook,
            "outcome": self.outcome,
            "message": self.message,
            "started": self.started.isoformat(),
            "finished": datetime.now(UTC).isoformat(),
            "evidence": str(self.evidence.path) if self.evidence else None,
            "plan": self.plan,
            "steps": [asdict(s) for s in self.steps],
            "checks": [asdict(c) for c in self.checks],
            "facts": self.facts,
            "state_after": self.left,
            "undo": self.undo,
        }

    def finish(self, outcome: str, message: str = "") -> dict:
        self.outcome, self.message = outcome, message
        result = self.result()
        if self.evidence:
            self.evidence.write_json("result.json", result)
            self.evidence.write_json("verification.json", result["checks"])
            self.evidence.write("summary.md", summary_markdown(result))
        return result


def summary_markdown(result: dict) -> str:
    lines = [
        f"# {result['runbook']}: {result['outcome']}",
        "",
        result["message"] or "",
        "",
        f"- started: {result['started']}",
        f"- finished: {result['finished']}",
        "",
        "## Plan",
        "",
        "```",
        *result["plan"],
        "```",
        "",
        "## Steps",
        "",
        "| # | step | seconds | status |",
        "|---|------|---------|--------|",
    ]
    for s in result["steps"]:
        lines.append(
            f"| {s['number']} | {s['name']} | {s['seconds']:.2f} | "
            f"{'ok' if s['ok'] else 'FAILED'} |"
        )
    if result.get("state_after") or result.get("undo"):
        lines += ["", "## State left", ""]
        lines += [f"- {line}" for line in result.get("state_after") or []]
        if result.get("undo"):
            lines += ["", f"To undo: `{result['undo']}`"]
    lines += ["", "## Verification", ""]
    for c in result["checks"]:
        lines.append(f"- {'PASS' if c['ok'] else 'FAIL'} {c['name']}: {c['detail']}")
    if result["facts"]:
        lines += [
            "",
            "## Facts",
            "",
            "```json",
            json.dumps(result["facts"], indent=2, sort_keys=True, default=str),
            "```",
        ]
    return "\n".join(lines) + "\n"


def confirm(question: str, *, yes: bool, run: Run) -> bool:
    """The one confirmation helper of every destructive command: `--yes` skips it; anything
    but an explicit yes (including end of input) is a no."""
    if yes:
        run.say(f"{question} [y/N]: yes (--yes)")
        return True
    try:
        return click.confirm(question, default=False, err=True)
    except click.Abort:
        return False
