"""The order path's SQL against the real PostgreSQL behind pgBouncer: a maker rebate is
stored, a key no longer held rolls the whole order back, a refused request locks nothing."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import uuid
from decimal import Decimal

import psycopg
import pytest

from app import idempotency, orders, ratelimit
from app.config import Settings
from app.instruments import DEFAULT_INSTRUMENTS
from app.money import FeeSchedule
from app.validation import OrderRequest
from sparkops.wait import wait_until
from tests.conftest import TEST_KEY_ID, connect_app, create_account

REBATE = Decimal("-0.0002")
ORDER = OrderRequest("acct-1", "BTCUSDT", "buy", Decimal("0.01"), Decimal("65000"), None, "maker")


def rebate_settings(stack) -> Settings:
    btc = DEFAULT_INSTRUMENTS["BTCUSDT"]
    fees = FeeSchedule(maker_rate=REBATE, taker_rate=Decimal("0.001"), minimum_fee=Decimal("0.01"))
    instruments = {**DEFAULT_INSTRUMENTS, "BTCUSDT": dataclasses.replace(btc, fees=fees)}
    return Settings(database_url=stack.app_conninfo(), instruments=instruments)


def audit() -> orders.Audit:
    return orders.Audit(TEST_KEY_ID, "127.0.0.1", "req-test")


def budget(limit: int = 1_000_000) -> ratelimit.Budget:
    return ratelimit.Budget(TEST_KEY_ID, limit, "127.0.0.1", 1_000_000)


async def app_connection(stack) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(
        stack.app_conninfo(), autocommit=True, prepare_threshold=None
    )


def fingerprint(order: OrderRequest) -> str:
    return idempotency.request_hash("POST", "/orders", order.fingerprint_fields())


def test_a_maker_rebate_order_is_stored_with_its_negative_commission(clean_db, app_conn):
    create_account(app_conn, balance="100000")
    settings = rebate_settings(clean_db)
    key = f"{TEST_KEY_ID}/{uuid.uuid4()}"

    async def place():
        async with await app_connection(clean_db) as conn:
            return await orders.claim_and_place(
                conn, settings, ORDER, key, fingerprint(ORDER), audit(), budget()
            )

    response = asyncio.run(place())
    assert isinstance(response, orders.Response) and response.status == 201, response
    commission, notional = app_conn.execute(
        "SELECT commission, notional FROM orders WHERE idempotency_key = %s", (key,)
    ).fetchone()
    assert notional == Decimal("650") and commission == Decimal("-0.13")  # 650 x -0.0002
    cash = app_conn.execute("SELECT cash_balance FROM accounts").fetchone()[0]
    assert cash == Decimal("100000") - Decimal("650") + Decimal("0.13")  # the rebate is paid


def test_the_database_refuses_a_rebate_beyond_the_notional(clean_db, app_conn):
    create_account(app_conn)
    with pytest.raises(psycopg.errors.CheckViolation, match="at_least_minus_notional"):
        app_conn.execute(
            "INSERT INTO orders (account_id, symbol, side, quantity, price, notional, "
            "commission, liquidity, status, idempotency_key) VALUES ('acct-1', 'BTCUSDT', "
            "'buy', 1, 10, 10, -10.000000000000000001, 'maker', 'filled', 'k')"
        )


def test_a_key_no_longer_held_rolls_the_order_back(clean_db, app_conn):
    create_account(app_conn)
    settings = rebate_settings(clean_db)
    key = f"{TEST_KEY_ID}/{uuid.uuid4()}"  # never claimed: as if taken over and completed

    async def place():
        async with await app_connection(clean_db) as conn:
            with pytest.raises(orders.KeyTakenOver):
                await orders.place_order(conn, settings, ORDER, key, audit())
            # The connection is usable again: the failed batch was rolled back.
            assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)

    asyncio.run(place())
    for table in ("orders", "positions", "outbox_events", "idempotency_keys"):
        assert app_conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
    assert app_conn.execute("SELECT cash_balance FROM accounts").fetchone()[0] == 100000
    assert orders.KEY_NOT_HELD == "SP001"  # the SQLSTATE migration 0014 raises


def test_a_request_refused_by_its_rate_limit_locks_no_position(clean_db, app_conn):
    create_account(app_conn)
    app_conn.execute(
        "INSERT INTO positions (account_id, symbol, quantity, avg_entry_price) "
        "VALUES ('acct-1', 'BTCUSDT', 1, 65000)"
    )
    settings = rebate_settings(clean_db)
    key = f"{TEST_KEY_ID}/{uuid.uuid4()}"
    with connect_app(clean_db, autocommit=False) as holder:
        # Another transaction holds the position: a request that tried to lock it would wait.
        holder.execute("SELECT id FROM positions FOR UPDATE").fetchone()

        async def place():
            async with await app_connection(clean_db) as conn:
                return await asyncio.wait_for(
                    orders.claim_and_place(
                        conn, settings, ORDER, key, fingerprint(ORDER), audit(), budget(limit=0)
                    ),
                    timeout=10,
                )

        claim = asyncio.run(place())
        holder.rollback()
    assert claim == idempotency.Claim("rate_limited", limit="api_key")
    assert app_conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0] == 0


def _waiting(conn: psycopg.Connection, locktype: str) -> int:
    return conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = %s AND NOT granted", (locktype,)
    ).fetchone()[0]


def test_an_order_that_finds_its_position_just_closed_holds_no_row_lock_while_it_queues(
    clean_db, app_conn
):
    """The deadlock a burst of opening and closing orders met (three times over: a 503).

    An order waiting on the open position's row while another order closes it finds no open
    position once that commits (PostgreSQL re-checks the row's new version and skips it), but
    the row lock it took on that version stays with its transaction. It then queues for the
    position's advisory lock. Were it to queue holding that row lock, an order holding the
    advisory lock that tries to lock the same row (its snapshot saw the position open) would
    wait for it: a cycle. It must queue holding nothing of the position.
    """
    create_account(app_conn)
    position_id = app_conn.execute(
        "INSERT INTO positions (account_id, symbol, quantity, avg_entry_price) "
        "VALUES ('acct-1', 'BTCUSDT', 0.01, 65000) RETURNING id"
    ).fetchone()[0]
    settings = rebate_settings(clean_db)
    sell = dataclasses.replace(ORDER, side="sell")
    key = f"{TEST_KEY_ID}/{uuid.uuid4()}"
    lock = (
        "SELECT pg_advisory_xact_lock(%s, hashtext(concat_ws('/', %s::text, %s::text, %s::text)))"
    )
    with (
        connect_app(clean_db, autocommit=False) as closer,
        connect_app(clean_db, autocommit=False) as opener,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        closer.execute("SELECT id FROM positions WHERE id = %s FOR UPDATE", (position_id,))
        # As an order on its way to opening the position: the advisory lock is its.
        opener.execute(lock, (orders.POSITION_LOCK_SPACE, "acct-1", "BTCUSDT", None))

        async def place():
            async with await app_connection(clean_db) as conn:
                return await orders.claim_and_place(
                    conn, settings, sell, key, fingerprint(sell), audit(), budget()
                )

        placed = pool.submit(asyncio.run, place())
        wait_until(lambda: _waiting(app_conn, "transactionid"), timeout=10,
                   what="the order to wait on the position's row")  # fmt: skip
        closer.execute(
            "UPDATE positions SET quantity = 0, status = 'closed', closed_at = now() "
            "WHERE id = %s", (position_id,),
        )  # fmt: skip
        closer.commit()
        wait_until(lambda: _waiting(app_conn, "advisory"), timeout=10,
                   what="the order to queue for the position's advisory lock")  # fmt: skip
        # The advisory lock's holder now locks the closed row: free, nothing holds it.
        opener.execute(
            "SELECT id FROM positions WHERE id = %s FOR UPDATE NOWAIT", (position_id,)
        ).fetchone()
        opener.commit()
        response = placed.result(timeout=30)
    assert response.status == 201, response
    # The sell opened a new (short) position: the closed one stays closed.
    rows = app_conn.execute(
        "SELECT status, quantity FROM positions WHERE account_id = 'acct-1' ORDER BY id"
    ).fetchall()
    assert rows == [("closed", 0), ("open", Decimal("-0.01"))], rows
