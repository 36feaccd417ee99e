"""The rate-limit windows against the real PostgreSQL: a request that reaches its window's
row late (its transaction started in an earlier second than the window already moved to)
counts in that window and never moves it back."""

from __future__ import annotations

import asyncio

import psycopg

from app import ratelimit
from tests.conftest import TEST_KEY_ID

MOVED_ON = "date_trunc('second', now()) + interval '1 second'"


def test_a_late_request_counts_in_the_window_that_moved_on(clean_db, app_conn):
    app_conn.execute(
        f"INSERT INTO api_rate_windows (api_key_id, window_start, used) VALUES (%s, {MOVED_ON}, 5)",
        (TEST_KEY_ID,),
    )
    app_conn.execute(
        f"INSERT INTO client_rate_windows (client, window_start, used) "
        f"VALUES ('192.0.2.1', {MOVED_ON}, 9)"
    )

    async def hit():
        async with await psycopg.AsyncConnection.connect(
            clean_db.app_conninfo(), autocommit=True, prepare_threshold=None
        ) as conn:
            over_key = await ratelimit.hit(conn, ratelimit.Budget(TEST_KEY_ID, 5, None, 100))
            client_ok = await ratelimit.hit_client(conn, "192.0.2.1", 9)
            return over_key, client_ok

    windows = "SELECT used, window_start FROM api_rate_windows UNION ALL " \
        "SELECT used, window_start FROM client_rate_windows"  # fmt: skip
    before = app_conn.execute(windows).fetchall()
    # Before: the late request reset each window to its own second with a count of 1.
    assert asyncio.run(hit()) == ("api_key", False)
    after = app_conn.execute(windows).fetchall()
    assert [used for used, _ in after] == [6, 10]
    assert [start for _, start in after] == [start for _, start in before]
