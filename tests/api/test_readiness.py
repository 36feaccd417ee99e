"""Readiness as the load balancer and Prometheus see it: /readyz and the `spark_app_ready`
gauge follow the database through pgBouncer, a 503 carries Retry-After, and a PAUSEd
pgBouncer (a query that hangs) makes the app answer "not ready" within the check's deadline
instead of hanging, and ready again after RESUME."""

from __future__ import annotations

import time

import httpx
import pytest

from app.config import Settings
from sparkops import defaults, metric_names
from sparkops.wait import wait_until
from testkit.appserver import AppServer
from testkit.stack import DbStack
from tests.api.test_security_headers import assert_secure, metric_value

RETRY_AFTER = str(defaults.DB_UNAVAILABLE_RETRY_AFTER_SECONDS)


@pytest.fixture(scope="module")
def own_stack():
    """A stack of its own: a PAUSE on its pgBouncer stalls no other test."""
    stack = DbStack().start()
    try:
        yield stack
    finally:
        stack.stop()


def test_a_ready_app_says_so_in_readyz_and_in_the_gauge(app_server):
    ready = httpx.get(f"{app_server.url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert "retry-after" not in ready.headers
    assert metric_value(app_server, metric_names.APP_READY) == 1


def test_unreachable_database_answers_503_with_retry_after_and_the_gauge_reads_0(db_stack, caplog):
    dead = Settings(
        database_url=db_stack.app_conninfo().replace(f"port={db_stack.bouncer.port}", "port=9"),
        release_id="r-dead",
        db_timeout_s=1.5,
    )
    with AppServer(dead) as server:
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.headers["retry-after"] == RETRY_AFTER
        # The public answer is generic; the reason (hosts, ports, server errors) is logged.
        assert ready.json() == {"status": "unavailable", "reason": "not ready"}
        logged = [r.getMessage() for r in caplog.records if r.name == "spark.readiness"]
        assert any("not ready: database through pgBouncer" in m for m in logged), logged
        assert_secure(ready)
        # A scrape runs the same check: Prometheus sees what /readyz would answer.
        assert metric_value(server, metric_names.APP_READY) == 0


def test_paused_pgbouncer_is_not_ready_within_the_deadline_then_ready_after_resume(
    own_stack, caplog
):
    settings = Settings(database_url=own_stack.app_conninfo(), release_id="r-paused")
    with AppServer(settings) as server:
        url = f"{server.url}/readyz"
        assert httpx.get(url, timeout=10).status_code == 200
        assert metric_value(server, metric_names.APP_READY) == 1
        own_stack.bouncer.admin("PAUSE")
        try:
            started = time.monotonic()
            paused = httpx.get(url, timeout=30)
            took = time.monotonic() - started
            assert paused.status_code == 503, paused.text
            assert paused.headers["retry-after"] == RETRY_AFTER
            assert paused.json()["reason"] == "not ready"
            assert "no answer within" not in paused.text
            assert any("no answer within" in r.getMessage() for r in caplog.records
                       if r.name == "spark.readiness")  # fmt: skip
            # Bounded by the check's deadline (plus a loaded machine's slack), not by
            # pgBouncer's query_wait_timeout (30 s here, 120 s by default).
            assert took < defaults.READY_CHECK_TIMEOUT_SECONDS + 5, took
            started = time.monotonic()
            assert metric_value(server, metric_names.APP_READY) == 0
            assert time.monotonic() - started < defaults.READY_CHECK_TIMEOUT_SECONDS + 5
        finally:
            own_stack.bouncer.admin("RESUME")
        wait_until(
            lambda: httpx.get(url, timeout=10).status_code == 200,
            timeout=30,
            what="/readyz to answer 200 after RESUME",
        )
        assert any(r.getMessage().startswith("ready again") for r in caplog.records
                   if r.name == "spark.readiness")  # fmt: skip
        assert metric_value(server, metric_names.APP_READY) == 1
