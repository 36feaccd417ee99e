"""POST /orders through a real uvicorn and a real pgBouncer: the happy path and idempotency."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import httpx
import pytest

from app import idempotency
from app.validation import OrderRequest
from tests.conftest import AUTH, TEST_KEY_ID, create_account

ORDER = {"account_id": "acct-1", "symbol": "BTCUSDT", "side": "buy",
         "quantity": "0.01000", "price": "65000.00"}  # fmt: skip


def post(server, body, key=None, **kw):
    headers = {**AUTH, "idempotency-key": key or str(uuid.uuid4())}
    return httpx.post(f"{server.url}/orders", json=body, headers=headers, timeout=30, **kw)


def counts(conn) -> dict[str, int]:
    return {
        table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        for table in ("orders", "outbox_events", "positions", "idempotency_keys")
    }


def test_order_is_filled_with_position_cash_and_outbox_event(app_server, app_conn):
    create_account(app_conn, balance="100000")
    r = post(app_server, ORDER)
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"/orders/{body['id']}"
    assert body["quantity"] == "0.01" and body["price"] == "65000"
    assert body["notional"] == "650" and body["commission"] == "0.65"
    assert body["position"] == {
        "id": body["position"]["id"], "quantity": "0.01", "avg_entry_price": "65000",
        "realized_pnl": "0", "status": "open",
    }  # fmt: skip
    cash = app_conn.execute("SELECT cash_balance FROM accounts").fetchone()[0]
    assert cash == Decimal("100000") - Decimal("650.65")
    event = app_conn.execute("SELECT event_type, payload FROM outbox_events").fetchone()
    assert event[0] == "order.filled" and event[1]["order"]["id"] == body["id"]
    got = httpx.get(f"{app_server.url}/orders/{body['id']}", headers=AUTH).json()
    assert got["price"] == "65000" and got["status"] == "filled"


def test_buy_then_sell_closes_position_and_realises_pnl(app_server, app_conn):
    create_account(app_conn)
    assert post(app_server, ORDER).status_code == 201
    sell = {**ORDER, "side": "sell", "price": "65100.00"}
    r = post(app_server, sell)
    assert r.status_code == 201, r.text
    position = r.json()["position"]
    assert position["status"] == "closed" and position["realized_pnl"] == "1"
    url = f"{app_server.url}/positions?account_id=acct-1"
    open_positions = httpx.get(url, headers=AUTH).json()
    assert open_positions == {"positions": [], "next_cursor": None}
    closed = httpx.get(f"{url}&status=closed", headers=AUTH).json()["positions"]
    assert len(closed) == 1 and closed[0]["realized_pnl"] == "1"


def test_completed_key_replays_stored_response(app_server, app_conn):
    create_account(app_conn)
    key = str(uuid.uuid4())
    first = post(app_server, ORDER, key)
    second = post(app_server, {**ORDER, "quantity": "0.01"}, key)  # same order, other spelling
    assert first.status_code == second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert counts(app_conn)["orders"] == 1


def test_key_reused_with_different_payload_gets_422(app_server, app_conn):
    create_account(app_conn)
    key = str(uuid.uuid4())
    assert post(app_server, ORDER, key).status_code == 201
    r = post(app_server, {**ORDER, "quantity": "0.02"}, key)
    assert r.status_code == 422
    assert r.json()["error"] == "idempotency_key_reused"
    assert counts(app_conn)["orders"] == 1


def _fingerprint(body: dict) -> str:
    order = OrderRequest(
        body["account_id"], body["symbol"], body["side"], Decimal(body["quantity"]),
        Decimal(body["price"]), body.get("strategy"), body.get("liquidity", "taker"),
    )  # fmt: skip
    return idempotency.request_hash("POST", "/orders", order.fingerprint_fields())


def test_in_flight_key_gets_409_with_retry_after(app_server, app_conn):
    create_account(app_conn)
    key = str(uuid.uuid4())
    app_conn.execute(
        "INSERT INTO idempotency_keys (key, request_hash, state) VALUES (%s, %s, 'in_flight')",
        (f"{TEST_KEY_ID}/{key}", _fingerprint(ORDER)),
    )
    r = post(app_server, ORDER, key)
    assert r.status_code == 409
    assert int(r.headers["retry-after"]) >= 1
    assert counts(app_conn)["orders"] == 0


def test_abandoned_in_flight_key_is_taken_over(app_server, app_conn):
    create_account(app_conn)
    key = str(uuid.uuid4())
    app_conn.execute(
        "INSERT INTO idempotency_keys (key, request_hash, state, locked_at) "
        "VALUES (%s, %s, 'in_flight', now() - interval '10 minutes')",
        (f"{TEST_KEY_ID}/{key}", _fingerprint(ORDER)),
    )
    assert post(app_server, ORDER, key).status_code == 201
    assert counts(app_conn)["orders"] == 1


@pytest.mark.parametrize(
    ("header", "code"),
    [(None, "idempotency_key_missing"), ("short", "idempotency_key_malformed"),
     ("has spaces in it", "idempotency_key_malformed"), ("x" * 129, "idempotency_key_malformed")],
)  # fmt: skip
def test_missing_or_malformed_key_gets_400_and_writes_nothing(app_server, app_conn, header, code):
    create_account(app_conn)
    headers = AUTH if header is None else {**AUTH, "idempotency-key": header}
    r = httpx.post(f"{app_server.url}/orders", json=ORDER, headers=headers)
    assert r.status_code == 400 and r.json()["error"] == code
    assert counts(app_conn) == {"orders": 0, "outbox_events": 0, "positions": 0,
                                "idempotency_keys": 0}  # fmt: skip


def test_quoted_structured_field_key_is_accepted(app_server, app_conn):
    create_account(app_conn)
    r = post(app_server, ORDER, key='"8e03978e-40d5-43e8-bc93-6894a57f9324"')
    assert r.status_code == 201


def test_thousand_concurrent_requests_with_one_key_make_one_order(app_server, app_conn):
    create_account(app_conn)
    key = str(uuid.uuid4())

    async def storm():
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=app_server.url, limits=limits, timeout=60) as c:
            return await asyncio.gather(
                *(c.post("/orders", json=ORDER, headers={**AUTH, "idempotency-key": key})
                  for _ in range(1000))
            )  # fmt: skip

    responses = asyncio.run(storm())
    statuses = [r.status_code for r in responses]
    created = [
        r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers
    ]
    replayed = [r for r in responses if r.headers.get("idempotent-replayed") == "true"]
    conflicts = [r for r in responses if r.status_code == 409]
    assert len(created) == 1, sorted(set(statuses))
    assert len(created) + len(replayed) + len(conflicts) == 1000, sorted(set(statuses))
    assert all(r.json() == created[0].json() for r in replayed)
    assert all(r.headers.get("retry-after") for r in conflicts)
    assert counts(app_conn)["orders"] == 1
    assert counts(app_conn)["outbox_events"] == 1


def test_concurrent_keys_reused_with_different_bodies_get_422(app_server, app_conn):
    create_account(app_conn)
    key = str(uuid.uuid4())
    assert post(app_server, ORDER, key).status_code == 201

    async def storm():
        async with httpx.AsyncClient(base_url=app_server.url, timeout=60) as c:
            return await asyncio.gather(
                *(c.post("/orders", json={**ORDER, "quantity": f"0.0{i}"},
                         headers={**AUTH, "idempotency-key": key}) for i in range(2, 10))
            )  # fmt: skip

    assert {r.status_code for r in asyncio.run(storm())} == {422}
    assert counts(app_conn)["orders"] == 1


def test_concurrent_orders_opening_one_position_all_land_on_it(app_server, app_conn):
    """Orders racing to open the same position meet at the unique index; losers retry."""
    create_account(app_conn)
    order = {**ORDER, "symbol": "ETHUSDT", "price": "3000.00", "quantity": "0.1"}

    async def race():
        async with httpx.AsyncClient(base_url=app_server.url, timeout=60) as c:
            return await asyncio.gather(
                *(c.post("/orders", json=order,
                         headers={**AUTH, "idempotency-key": str(uuid.uuid4())})
                  for _ in range(8))
            )  # fmt: skip

    assert [r.status_code for r in asyncio.run(race())] == [201] * 8
    rows = app_conn.execute(
        "SELECT quantity FROM positions WHERE symbol = 'ETHUSDT' AND status = 'open'"
    ).fetchall()
    assert rows == [(Decimal("0.8"),)]
    assert counts(app_conn)["orders"] == 8


def test_a_burst_of_orders_opening_and_closing_one_position_all_succeed(app_server, app_conn):
    """Buys and sells of one size on one position, all at once: the position opens and
    closes again and again, so most orders find no open position and open one. They must
    queue for it, not exhaust their retries at the unique index and answer 500."""
    create_account(app_conn)
    size = {**ORDER, "symbol": "SOLUSDT", "price": "150.00", "quantity": "1"}
    orders = [{**size, "side": side} for _ in range(20) for side in ("buy", "sell")]

    async def burst():
        async with httpx.AsyncClient(base_url=app_server.url, timeout=60) as c:
            return await asyncio.gather(
                *(c.post("/orders", json=order,
                         headers={**AUTH, "idempotency-key": str(uuid.uuid4())})
                  for order in orders)
            )  # fmt: skip

    answers = asyncio.run(burst())
    assert [r.status_code for r in answers] == [201] * len(orders), [
        r.text for r in answers if r.status_code != 201
    ][:3]
    net = app_conn.execute(
        "SELECT coalesce(sum(quantity), 0) FROM positions "
        "WHERE account_id = 'acct-1' AND symbol = 'SOLUSDT' AND status = 'open'"
    ).fetchone()[0]
    assert net == 0  # as many sold as bought: flat, whatever the interleaving
    assert app_conn.execute("SELECT count(*) FROM orders WHERE symbol = 'SOLUSDT'").fetchone()[
        0
    ] == len(orders)
