"""Every order's transaction gives its pgBouncer server connection back when it ends.

In transaction pooling a server stays linked to a client only while that client is in a
transaction. The order path once ran in psycopg's pipeline mode, and pgBouncer 1.18 (no
pipelining support before 1.21) then left about 4 % of servers "active", linked to a client
that had committed, until that client's next request: a `PAUSE` (every restore) waited on
them, and the pool lost slots. This test failed against that code (2 of 300 orders left a
server linked, every run): 300 orders opening, growing and closing positions, some refused,
and after each one no server of the app's user stays linked.
"""

from __future__ import annotations

import uuid

import httpx

from sparkops import defaults
from sparkops.wait import DeadlineExceeded, wait_until
from tests.conftest import AUTH, create_account

ORDERS = 300


def _linked(stack) -> list[tuple]:
    """Server connections of the app role that pgBouncer holds for a client (SHOW SERVERS)."""
    rows = stack.bouncer.admin("SHOW SERVERS")
    return [r for r in rows if r[1] == defaults.ROLE_APP and r[3] == "active"]


def test_no_server_stays_linked_after_an_order(app_server, app_conn, db_stack):
    create_account(app_conn, "release-1", balance="100000000")
    stuck = []
    for n in range(ORDERS):
        body = {
            "account_id": "release-1" if n % 50 != 49 else "no-such-account",
            "symbol": ("BTCUSDT", "ETHUSDT")[n % 2],
            "side": "buy" if n % 4 < 2 else "sell",
            "quantity": "0.01",
            "price": ("65000.00", "3000.00")[n % 2],
        }
        r = httpx.post(f"{app_server.url}/orders", json=body, timeout=30,
                       headers={**AUTH, "idempotency-key": str(uuid.uuid4())})  # fmt: skip
        assert r.status_code in (201, 422), r.text
        try:
            wait_until(lambda: not _linked(db_stack), timeout=2, what="servers released")
        except DeadlineExceeded:
            stuck.append((n, r.status_code, _linked(db_stack)))
    assert stuck == [], f"{len(stuck)} of {ORDERS} orders left a server linked: {stuck[:3]}"
