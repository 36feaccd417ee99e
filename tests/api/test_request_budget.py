"""The request budget (Settings.request_timeout_s): a request whose database work hangs (a
PAUSEd pgBouncer holds every query) is answered 503 + Retry-After when the budget runs out,
not when pgBouncer's query_wait_timeout does; the same order retried with its
Idempotency-Key after RESUME is placed exactly once."""

from __future__ import annotations

import time

import httpx
import pytest

from app.config import Settings
from sparkops import defaults
from sparkops.wait import wait_until
from testkit.appserver import AppServer
from testkit.stack import DbStack
from tests.conftest import AUTH, TEST_KEY_ID, connect_app, create_account

BUDGET_S = 1.5
ORDER = {"account_id": "acct-budget", "symbol": "BTCUSDT", "side": "buy",
         "quantity": "0.01000", "price": "65000.00"}  # fmt: skip


@pytest.fixture(scope="module")
def own_stack():
    """A stack of its own: a PAUSE on its pgBouncer stalls no other test."""
    with DbStack() as stack:
        with connect_app(stack) as conn:
            create_account(conn, ORDER["account_id"])
        yield stack


def test_a_hung_database_is_answered_503_within_the_budget_and_the_retry_places_once(
    own_stack,
):
    # A claim that lands after all (the cancel lost the race) is taken over after 5 s.
    settings = Settings(database_url=own_stack.app_conninfo(), release_id="r-budget",
                        db_timeout_s=5, request_timeout_s=BUDGET_S,
                        idempotency_in_flight_timeout_s=5)  # fmt: skip
    headers = {**AUTH, "idempotency-key": "budget-1"}
    with AppServer(settings) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/readyz").status_code == 200
        own_stack.bouncer.admin("PAUSE")
        try:
            started = time.monotonic()
            cut = http.post("/orders", json=ORDER, headers=headers)
            took = time.monotonic() - started
            reading = http.get("/positions", params={"account_id": ORDER["account_id"]},
                               headers=AUTH)  # fmt: skip
        finally:
            own_stack.bouncer.admin("RESUME")
        assert cut.status_code == 503, cut.text
        assert cut.headers["retry-after"] == str(defaults.DB_UNAVAILABLE_RETRY_AFTER_SECONDS)
        assert cut.json()["error"] == "database_unavailable"
        assert BUDGET_S <= took < BUDGET_S + 2, took  # not pgBouncer's 30 s wait
        assert reading.status_code == 503  # reads are held to the same budget

        def placed() -> httpx.Response | None:
            answer = http.post("/orders", json=ORDER, headers=headers)
            return answer if answer.status_code == 201 else None

        # The retry claims the key anew, or waits out 409 while the first claim is released
        # or taken over.
        first = wait_until(placed, timeout=30, what="the retried order to be placed")
        replay = http.post("/orders", json=ORDER, headers=headers)
        assert replay.status_code == 201 and replay.json()["id"] == first.json()["id"]
    with connect_app(own_stack) as conn:
        count = conn.execute(
            "SELECT count(*) FROM orders WHERE idempotency_key = %s", (f"{TEST_KEY_ID}/budget-1",)
        ).fetchone()[0]
    assert count == 1
