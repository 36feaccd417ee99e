"""Interrupting a runbook at a chosen step, as an operator or a network would: SIGTERM to the
runbook's process, or its SSH connection cut (the `ssh` child it is waiting on, killed).

The runbook runs as a real `sparkops` process; its step lines ("[N] name ...", on stderr
with --json) say when step N has begun. What it reports afterwards (exit code, the JSON
result with its steps, state_after and undo) is returned for the test to judge, and one row
per interruption is kept for the table printed at the end of the session
(tests/conftest.py: pytest_terminal_summary).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sparkops.wait import DeadlineExceeded, wait_until

SPARKOPS = str(Path(sys.executable).with_name("sparkops"))
HOW = ("SIGTERM", "ssh dropped")
# The runbooks' steps, in order (a server that answers: recovery ends by a promotion request).
RESTORE_STEPS = 10  # pause, archive, stop, restore, start, request promotion, wait, resume,
#                     checkpoint, verify
DRILL_STEPS = 9  # archive, create, restore, start, request promotion, wait, verify,
#                  invariants, tear down
ROLLBACK_STEPS = 3  # switch, restart, health gate


@dataclass
class Outcome:
    runbook: str
    how: str
    wanted: int  # the step number the interruption was aimed at
    exit_code: int
    result: dict | None
    stderr: str
    acted: bool  # the signal was sent / an ssh child was found and killed
    recovered_by: str = ""
    state: str = ""

    @property
    def interrupted_step(self) -> str:
        steps = (self.result or {}).get("steps", [])
        failed = [s["name"] for s in steps if not s["ok"]]
        if failed:
            return failed[0]
        return f"after step {len(steps)} ({steps[-1]['name']})" if steps else "before any step"

    def last_lines(self, n: int = 6) -> list[str]:
        return self.stderr.rstrip().splitlines()[-n:]


@dataclass
class Table:
    rows: list[tuple[str, ...]] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.rows.append(
            (
                outcome.runbook,
                outcome.how,
                f"[{outcome.wanted}] {outcome.interrupted_step}",
                str(outcome.exit_code),
                outcome.state,
                outcome.recovered_by,
            )
        )

    def render(self) -> str:
        header = ("runbook", "interrupted by", "step interrupted", "exit", "state after",
                  "recovered by")  # fmt: skip
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)


TABLE = Table()


def _processes() -> dict[int, tuple[int, str, str]]:
    """Every process now: pid -> (parent pid, comm, command line)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # ended meanwhile
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        found[int(entry)] = (ppid, comm, cmdline)
    return found


def _ssh_children(pid: int) -> list[int]:
    return [
        child for child, (ppid, comm, _) in _processes().items() if ppid == pid and comm == "ssh"
    ]


def _descendant_running(pid: int, words: tuple[str, ...]) -> bool:
    """Whether a process below `pid` (any depth) has every one of `words` in its command
    line: the child a step waits on, seen alive."""
    processes = _processes()
    for ppid, _, cmdline in processes.values():
        if not all(word in cmdline for word in words):
            continue
        ancestor = ppid
        while ancestor and ancestor != pid and ancestor in processes:
            ancestor = processes[ancestor][0]
        if ancestor == pid:
            return True
    return False


def interrupt(
    runbook: str,
    args: list[str],
    step: int,
    how: str,
    *,
    timeout: float = 600,
    env: dict | None = None,
    child: tuple[str, ...] = (),
) -> Outcome:
    """Run `sparkops <args> --json` and interrupt it when step `step` begins; with `child`
    (SIGTERM only), once that step has begun and a process it started with those words in
    its command line runs (the signal lands while the step waits on it, not as its header
    prints). No such process within 30 s: nothing is sent (`acted` False)."""
    assert how in HOW
    assert not child or how == "SIGTERM"
    proc = subprocess.Popen(
        [SPARKOPS, *args, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    lines: list[str] = []
    begun = threading.Event()
    marker = re.compile(rf"^\[{step}\] ")

    def read_stderr() -> None:
        for line in proc.stderr:
            lines.append(line)
            if marker.match(line):
                begun.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    acted = False
    deadline = time.monotonic() + timeout
    while not begun.is_set() and proc.poll() is None and time.monotonic() < deadline:
        begun.wait(0.02)
    if begun.is_set() and proc.poll() is None and child:
        try:
            wait_until(lambda: _descendant_running(proc.pid, child) or proc.poll() is not None,
                       timeout=30, what=f"a child running {' '.join(child)}",
                       interval=0.01)  # fmt: skip
        except DeadlineExceeded:
            pass
        if not _descendant_running(proc.pid, child):
            begun.clear()  # it never ran, or has already ended: not the moment asked for
    if begun.is_set() and proc.poll() is None:
        if how == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
            acted = True
        else:
            try:
                victims = wait_until(lambda: _ssh_children(proc.pid) or proc.poll() is not None,
                                     timeout=30, what="an ssh child", interval=0.01)  # fmt: skip
            except DeadlineExceeded:
                victims = True
            if isinstance(victims, list):
                for pid in victims:
                    try:
                        os.kill(pid, signal.SIGKILL)  # the connection drops mid-command
                        acted = True
                    except ProcessLookupError:
                        pass
    out: list[str] = []
    # stdout by its own reader: communicate() would also read stderr, which `reader` owns.
    writer = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    writer.start()
    try:
        proc.wait(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(
            f"{runbook} did not end in {timeout} s after the interruption"
        ) from None
    writer.join(timeout=10)
    stdout = "".join(out)
    reader.join(timeout=10)
    try:
        result = json.loads(stdout) if stdout.strip() else None
    except ValueError:
        result = None
    return Outcome(runbook, how, step, proc.returncode, result, "".join(lines), acted)


def steps_of(args: list[str], *, env: dict | None = None, timeout: float = 600) -> list[str]:
    """The step names a run of `args` goes through (a complete run, not interrupted)."""
    proc = subprocess.run(
        [SPARKOPS, *args, "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [s["name"] for s in json.loads(proc.stdout)["steps"]]
