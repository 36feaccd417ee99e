"""The state a run leaves is said even when a signal lands while it is being read (pure logic:
the reading is a stand-in; tests/runbooks/test_cluster_plan does the same for the cluster
runbooks, tests/runbooks/test_interruptions the whole runbooks on real programs)."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import pytest

from runbooks import restoring
from runbooks.checklist import STATE_FIRST, Interrupted, Run, StepFailed, interruptible


def _signal_then(lines: list[str], undo: str | None):
    def read(*_args):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # the operator insists: reported, not raised
        return lines, undo

    return read


def test_a_signal_while_the_state_is_read_waits_until_it_is_recorded():
    run, told = Run("restore", quiet=True), []
    read = _signal_then(["pgBouncer on db: PAUSED"], "sparkops pgbouncer resume --host db")
    with interruptible(told.append), pytest.raises(Interrupted) as raised:
        run.leave_as_read(read)
    assert raised.value.signal == "SIGTERM"
    assert run.left == ["pgBouncer on db: PAUSED"]
    assert run.undo == "sparkops pgbouncer resume --host db"
    assert told == [f"SIGTERM received: {STATE_FIRST}", f"SIGINT received: {STATE_FIRST}"]


def test_without_a_signal_the_state_is_recorded_and_nothing_is_raised():
    run, told = Run("restore", quiet=True), []
    with interruptible(told.append):
        run.leave_as_read(lambda: (["PostgreSQL on db: running"], None))
    assert run.left == ["PostgreSQL on db: running"] and run.undo is None and told == []


def test_a_restore_whose_verification_fails_says_its_state_though_interrupted_meanwhile(
    monkeypatch,
):
    """Restored, then the verification fails; the operator stops the run while it reads the
    hosts' state: the state is still recorded (it used to be lost with the interruption)."""
    monkeypatch.setattr(restoring, "_restore", lambda plan, run, progress: None)

    def verify(plan, run):
        raise StepFailed("amcheck found a corrupt index")

    monkeypatch.setattr(restoring, "verify", verify)
    lines = ["PostgreSQL on db: restored; recovery has ended, it serves, unverified"]
    monkeypatch.setattr(restoring, "state_after", _signal_then(lines, None))
    host = SimpleNamespace(executor=SimpleNamespace(recorders=[]))
    plan = SimpleNamespace(source=host, dest=host)
    run, told = Run("restore", quiet=True), []
    with interruptible(told.append), pytest.raises(Interrupted):
        restoring.execute(plan, run)
    assert run.left == lines
    assert told[0] == f"SIGTERM received: {STATE_FIRST}"
