"""Zero downtime on one host: the listening socket outlives the app's restarts.

On an app host `spark-app.socket` holds the socket and `spark-app.service` runs uvicorn on
it (fd 3). This machine has no systemd as PID 1, so testkit.socketsup does what systemd does
(binds the socket, passes it as fd 3 with LISTEN_FDS/LISTEN_PID, restarts the process) and
the real app (uvicorn, the real database through pgBouncer) runs on it. Steady traffic, a new
connection per request, runs through restarts and a rollback: none may fail (no connection
refused or reset, no 5xx, no timeout). The same restarts of an app that binds the port itself
(testkit.localapp, as the unit did before) refuse connections: what the test would catch.
"""

from __future__ import annotations

import threading
import time

import httpx
import psycopg
import pytest

from runbooks import releases, rollback
from runbooks.checklist import Run
from sparkops.wait import wait_until
from testkit import localapp, socketsup, traffic
from tests.conftest import AUTH, connect_app, create_account

RESTARTS = 10
RATE = 80.0
ORDER = {"account_id": "zdt-inflight", "symbol": "BTCUSDT", "side": "buy", "quantity": "0.001",
         "price": "65000.00"}  # fmt: skip


def probes(i: int) -> traffic.Request:
    return traffic.Request("GET", "/readyz" if i % 2 else "/version")


@pytest.fixture
def socket_app(db_stack, tmp_path):
    app = socketsup.app_target(db_stack, tmp_path)
    root = tmp_path / "spark-app"
    localapp.install(root, "A", age=100)
    localapp.install(root, "B", age=50)
    localapp.start_on(app, "A")
    yield root, app
    app.service.close()


def restarts_under_traffic(app, count: int) -> list[traffic.Outcome]:
    load = traffic.Traffic(app.base_url, probes, rate=RATE, max_seconds=120).start()
    try:
        for n in range(count):
            app.service.restart()
            ok, detail = releases.healthy(app, "A", timeout=30)
            assert ok, f"restart {n + 1}: {detail}\n{app.service.log_tail()}"
    finally:
        outcomes = load.stop()
    return outcomes


def test_restarts_on_a_held_socket_drop_no_request(socket_app):
    _root, app = socket_app
    outcomes = restarts_under_traffic(app, RESTARTS)
    assert len(outcomes) >= 40, f"too little traffic to tell: {len(outcomes)} requests"
    failed = traffic.failures(outcomes)
    assert failed == [], f"{len(failed)} of {len(outcomes)} failed, first: {failed[:3]}"


def test_rollback_on_a_held_socket_drops_no_request(socket_app):
    _root, app = socket_app
    releases.switch(app, "B")
    app.service.restart()
    assert releases.healthy(app, "B", timeout=30)[0]
    load = traffic.Traffic(app.base_url, probes, rate=RATE, max_seconds=120).start()
    try:
        plan = rollback.prepare(app, None, force=False, gate_timeout=30)
        run = Run("rollback")
        assert rollback.execute(plan, run) is True
    finally:
        outcomes = load.stop()
    assert releases.current_release(app) == "A"
    assert httpx.get(f"{app.base_url}/version", timeout=5).json()["release"] == "A"
    failed = traffic.failures(outcomes)
    assert outcomes and failed == [], f"{len(failed)} of {len(outcomes)} failed: {failed[:3]}"


def test_a_request_in_flight_finishes_before_the_old_process_exits(socket_app, db_stack):
    """SIGTERM (a restart) lets a request the old process is serving finish: the order
    waits on a lock held here, the restart begins, the lock goes, the order is placed."""
    _root, app = socket_app
    with connect_app(db_stack) as conn:
        conn.execute("DELETE FROM orders WHERE account_id = 'zdt-inflight'")
        conn.execute("DELETE FROM positions WHERE account_id = 'zdt-inflight'")
        conn.execute("DELETE FROM api_key_accounts WHERE account_id = 'zdt-inflight'")
        conn.execute("DELETE FROM accounts WHERE id = 'zdt-inflight'")
        create_account(conn, "zdt-inflight")
    old_pid = app.service.pid()
    answer: dict = {}

    def place() -> None:
        answer["response"] = httpx.post(
            f"{app.base_url}/orders",
            json=ORDER,
            headers={**AUTH, "Idempotency-Key": f"zdt-{time.time_ns()}"},
            timeout=30,
        )

    locker = psycopg.connect(db_stack.owner_conninfo(), autocommit=False)
    restarter = threading.Thread(target=app.service.restart)
    try:
        locker.execute("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        client = threading.Thread(target=place)
        client.start()
        wait_until(lambda: "response" in answer or _waiting_on_lock(db_stack), timeout=15,
                   what="the order to wait on the lock")  # fmt: skip
        assert "response" not in answer, f"answered at once: {answer['response'].text}"
        restarter.start()
        # The old process has its SIGTERM and is draining: still alive, the order unanswered.
        wait_until(lambda: "Shutting down" in app.service.log_tail(), timeout=15,
                   what="the old process to begin its graceful shutdown")  # fmt: skip
        assert "response" not in answer
    finally:
        locker.rollback()
        locker.close()
    client.join(timeout=30)
    restarter.join(timeout=30)
    assert answer["response"].status_code == 201, answer["response"].text
    assert app.service.pid() != old_pid
    assert releases.healthy(app, "A", timeout=30)[0]


def _waiting_on_lock(db_stack) -> bool:
    # pg_locks: every role sees every lock (pg_stat_activity hides other roles' waits).
    with psycopg.connect(db_stack.owner_conninfo(), autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0] > 0


def test_restarts_of_an_app_bound_to_its_own_port_refuse_connections(db_stack, tmp_path):
    """The control: what the app did before socket activation (it bound the port itself)."""
    _spec, app = localapp.app_target(db_stack, tmp_path)
    root = tmp_path / "spark-app"
    localapp.install(root, "A", age=100)
    localapp.start_on(app, "A")
    try:
        outcomes = restarts_under_traffic(app, 2)
    finally:
        app.service.stop()
    assert traffic.failures(outcomes), "restarts without a held socket dropped nothing?"
