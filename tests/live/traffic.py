"""Traffic that makes every app panel move: orders, a replay, a 422 and a 409 on reused
keys, risk blocks, a CSP report and concurrent orders racing for one new position."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import httpx
import psycopg

from app import apikeys, idempotency
from app.validation import OrderRequest

ACCOUNT = "acct-live"
ORDER = {"account_id": ACCOUNT, "symbol": "BTCUSDT", "side": "buy",
         "quantity": "0.01000", "price": "65000.00"}  # fmt: skip


def _post(client: httpx.Client, body: dict, key: str | None = None) -> httpx.Response:
    return client.post("/orders", json=body, headers={"idempotency-key": key or str(uuid.uuid4())})


def _request_hash(body: dict) -> str:
    order = OrderRequest(
        body["account_id"], body["symbol"], body["side"], Decimal(body["quantity"]),
        Decimal(body["price"]), body.get("strategy"), body.get("liquidity", "taker"),
    )  # fmt: skip
    return idempotency.request_hash("POST", "/orders", order.fingerprint_fields())


async def _race(base_url: str, auth: dict, body: dict, count: int) -> list[int]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=auth) as client:
        headers = [{"idempotency-key": str(uuid.uuid4())} for _ in range(count)]
        responses = await asyncio.gather(
            *(client.post("/orders", json=body, headers=h) for h in headers)
        )
    return [r.status_code for r in responses]


def drive(app_url: str, app_conninfo: str) -> dict[str, int]:
    """Returns how many requests of each kind got the status they should."""
    with psycopg.connect(app_conninfo, autocommit=True, prepare_threshold=None) as conn:
        conn.execute(
            "INSERT INTO accounts (id, name, opening_balance, cash_balance) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (ACCOUNT, "Live check", "1000000", "1000000"),
        )
        key_id, secret = apikeys.create(conn, "live-traffic", [ACCOUNT], ["read", "trade"], 1000)
        in_flight_key = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO idempotency_keys (key, request_hash, state) VALUES (%s, %s, 'in_flight')",
            (f"{key_id}/{in_flight_key}", _request_hash(ORDER)),
        )
    auth = {"authorization": f"Bearer {secret}"}
    seen: dict[str, int] = {}

    def expect(kind: str, response: httpx.Response, status: int) -> None:
        assert response.status_code == status, (kind, response.status_code, response.text)
        seen[kind] = seen.get(kind, 0) + 1

    with httpx.Client(base_url=app_url, timeout=30, headers=auth) as client:
        for _ in range(5):
            expect("filled", _post(client, ORDER), 201)
        key = str(uuid.uuid4())
        expect("filled", _post(client, ORDER, key), 201)
        expect("replayed", _post(client, ORDER, key), 201)
        expect("payload_mismatch", _post(client, {**ORDER, "quantity": "0.02"}, key), 422)
        expect("in_flight", _post(client, ORDER, in_flight_key), 409)
        expect("risk_block", _post(client, {**ORDER, "price": "70000.00"}), 422)
        expect("risk_block", _post(client, {**ORDER, "quantity": "5.00000"}), 422)
        report = {"csp-report": {"violated-directive": "script-src-elem",
                                 "blocked-uri": "https://evil.example/x.js"}}  # fmt: skip
        csp = client.post("/csp-report", json=report,
                          headers={"content-type": "application/csp-report"})  # fmt: skip
        expect("csp_report", csp, 204)
        expect("health", client.get("/healthz"), 200)
    # Concurrent first orders for one (account, symbol): all but one race the unique index.
    race = {**ORDER, "symbol": "ETHUSDT", "price": "3000.00", "quantity": "0.1"}
    statuses = asyncio.run(_race(app_url, auth, race, 8))
    seen["race_filled"] = statuses.count(201)
    return seen
