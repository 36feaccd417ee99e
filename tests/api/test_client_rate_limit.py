"""The per-client-address rate limit, through real uvicorn servers and a real pgBouncer: it
holds across two app servers (counted in PostgreSQL), whichever keys the address uses, and
counts requests whose key is refused."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from app.config import Settings
from sparkops import metric_names
from sparkops.wait import wait_until
from testkit.appserver import AppServer
from tests.api.test_auth import make_key
from tests.api.test_orders import ORDER, counts
from tests.api.test_security_headers import metric_value
from tests.conftest import create_account

CLIENT_LIMIT = 6


@pytest.fixture
def two_servers(db_stack, clean_db):
    """Two app servers sharing one database, with a low per-address limit."""
    settings = Settings(database_url=db_stack.app_conninfo(), db_timeout_s=60,
                        client_rate_limit=CLIENT_LIMIT)  # fmt: skip
    with AppServer(settings) as one, AppServer(settings) as two:
        yield one, two


def test_one_address_is_limited_across_servers_and_keys(db_stack, app_conn, two_servers):
    """Three keys, each far under its own limit, from one address on two servers: the
    address's budget is what refuses, and a refused request writes nothing."""
    create_account(app_conn, "addr", "100000000")
    auths = [make_key(db_stack, "addr", rate_limit=1000)[1] for _ in range(3)]
    body = {**ORDER, "account_id": "addr"}
    before = metric_value(two_servers[0], metric_names.RATE_LIMITED, limit="client_addr")

    async def burst():
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(
                client.post(f"{server.url}/orders", json=body,
                            headers={**auth, "idempotency-key": str(uuid.uuid4())})
                for server in two_servers for auth in auths for _ in range(5)
            ))  # fmt: skip

    started = time.monotonic()
    responses = asyncio.run(burst())
    windows = int(time.monotonic() - started) + 2  # fixed one-second windows touched
    statuses = sorted(r.status_code for r in responses)
    filled = statuses.count(201)
    limited = [r for r in responses if r.status_code == 429]
    assert 1 <= filled <= CLIENT_LIMIT * windows and len(limited) == 30 - filled, statuses
    assert all(r.headers["retry-after"] == "1" for r in limited)
    assert all(r.json()["error"] == "rate_limited" for r in limited)
    assert all("address" in r.json()["message"] for r in limited)
    assert counts(app_conn)["orders"] == filled
    assert counts(app_conn)["idempotency_keys"] == filled
    after = metric_value(two_servers[0], metric_names.RATE_LIMITED, limit="client_addr")
    assert after == before + len(limited)  # both servers run in this process: one registry
    # The next window lets the address in again.
    wait_until(lambda: httpx.get(f"{two_servers[1].url}/positions?account_id=addr",
                                 headers=auths[0]).status_code == 200,
               timeout=5, what="the next window")  # fmt: skip


def test_requests_without_a_valid_key_count_against_the_address(app_conn, two_servers):
    """Guessing keys from one address: 401s until the address's budget is spent, then 429."""
    bogus = {"authorization": "Bearer spk_" + "A" * 43}
    statuses = []
    started = time.monotonic()
    for i in range(CLIENT_LIMIT * 3):
        server = two_servers[i % 2]
        statuses.append(httpx.get(f"{server.url}/positions?account_id=x",
                                  headers=bogus).status_code)  # fmt: skip
    windows = int(time.monotonic() - started) + 2
    assert set(statuses) == {401, 429}, statuses
    assert statuses.count(401) <= CLIENT_LIMIT * windows, statuses
    row = app_conn.execute("SELECT client, used FROM client_rate_windows").fetchone()
    assert row[0] == "127.0.0.1" and row[1] >= 1


def test_reads_of_one_key_under_its_limit_are_refused_by_the_address(
    db_stack, app_conn, two_servers
):
    create_account(app_conn, "reader")
    _, auth = make_key(db_stack, "reader", permissions=("read",), rate_limit=1000)
    url = f"{two_servers[0].url}/positions?account_id=reader"
    started = time.monotonic()
    responses = [httpx.get(url, headers=auth) for _ in range(CLIENT_LIMIT * 3)]
    windows = int(time.monotonic() - started) + 2
    ok = [r for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    assert len(ok) + len(limited) == len(responses), [r.status_code for r in responses]
    assert len(ok) <= CLIENT_LIMIT * windows and limited
    assert limited[0].headers["retry-after"] == "1"
    assert "address" in limited[0].json()["message"]
