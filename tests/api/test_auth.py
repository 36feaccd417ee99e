"""API keys through a real uvicorn and a real pgBouncer: who gets in, what each key sees, and
what each order records. Keys are made and revoked with the real `sparkops app keys`."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from click.testing import CliRunner

from app import apikeys
from app.config import Settings
from sparkops import metric_names
from sparkops.wait import wait_until
from sparkops_cli.commands.app import secret_in
from sparkops_cli.main import main
from testkit.appserver import AppServer
from tests.api.test_orders import ORDER, counts
from tests.api.test_security_headers import metric_value
from tests.conftest import AUTH, create_account


def sparkops(stack, *args, input=None):
    env = {"SPARK_DATABASE_URL": stack.app_conninfo()}
    return CliRunner().invoke(main, list(args), env=env, input=input, catch_exceptions=False)


def make_key(stack, *accounts, permissions=("read", "trade"), rate_limit=1000) -> tuple[str, dict]:
    options = ["--name", "t", "--rate-limit", str(rate_limit)]
    options += [a for account in accounts for a in ("--account", account)]
    options += [a for p in permissions for a in ("--permission", p)]
    made = sparkops(stack, "app", "keys", "create", *options)
    assert made.exit_code == 0, made.output
    key_id = made.stdout.split("key id: ")[1].split()[0]
    return key_id, {"authorization": f"Bearer {secret_in(made.stdout)}"}


def post(server, auth: dict, body=ORDER, key=None) -> httpx.Response:
    headers = {**auth, "idempotency-key": key or str(uuid.uuid4())}
    return httpx.post(f"{server.url}/orders", json=body, headers=headers, timeout=30)


@pytest.mark.parametrize(
    ("authorization", "error"),
    [(None, None), ("Basic dXNlcjpwYXNz", "invalid_token"), ("Bearer", "invalid_token"),
     ("Bearer spk_" + "A" * 43, "invalid_token"), ("Bearer spk_short", "invalid_token")],
    ids=["none", "basic", "empty", "unknown", "malformed"],
)  # fmt: skip
def test_no_valid_key_is_a_401_with_a_challenge_and_writes_nothing(
    app_server, app_conn, authorization, error
):
    create_account(app_conn)
    auth = {} if authorization is None else {"authorization": authorization}
    positions = httpx.get(f"{app_server.url}/positions?account_id=acct-1", headers=auth)
    for r in (post(app_server, auth), positions):
        assert r.status_code == 401, r.text
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="spark"')
        assert (f'error="{error}"' in challenge) if error else ("error=" not in challenge)
    assert counts(app_conn) == {"orders": 0, "outbox_events": 0, "positions": 0,
                                "idempotency_keys": 0}  # fmt: skip


def test_cli_shows_the_secret_once_and_stores_only_its_hash(db_stack, app_conn):
    create_account(app_conn, "cli-1")
    key_id, auth = make_key(db_stack, "cli-1", permissions=("read",))
    secret = auth["authorization"].removeprefix("Bearer ")
    stored = app_conn.execute(
        "SELECT secret_sha256, permissions FROM api_keys WHERE id = %s", (key_id,)
    ).fetchone()
    assert bytes(stored[0]) == apikeys.secret_sha256(secret) and stored[1] == ["read"]
    dump = str(app_conn.execute("SELECT * FROM api_keys").fetchall())
    assert secret not in dump and secret[4:] not in dump
    listed = sparkops(db_stack, "app", "keys", "list")
    assert key_id in listed.stdout and "cli-1" in listed.stdout and secret not in listed.stdout
    refused = sparkops(db_stack, "app", "keys", "create", "--name", "x", "--account", "nobody")
    assert refused.exit_code == 1 and "no such account(s): nobody" in refused.output


def test_revoke_plans_asks_and_every_process_refuses_the_key_within_a_second(
    db_stack, app_server, app_conn
):
    create_account(app_conn)
    key_id, auth = make_key(db_stack, "acct-1")
    # A second app process (its own key cache) beside the session's.
    other = AppServer(
        Settings(database_url=db_stack.app_conninfo(), db_timeout_s=60, request_timeout_s=90)
    ).start()
    try:
        servers = [app_server, other]
        for server in servers:
            assert post(server, auth).status_code == 201  # both have the key cached now
        dry = sparkops(db_stack, "app", "keys", "revoke", key_id, "--dry-run")
        assert "plan: revoke key" in dry.stdout and "nothing changed" in dry.stdout
        no = sparkops(db_stack, "app", "keys", "revoke", key_id, input="n\n")
        assert no.exit_code == 1
        assert all(post(s, auth).status_code == 201 for s in servers)  # still valid
        revoked = sparkops(db_stack, "app", "keys", "revoke", key_id, "--yes")
        assert revoked.exit_code == 0, revoked.output
        started = time.monotonic()
        for server in servers:
            wait_until(lambda s=server: post(s, auth).status_code == 401, timeout=1.0,
                       interval=0.02, what="the revoked key refused")  # fmt: skip
        took = time.monotonic() - started
        print(f"\nrevocation refused on both processes after {took:.3f} s")
        assert took < 1.0
    finally:
        other.stop()
    assert "revoked" in sparkops(db_stack, "app", "keys", "list").stdout


def test_a_key_sees_only_its_accounts(db_stack, app_server, app_conn):
    create_account(app_conn, "mine")
    create_account(app_conn, "theirs")
    _, mine = make_key(db_stack, "mine")
    theirs_order = post(app_server, AUTH, {**ORDER, "account_id": "theirs"})
    assert theirs_order.status_code == 201
    order_id = theirs_order.json()["id"]
    # Another account's order and positions answer as if they did not exist.
    r = httpx.get(f"{app_server.url}/orders/{order_id}", headers=mine)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    missing = httpx.get(f"{app_server.url}/orders/{uuid.uuid4()}", headers=mine)
    assert missing.status_code == 404 and missing.json()["message"].startswith("no order")
    for account in ("theirs", "no-such-account"):
        r = httpx.get(f"{app_server.url}/positions?account_id={account}", headers=mine)
        assert r.status_code == 404 and r.json()["message"] == f"no account {account}"
    # Trading on another account: the same answer as an account that does not exist.
    refused = post(app_server, mine, {**ORDER, "account_id": "theirs"})
    unknown = post(app_server, mine, {**ORDER, "account_id": "no-such-account"})
    assert refused.status_code == unknown.status_code == 422
    assert refused.json()["error"] == unknown.json()["error"] == "unknown_account"
    assert httpx.get(f"{app_server.url}/orders/{order_id}", headers=AUTH).status_code == 200


def test_positions_need_an_account_and_page_with_a_cursor(app_server, app_conn):
    create_account(app_conn, "pages", "100000000")
    for n in range(5):
        body = {**ORDER, "account_id": "pages", "strategy": f"s{n}"}
        assert post(app_server, AUTH, body).status_code == 201
    base = f"{app_server.url}/positions"
    r = httpx.get(base, headers=AUTH)
    assert r.status_code == 400 and r.json()["field"] == "account_id"
    seen, cursor = [], None
    for _ in range(4):
        query = "account_id=pages&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = httpx.get(f"{base}?{query}", headers=AUTH).json()
        seen += [p["strategy"] for p in page["positions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"s{n}" for n in range(5)]
    too_many = httpx.get(f"{base}?account_id=pages&limit=1001", headers=AUTH)
    assert too_many.status_code == 400 and too_many.json()["field"] == "limit"


def test_a_read_key_cannot_trade(db_stack, app_server, app_conn):
    create_account(app_conn)
    _, read = make_key(db_stack, "acct-1", permissions=("read",))
    before = metric_value(app_server, metric_names.AUTH_FAILURES, reason="forbidden")
    r = post(app_server, read)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert metric_value(app_server, metric_names.AUTH_FAILURES, reason="forbidden") == before + 1
    assert counts(app_conn)["orders"] == 0
    r = httpx.get(f"{app_server.url}/positions?account_id=acct-1", headers=read)
    assert r.status_code == 200


def test_idempotency_keys_are_scoped_to_the_api_key(db_stack, app_server, app_conn):
    create_account(app_conn)
    _, first = make_key(db_stack, "acct-1")
    _, second = make_key(db_stack, "acct-1")
    key = str(uuid.uuid4())
    a = post(app_server, first, key=key)
    b = post(app_server, second, {**ORDER, "quantity": "0.02"}, key=key)  # not a 422
    assert a.status_code == b.status_code == 201
    assert "idempotent-replayed" not in b.headers and a.json()["id"] != b.json()["id"]
    replay = post(app_server, first, key=key)
    assert replay.headers["idempotent-replayed"] == "true" and replay.json() == a.json()
    assert counts(app_conn)["orders"] == 2


def test_each_order_records_its_key_client_and_request_id(db_stack, app_server, app_conn):
    create_account(app_conn)
    key_id, auth = make_key(db_stack, "acct-1")
    r = post(app_server, auth)
    assert r.status_code == 201
    request_id = r.headers["x-request-id"]
    row = app_conn.execute(
        "SELECT api_key_id::text, host(client_addr), request_id FROM orders WHERE id = %s",
        (r.json()["id"],),
    ).fetchone()
    assert row == (key_id, "127.0.0.1", request_id)
    other = httpx.get(f"{app_server.url}/healthz")
    assert len(other.headers["x-request-id"]) == 32 and other.headers["x-request-id"] != request_id


def test_a_burst_over_the_limit_gets_429_across_two_processes(db_stack, app_server, app_conn):
    """The limit is counted in PostgreSQL: two app processes share one key's budget."""
    create_account(app_conn, "burst", "100000000")
    limit = 5
    _, auth = make_key(db_stack, "burst", rate_limit=limit)
    body = {**ORDER, "account_id": "burst"}
    other = AppServer(
        Settings(database_url=db_stack.app_conninfo(), db_timeout_s=60, request_timeout_s=90)
    ).start()
    before = metric_value(app_server, metric_names.RATE_LIMITED, limit="api_key")
    try:

        async def burst():
            async with httpx.AsyncClient(timeout=30, headers=auth) as client:
                return await asyncio.gather(*(
                    client.post(f"{server.url}/orders", json=body,
                                headers={"idempotency-key": str(uuid.uuid4())})
                    for server in (app_server, other) for _ in range(15)
                ))  # fmt: skip

        started = time.monotonic()
        responses = asyncio.run(burst())
        took = time.monotonic() - started
    finally:
        other.stop()
    statuses = sorted(r.status_code for r in responses)
    filled = statuses.count(201)
    limited = [r for r in responses if r.status_code == 429]
    # A fixed window: a burst that straddles a second boundary may get two windows' worth.
    windows = int(took) + 2
    assert 1 <= filled <= limit * windows and len(limited) == 30 - filled, statuses
    assert all(r.headers["retry-after"] == "1" for r in limited)
    assert all(r.json()["error"] == "rate_limited" for r in limited)
    assert counts(app_conn)["orders"] == filled  # a refused request writes nothing
    assert counts(app_conn)["idempotency_keys"] == filled
    # The session's process counted its own refusals (the other process has its own).
    assert metric_value(app_server, metric_names.RATE_LIMITED, limit="api_key") >= before + 1
    # The next window lets the key in again, reads included.
    wait_until(lambda: post(app_server, auth, body).status_code == 201, timeout=5,
               what="the next window")  # fmt: skip
    r = httpx.get(f"{app_server.url}/positions?account_id=burst", headers=auth)
    assert r.status_code in (200, 429)


def test_reads_count_against_the_limit_too(db_stack, app_server, app_conn):
    create_account(app_conn, "reader")
    _, auth = make_key(db_stack, "reader", permissions=("read",), rate_limit=1)
    url = f"{app_server.url}/positions?account_id=reader"
    started = time.monotonic()
    statuses = [httpx.get(url, headers=auth).status_code for _ in range(5)]
    windows = int(time.monotonic() - started) + 2  # fixed one-second windows touched
    assert statuses.count(200) <= windows and statuses.count(429) >= 5 - windows, statuses
