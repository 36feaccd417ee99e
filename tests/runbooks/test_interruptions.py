"""Restore, drill and rollback interrupted by SIGTERM at each of their steps, on a real
PostgreSQL + pgBackRest + pgBouncer and the real app (the lab repeats this over SSH, with
dropped connections too: tests/lab/test_interruptions_lab.py).

After every interruption: the runbook exits 4 and its last lines say the state it left;
pgBouncer is not paused; the database runs, or the printed command brings it back; running
the same command again completes; nothing committed is lost.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

import httpx
import pytest

from runbooks import bouncer, releases
from runbooks.checklist import EXIT_INTERRUPTED
from sparkops.wait import wait_until
from testkit import localapp
from testkit.proc import make_workdir
from tests.interruptions import (
    DRILL_STEPS,
    RESTORE_STEPS,
    ROLLBACK_STEPS,
    SPARKOPS,
    TABLE,
    interrupt,
)
from tests.runbooks.conftest import ensure_account, snapshot, write_orders


def _undo(outcome) -> str:
    command = (outcome.result or {}).get("undo")
    assert command, f"no undo command although the database is down:\n{outcome.stderr}"
    argv = shlex.split(command)
    if argv[0] == "sparkops":
        argv[0] = SPARKOPS
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return command


def _judge(outcome) -> None:
    if outcome.acted and outcome.exit_code != 0:
        assert outcome.exit_code == EXIT_INTERRUPTED, outcome.stderr[-3000:]
        # The last lines, after the outcome, say the state left (and the undo when needed).
        tail = outcome.stderr.rsplit("INTERRUPTED", 1)[-1]
        assert "STATE LEFT:" in tail, outcome.stderr[-3000:]
        if outcome.result.get("undo"):
            assert outcome.last_lines(1)[0].startswith("TO UNDO: sparkops ")
        assert outcome.result["outcome"] == "interrupted"


@pytest.mark.parametrize("step", range(1, RESTORE_STEPS + 1))
def test_restore_interrupted(backed_db, ledger_app, target_file, step):
    account = ensure_account(backed_db)
    write_orders(ledger_app, account, 2)
    before = snapshot(backed_db)
    words = ["restore", "--target-file", str(target_file), "--latest", "--yes"]
    outcome = interrupt("restore (in place)", words, step, "SIGTERM")
    _judge(outcome)
    assert not bouncer.is_paused(backed_db.target), outcome.stderr[-2000:]
    recovered = "nothing needed"
    if not backed_db.target.is_up():
        recovered = _undo(outcome)
        assert backed_db.target.is_up()
    # Never left read-only: a restored server waiting for its promotion request gets it from
    # the cleanup when the run did not send it.
    wait_until(lambda: backed_db.target.role() == "primary", timeout=120, what="a primary")
    outcome.state = "; ".join((outcome.result or {}).get("state_after", [])) or "done"
    outcome.recovered_by = recovered.replace(str(target_file), "T")
    TABLE.add(outcome)
    again = subprocess.run([SPARKOPS, *words], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert snapshot(backed_db) == before
    assert len(write_orders(ledger_app, account, 1)) == 1


@pytest.mark.parametrize("step", range(1, DRILL_STEPS + 1))
def test_drill_interrupted(backed_db, ledger_app, target_file, tmp_path, step):
    ensure_account(backed_db)
    pid_before = backed_db.stack.pg.pid()
    scratch = make_workdir("drill-interrupted") / "drill"
    words = ["drill", "--target-file", str(target_file), "--scratch-dir", f"{scratch}/data",
            "--scratch-port", "0", "--yes", "--metrics-file", str(tmp_path / "m.prom")]  # fmt: skip
    outcome = interrupt("drill", words, step, "SIGTERM")
    _judge(outcome)
    assert backed_db.stack.pg.pid() == pid_before  # production: the same postmaster
    assert not scratch.exists() or os.listdir(scratch) == [], os.listdir(scratch)
    outcome.state = "; ".join((outcome.result or {}).get("state_after", [])) or "done"
    outcome.recovered_by = "nothing needed"
    TABLE.add(outcome)
    again = subprocess.run([SPARKOPS, *words], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    shutil.rmtree(scratch.parent)  # this test's own directory


@pytest.fixture
def app_root(backed_db, tmp_path):
    spec, app = localapp.app_target(backed_db.stack, tmp_path)
    yield spec.parent / "spark-app", spec, app
    app.service.stop()


@pytest.mark.parametrize("step", range(1, ROLLBACK_STEPS + 1))
def test_rollback_interrupted(app_root, step):
    root, spec, app = app_root
    localapp.install(root, "A", age=100)
    localapp.install(root, "B", age=50)
    localapp.start_on(app, "B")
    words = ["rollback", "--target-file", str(spec), "--yes", "--gate-timeout", "30"]
    outcome = interrupt("rollback", words, step, "SIGTERM")
    _judge(outcome)
    current = releases.current_release(app)
    live = httpx.get(f"{app.base_url}/version", timeout=5).json()["release"]
    ready = httpx.get(f"{app.base_url}/readyz", timeout=5).status_code
    # Never on a release that has not passed its gate: back on B, or on A having passed it.
    assert current == live and ready == 200, (current, live, ready, outcome.stderr[-2000:])
    if outcome.exit_code == EXIT_INTERRUPTED:
        assert current == "B", outcome.stderr[-2000:]
    outcome.state = f"current -> {current}, serving {live}, /readyz {ready}"
    outcome.recovered_by = "nothing needed (switched back by its cleanup)"
    TABLE.add(outcome)
    again = subprocess.run([SPARKOPS, *words], capture_output=True, text=True, timeout=600)
    expected = 0 if current == "B" else 2  # from A there is no older release: refused
    assert again.returncode == expected, again.stderr[-3000:]
