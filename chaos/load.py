"""Clients placing orders as real ones do, and the books a chaos run keeps.

Each worker places orders one after another, each under its own Idempotency-Key; on a 503
or a 409 it waits as Retry-After says and sends the same order with the same key again; on
a transport error (a hung or reset request) it backs off and does the same. When the run
stops, a worker finishes the order in hand (bounded by `finish_within`), then stops.
Afterwards `audit` holds the database to what the clients were told: every acknowledged
order there exactly once, nothing half written.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx
import psycopg

from app import apikeys

SYMBOL, PRICE, QUANTITY = "BTCUSDT", "65000.00", "0.00100"
BALANCE = "1000000"
RETRY_AFTER_CAP_S = 5.0  # honour Retry-After, but a test run does not wait longer


@dataclass
class Tally:
    """What the clients saw; the `lost`..`recover_s` fields are filled in by the scenario."""

    scenario: str
    sent: int = 0
    ok: int = 0
    shed: int = 0  # 503
    in_flight: int = 0  # 409: the same key still being processed; retried
    errors: int = 0  # transport errors and any other status
    statuses: Counter = field(default_factory=Counter)
    max_latency_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    shed_without_retry_after: int = 0
    acked: set[str] = field(default_factory=set)  # idempotency keys answered 201
    abandoned: set[str] = field(default_factory=set)  # never acknowledged by the end
    sent_keys: set[str] = field(default_factory=set)
    last_ack_at: float = 0.0
    ack_times: list[float] = field(default_factory=list)  # kept by the exchange run
    transport_errors: list[str] = field(default_factory=list)  # the first few, for notes
    early_calls: int | None = None  # exchange run: calls before Retry-After had passed
    lost: int | None = None
    duplicates: int | None = None
    half_written: list[str] = field(default_factory=list)
    recovered: bool | None = None
    recover_s: float | None = None
    recover_override: float | None = None  # a scenario's own measure of recovery
    notes: list[str] = field(default_factory=list)
    readyz: object = None  # the scenario's /readyz probe, when it ran one
    over_budget: tuple[int, int] = (0, 0)  # (ok, shed) in a phase beyond the budget
    outbox_missing: int | None = None  # order events never published (run with an outbox)
    outbox_survived: bool | None = None
    saturation: tuple[float, float] = (0.0, 0.0)  # (longest pgBouncer wait, alert threshold)
    saturation_fired: bool = False  # PgBouncerPoolSaturation's expression held on Prometheus

    def record(self, seconds: float, status: int | None, headers=None) -> None:
        self.sent += 1
        self.max_latency_s = max(self.max_latency_s, seconds)
        self.latencies.append(seconds)
        self.statuses[status or "transport"] += 1
        if status in (200, 201):
            self.ok += 1
        elif status == 503:
            self.shed += 1
            if headers is not None and "retry-after" not in headers:
                self.shed_without_retry_after += 1
        elif status == 409:
            self.in_flight += 1
        elif status != 422:
            self.errors += 1

    @property
    def p99_s(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


@dataclass
class Client:
    """An API key with one account per worker, made straight in the database."""

    key_id: str
    secret: str
    accounts: list[str]

    @classmethod
    def create(cls, conn: psycopg.Connection, workers: int) -> Client:
        key_id, secret = str(uuid.uuid4()), apikeys.new_secret()
        conn.execute(
            "INSERT INTO api_keys (id, name, secret_sha256, permissions, rate_limit) "
            "VALUES (%s, 'chaos', %s, '{read,trade}', 1000000)",
            (key_id, apikeys.secret_sha256(secret)),
        )
        accounts = [f"chaos-{secrets.token_hex(4)}-{n}" for n in range(workers)]
        for account in accounts:
            conn.execute(
                "INSERT INTO accounts (id, name, opening_balance, cash_balance) "
                "VALUES (%s, %s, %s, %s)",
                (account, account, BALANCE, BALANCE),
            )
            conn.execute(
                "INSERT INTO api_key_accounts (api_key_id, account_id) VALUES (%s, %s)",
                (key_id, account),
            )
        return cls(key_id, secret, accounts)


class OrderLoad:
    """`workers` clients on an event loop of their own, until `stop()`."""

    def __init__(self, url: str, client: Client, tally: Tally, *, http_timeout: float = 20.0,
                 pause_s: float = 0.02, finish_within: float = 30.0) -> None:  # fmt: skip
        self.url, self.client, self.tally = url, client, tally
        self.http_timeout, self.pause_s, self.finish_within = http_timeout, pause_s, finish_within
        self._stopping = threading.Event()
        self._finish_by = 0.0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._lock = threading.Lock()

    def start(self) -> OrderLoad:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._finish_by = time.monotonic() + self.finish_within
        self._stopping.set()
        self._thread.join(timeout=self.finish_within + self.http_timeout + 10)
        if self._thread.is_alive():
            raise AssertionError("the load's workers did not stop in time")

    def __enter__(self) -> OrderLoad:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _run(self) -> None:
        headers = {"authorization": f"Bearer {self.client.secret}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers,
                                     timeout=self.http_timeout) as http:  # fmt: skip
            await asyncio.gather(*(self._worker(http, a) for a in self.client.accounts))

    async def _worker(self, http: httpx.AsyncClient, account: str) -> None:
        side = "buy"
        while not self._stopping.is_set():
            body = {"account_id": account, "symbol": SYMBOL, "side": side,
                    "quantity": QUANTITY, "price": PRICE}  # fmt: skip
            if await self._place(http, body):
                side = "sell" if side == "buy" else "buy"
            await asyncio.sleep(self.pause_s)

    async def _place(self, http: httpx.AsyncClient, body: dict) -> bool:
        """One order to its end: True once acknowledged (201), False if given up."""
        key = str(uuid.uuid4())
        self.tally.sent_keys.add(key)
        for attempt in range(10_000):  # bounded: the finish deadline ends it long before
            if self._stopping.is_set() and time.monotonic() > self._finish_by:
                self.tally.abandoned.add(key)
                return False
            start = time.monotonic()
            try:
                answer = await http.post("/orders", json=body, headers={"idempotency-key": key})
            except httpx.HTTPError as exc:
                self._record(time.monotonic() - start, None)
                took = time.monotonic() - start
                if len(self.tally.transport_errors) < 5:
                    self.tally.transport_errors.append(f"{exc!r} after {took:.2f}s")
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
                continue
            self._record(time.monotonic() - start, answer.status_code, answer.headers)
            if answer.status_code == 201:
                self.tally.acked.add(key)
                self.tally.last_ack_at = time.monotonic()
                return True
            if answer.status_code == 422:
                raise AssertionError(f"order refused: {answer.text}")  # the load is in limits
            wait = answer.headers.get("retry-after", "")
            delay = float(wait) if wait.isdigit() else min(0.1 * 2**attempt, 2.0)
            await asyncio.sleep(min(delay, RETRY_AFTER_CAP_S))
        self.tally.abandoned.add(key)
        return False

    def _record(self, seconds: float, status: int | None, headers=None) -> None:
        with self._lock:
            self.tally.record(seconds, status, headers)


_ORDERS_OF_KEY = """
SELECT split_part(o.idempotency_key, '/', 2) AS key, count(*) AS n
FROM orders o WHERE o.api_key_id = %s GROUP BY 1
"""
_HALF_WRITTEN = """
SELECT 'order without its completed key: ' || o.id FROM orders o
LEFT JOIN idempotency_keys k ON k.key = o.idempotency_key
WHERE o.api_key_id = %(key)s AND (k.state IS DISTINCT FROM 'completed'
      OR k.response_status IS DISTINCT FROM 201)
UNION ALL
SELECT 'order without its outbox event: ' || o.id FROM orders o
WHERE o.api_key_id = %(key)s AND NOT EXISTS (
    SELECT 1 FROM outbox_events e
    WHERE e.payload->>'idempotency_key' = o.idempotency_key)
UNION ALL
SELECT 'completed 201 key without its order: ' || k.key FROM idempotency_keys k
WHERE k.key LIKE %(prefix)s AND k.state = 'completed' AND k.response_status = 201
  AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.idempotency_key = k.key)
UNION ALL
SELECT 'cash does not add up on ' || a.id || ': ' || a.cash_balance || ' <> '
       || a.opening_balance + coalesce(d.delta, 0) FROM accounts a
JOIN api_key_accounts b ON b.account_id = a.id AND b.api_key_id = %(key)s
LEFT JOIN (
    SELECT account_id, sum(CASE WHEN side = 'buy' THEN -(notional + commission)
                                ELSE notional - commission END) AS delta
    FROM orders WHERE api_key_id = %(key)s GROUP BY account_id
) d ON d.account_id = a.id
WHERE a.cash_balance <> a.opening_balance + coalesce(d.delta, 0)
"""


def audit(conn: psycopg.Connection, client: Client, tally: Tally) -> None:
    """Lost writes (acknowledged, not there), duplicates (one order twice), half-written
    orders (an order without its key's completion, its outbox event or its cash)."""
    written = dict(conn.execute(_ORDERS_OF_KEY, (client.key_id,)).fetchall())
    tally.lost = sum(1 for key in tally.acked if written.get(key, 0) == 0)
    tally.duplicates = sum(n - 1 for n in written.values() if n > 1)
    strangers = set(written) - tally.sent_keys
    tally.duplicates += len(strangers)  # an order nobody asked for
    rows = conn.execute(
        _HALF_WRITTEN, {"key": client.key_id, "prefix": f"{client.key_id}/%"}
    ).fetchall()
    tally.half_written = [r[0] for r in rows]
    unacked_written = sum(1 for key in tally.abandoned if written.get(key))
    if unacked_written:
        tally.notes.append(f"{unacked_written} orders written but never acknowledged")
