"""Risk blocks through the API: a 4xx naming the rule, nothing filled, counted by rule."""

from __future__ import annotations

import uuid

import pytest

from sparkops import metric_names
from tests.api.test_orders import ORDER, counts, post
from tests.api.test_security_headers import metric_value
from tests.conftest import connect_operator, create_account


@pytest.mark.parametrize(
    ("changes", "rule"),
    [({"quantity": "5.00000", "price": "65000.00"}, "max_notional"),
     ({"quantity": "11", "symbol": "SOLUSDT", "price": "150.00"}, "max_position"),
     ({"price": "70000.00"}, "price_band")],
)  # fmt: skip
def test_blocked_order_names_rule_and_fills_nothing(app_server, app_conn, changes, rule):
    create_account(app_conn)
    before = metric_value(app_server, metric_names.RISK_BLOCKS, rule=rule)
    key = str(uuid.uuid4())
    r = post(app_server, {**ORDER, **changes}, key)
    assert r.status_code == 422, r.text
    assert r.json() == {"error": "risk_blocked", "rule": rule, "message": r.json()["message"]}
    c = counts(app_conn)
    assert (c["orders"], c["outbox_events"], c["positions"]) == (0, 0, 0)
    assert metric_value(app_server, metric_names.RISK_BLOCKS, rule=rule) == before + 1
    # the block is the key's stored outcome: a retry replays it
    again = post(app_server, {**ORDER, **changes}, key)
    assert again.status_code == 422 and again.headers["idempotent-replayed"] == "true"


def test_kill_switch_halts_globally_and_per_symbol(db_stack, app_server, app_conn):
    create_account(app_conn)
    with connect_operator(db_stack) as operator:
        operator.execute("INSERT INTO trading_halts (scope, reason) VALUES ('ETHUSDT', 'incident')")
        eth = {**ORDER, "symbol": "ETHUSDT", "price": "3000.00", "quantity": "0.1"}
        r = post(app_server, eth)
        assert r.status_code == 422 and r.json()["rule"] == "kill_switch"
        assert "incident" in r.json()["message"]
        assert post(app_server, ORDER).status_code == 201  # BTC still trades
        operator.execute("INSERT INTO trading_halts (scope, reason) VALUES ('global', 'all stop')")
        assert post(app_server, ORDER).json()["rule"] == "kill_switch"
        operator.execute("DELETE FROM trading_halts")
    assert post(app_server, ORDER).status_code == 201
    assert counts(app_conn)["orders"] == 2
