"""Restore, drill and rollback on the lab, interrupted at each step: SIGTERM to the runbook,
and its SSH connection dropped (the `ssh` it waits on, killed mid-command).

After every interruption: pgBouncer on the db host is not paused; the database runs, or the
command the runbook printed last brings it back; the app answers /readyz; running the same
command again completes; no committed order is lost. The table of what happened is printed
at the end of the session (tests/interruptions.py).
"""

from __future__ import annotations

import shlex
import subprocess
import time

import pytest

from lab import ssh
from runbooks.checklist import EXIT_FAILED, EXIT_INTERRUPTED
from sparkops import defaults
from sparkops.wait import wait_until
from tests.interruptions import (
    DRILL_STEPS,
    HOW,
    RESTORE_STEPS,
    ROLLBACK_STEPS,
    SPARKOPS,
    TABLE,
    interrupt,
)
from tests.lab.stack import ROOT, activate_copy, by_group, on_host, orders, ready, snapshot, version

pytestmark = [pytest.mark.lab, pytest.mark.slow]

# The core: the steps where a lost connection or a signal matters most (PAUSE, the restore
# itself, the drill's copy, the app's restart), unmarked, so `-m "not interruptions"` keeps a
# quick subset. Every step of each runbook, both ways, carries the marker `interruptions`
# (about 7.5 minutes on the lab); `make test` runs them all, `make test-interruptions` them
# alone. Every step by SIGTERM also runs locally in tests/runbooks/test_interruptions.py.
CORE = {
    ("restore", 1, "ssh dropped"),
    ("restore", 4, "SIGTERM"),
    ("restore", 4, "ssh dropped"),
    ("drill", 3, "ssh dropped"),
    ("rollback", 2, "ssh dropped"),
}


def cases(runbook: str, steps: int) -> list:
    return [
        pytest.param(step, how, marks=() if (runbook, step, how) in CORE else INTERRUPTIONS)
        for step in range(1, steps + 1)
        for how in HOW
    ]


INTERRUPTIONS = pytest.mark.interruptions


def _paused(db) -> bool:
    status = subprocess.run([SPARKOPS, "pgbouncer", "status", "--host", db["name"]],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert status.returncode in (0, 1), status.stdout + status.stderr
    return status.returncode == 1


def _db_up(db) -> bool:
    probe = ssh.run(db["ip"], "runuser -u postgres -- psql -XAtqc 'SELECT NOT pg_is_in_recovery()'",
                    timeout=60)  # fmt: skip
    return probe.returncode == 0 and probe.stdout.strip() == "t"


def _run_undo(outcome) -> str:
    command = (outcome.result or {}).get("undo")
    assert command, f"the database is down and no undo was printed:\n{outcome.stderr[-3000:]}"
    argv = shlex.split(command)
    assert argv[0] == "sparkops", command  # the lab's undo is a sparkops command
    proc = subprocess.run([SPARKOPS, *argv[1:]], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return command


def _judge(outcome) -> None:
    """What the runbook itself says: an interruption ends as interrupted (SIGTERM) or failed
    (a dropped connection is a failed command), with the state as its last lines."""
    if not outcome.acted or outcome.exit_code == 0:
        return
    expected = EXIT_INTERRUPTED if outcome.how == "SIGTERM" else EXIT_FAILED
    assert outcome.exit_code in (expected, EXIT_INTERRUPTED), outcome.stderr[-3000:]
    assert "STATE LEFT:" in outcome.stderr.rsplit("evidence:", 1)[-1], outcome.stderr[-3000:]


def _settled(db, app, outcome) -> str:
    """pgBouncer resumed, the database up (by the printed undo if need be), the app ready."""
    assert not _paused(db), outcome.stderr[-3000:]
    recovered = "nothing needed"
    if not _db_up(db):
        recovered = _run_undo(outcome)
    wait_until(lambda: _db_up(db), timeout=120, what="the database to run as a primary")
    wait_until(lambda: ready(app), timeout=60, what="the app to be ready")
    return recovered


@pytest.mark.parametrize(("step", "how"), cases("restore", RESTORE_STEPS))
def test_restore_interrupted_on_the_lab(deployed, step, how):
    db, app = by_group(deployed["hosts"], "db"), by_group(deployed["hosts"], "app")
    orders(app, 2)
    before = snapshot(db)
    words = ["restore", "--host", db["name"], "--latest", "--yes"]
    started = time.monotonic()
    outcome = interrupt("restore (in place)", words, step, how)
    _judge(outcome)
    outcome.recovered_by = _settled(db, app, outcome)
    outcome.state = "; ".join((outcome.result or {}).get("state_after", [])) or "done"
    outcome.state += f" ({time.monotonic() - started:.0f} s)"
    TABLE.add(outcome)
    again = subprocess.run([SPARKOPS, *words], capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert snapshot(db) == before
    assert orders(app, 1)


@pytest.mark.parametrize(("step", "how"), cases("drill", DRILL_STEPS))
def test_drill_interrupted_on_the_lab(deployed, step, how):
    db = by_group(deployed["hosts"], "db")
    pid = on_host(db, "head -n 1 /var/lib/postgresql/15/main/postmaster.pid").strip()
    words = ["drill", "--host", db["name"], "--yes"]
    outcome = interrupt("drill", words, step, how)
    _judge(outcome)
    # Production: the same postmaster; the copy: gone, and no server on its port.
    assert on_host(db, "head -n 1 /var/lib/postgresql/15/main/postmaster.pid").strip() == pid
    left = on_host(db, "ls -A /var/lib/postgresql/15/drill 2>/dev/null | head -n 3; "
                    f"ss -Hltn 'sport = :{defaults.POSTGRES_PORT + 2}'")  # fmt: skip
    assert left.strip() == "", left
    outcome.state = "; ".join((outcome.result or {}).get("state_after", [])) or "done"
    outcome.recovered_by = "nothing needed"
    TABLE.add(outcome)
    again = subprocess.run([SPARKOPS, *words], capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.fixture
def two_releases(deployed):
    app = by_group(deployed["hosts"], "app")
    a, b = deployed["release"], "interrupt-release-b"
    activate_copy(app, a, b)
    assert version(app) == b
    yield app, a, b
    subprocess.run([SPARKOPS, "rollback", "--host", app["name"], "--to", a, "--force", "--yes"],
                   capture_output=True, timeout=300)  # fmt: skip
    on_host(app, f"rm -rf {ROOT}/releases/{b}")
    assert version(app) == a


@pytest.mark.parametrize(("step", "how"), cases("rollback", ROLLBACK_STEPS))
def test_rollback_interrupted_on_the_lab(two_releases, step, how):
    app, a, b = two_releases
    words = ["rollback", "--host", app["name"], "--to", a, "--yes", "--gate-timeout", "60"]
    outcome = interrupt("rollback", words, step, how)
    _judge(outcome)
    current = on_host(app, f"readlink {ROOT}/current").strip().rsplit("/", 1)[-1]
    wait_until(lambda: ready(app), timeout=60, what="the app to be ready")
    live = version(app)
    # Never on a release that has not passed its gate.
    assert current == live, (current, live, outcome.stderr[-3000:])
    if outcome.exit_code == EXIT_INTERRUPTED:
        assert current == b, outcome.stderr[-3000:]
    outcome.state = f"current -> {current}, serving {live}"
    outcome.recovered_by = "nothing needed" if current in (a, b) else "?"
    TABLE.add(outcome)
    if current == b:
        again = subprocess.run([SPARKOPS, *words], capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
    assert version(app) == a
    on_host(app, f"/usr/local/sbin/spark-app-activate {b}", timeout=180)  # back to B for the next
