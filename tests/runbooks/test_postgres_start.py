"""Starting PostgreSQL's systemd unit (runbooks.services.PostgresSystemdService.start) returns
once the server takes connections, not when Debian's `pg_ctlcluster start` has finished
probing it (2 s or more): a real PostgreSQL behind a stubbed `systemctl` that starts it late
and then keeps "probing", as pg_ctlcluster does. Stopping it while the unit is still
"activating" asks PostgreSQL for its fast shutdown first (systemd's own would be a smart one,
which an open session holds off forever)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psycopg
import pytest

from runbooks.executor import CommandFailed, LocalExecutor
from runbooks.services import PostgresSystemdService
from sparkops import layout
from sparkops.wait import wait_until
from testkit.postgres import PgCluster

UNIT = layout.POSTGRES_SERVICE
PROBE_SECONDS = 3  # what the stub's start goes on for once the server answers

# `systemctl start` touches `asked`, waits (bounded) for `served` (the test has started the
# server, or wants the start to fail: `fail`), then "probes" PROBE_SECONDS and touches `done`.
# `is-active` says activating until then (failed once it failed); `journalctl` prints the
# unit's journal.
STUB = f"""#!/bin/sh
S=$(dirname "$0")
case "$1" in
  start)
    : > "$S/asked"
    i=0
    while [ ! -e "$S/served" ] && [ ! -e "$S/fail" ] && [ $i -lt 300 ]; do
      sleep 0.05; i=$((i+1))
    done
    [ -e "$S/fail" ] && {{ echo "Job for {UNIT} failed" >&2; : > "$S/failed"; exit 1; }}
    [ -e "$S/quick" ] || sleep {PROBE_SECONDS}
    : > "$S/done"
    ;;
  stop)
    pid=$(head -n 1 "$(cat "$S/datadir")/postmaster.pid" 2>/dev/null)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo running; else echo gone; fi \
      > "$S/stopped"
    ;;
  is-active)
    if [ -e "$S/active" ]; then echo active; exit 0; fi
    if [ -e "$S/failed" ]; then echo failed; exit 3; fi
    if [ -e "$S/done" ]; then echo active; else echo activating; exit 3; fi
    ;;
esac
"""
JOURNAL = '#!/bin/sh\necho "FATAL:  could not locate a valid checkpoint record"\n'


@pytest.fixture()
def stubs(tmp_path, monkeypatch) -> Path:
    for name, text in (("systemctl", STUB), ("journalctl", JOURNAL)):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    yield tmp_path
    # The stub's start must not outlive the test: release it and wait for its end.
    (tmp_path / "fail").touch()
    if (tmp_path / "asked").exists():
        ended = lambda: (tmp_path / "done").exists() or (tmp_path / "failed").exists()  # noqa: E731
        wait_until(ended, timeout=PROBE_SECONDS + 10, what="the stub's end")


@pytest.fixture()
def cluster():
    pg = PgCluster().init()
    try:
        yield pg
    finally:
        pg.remove()


def _service(pg: PgCluster, timeout: float = 60.0) -> PostgresSystemdService:
    return PostgresSystemdService(
        LocalExecutor(), (UNIT,), timeout=timeout,
        socket_dir=str(pg.workdir / "sock"), port=pg.port,
    )  # fmt: skip


def _serve_when_asked(stubs: Path, pg: PgCluster) -> threading.Thread:
    def serve() -> None:
        wait_until((stubs / "asked").exists, timeout=30, what="systemctl start")
        pg.start()
        (stubs / "served").touch()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_the_start_returns_once_the_server_answers_not_when_the_unit_has_started(stubs, cluster):
    service = _service(cluster)
    serving = _serve_when_asked(stubs, cluster)
    service.start()
    returned = time.monotonic()
    serving.join(timeout=30)
    assert (stubs / "served").exists()
    assert not (stubs / "done").exists(), "start() waited for systemctl start to finish"
    assert cluster.psql("SELECT 1").strip() == "1"
    # Meanwhile the unit is "activating", which is not "stopped" to a runbook.
    assert service.is_active()
    wait_until((stubs / "done").exists, timeout=PROBE_SECONDS + 10, what="stub's end")
    assert time.monotonic() - returned > PROBE_SECONDS / 2
    assert service.is_active()


def test_a_start_that_fails_before_the_server_answers_fails_with_the_units_journal(stubs):
    (stubs / "fail").touch()
    service = PostgresSystemdService(LocalExecutor(), (UNIT,), socket_dir=str(stubs), port=1)
    with pytest.raises(CommandFailed) as failed:
        service.start()
    assert "systemctl start" in str(failed.value) and "failed" in str(failed.value)
    assert "could not locate a valid checkpoint record" in str(failed.value)
    assert not service.is_active()


def test_a_unit_started_while_the_server_still_recovers_is_a_started_unit(stubs):
    # pg_ctl's wait can end before a long recovery lets anyone in; the unit is then active
    # (Debian ignores pg_ctlcluster's exit) and the runbook's own wait takes over.
    (stubs / "quick").touch()
    (stubs / "served").touch()  # no server at all: pg_isready never answers
    PostgresSystemdService(LocalExecutor(), (UNIT,), socket_dir=str(stubs), port=1).start()
    assert (stubs / "done").exists()


def test_the_wait_is_bounded_by_the_services_timeout(stubs):
    service = PostgresSystemdService(
        LocalExecutor(), (UNIT,), timeout=1.0, socket_dir=str(stubs), port=1
    )
    began = time.monotonic()
    with pytest.raises(CommandFailed, match="took no connections in time"):
        service.start()
    assert time.monotonic() - began < 8


def _with_a_session(pg: PgCluster):
    """An open session, as pgBouncer's server connection: a smart shutdown waits for it."""
    return psycopg.connect(pg.superuser_conninfo(), autocommit=True)


def test_stopping_a_unit_still_starting_is_a_fast_shutdown_then_systemctl_stop(stubs, cluster):
    cluster.start()
    (stubs / "datadir").write_text(str(cluster.datadir))
    service = PostgresSystemdService(
        LocalExecutor(), (UNIT,), timeout=30.0, socket_dir=str(cluster.workdir / "sock"),
        port=cluster.port, data_dir=str(cluster.datadir),
    )  # fmt: skip
    assert service.is_active()  # the stub's unit is "activating"
    session = _with_a_session(cluster)
    try:
        service.stop()
    finally:
        session.close()
    assert cluster.pid() is None and not cluster.is_running()
    # systemctl stop came after the server had gone: nothing left for systemd's SIGTERM.
    assert (stubs / "stopped").read_text().strip() == "gone"


def test_stopping_a_started_unit_is_systemctl_stop_alone(stubs, cluster):
    cluster.start()
    (stubs / "datadir").write_text(str(cluster.datadir))
    (stubs / "active").touch()
    service = PostgresSystemdService(
        LocalExecutor(), (UNIT,), socket_dir=str(cluster.workdir / "sock"), port=cluster.port,
        data_dir=str(cluster.datadir),
    )  # fmt: skip
    service.stop()
    # Debian's ExecStop (a fast shutdown) is systemd's to run; the stub runs nothing.
    assert (stubs / "stopped").read_text().strip() == "running"
    assert cluster.is_running()
