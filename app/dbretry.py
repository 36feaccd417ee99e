"""Running a request's database work again when the database moved under it.

A switchover or failover of the cluster (docs/ha.md), or pgBouncer or PostgreSQL restarting,
ends the connections a request holds: the database route closes the old primary's sessions,
a demoted primary refuses writes (read-only), a server shutting down says so (57P0x). Such a
request did nothing that survives, or committed whole: an order runs in one transaction with
its idempotency key's completion (app.orders). So the order is run again on a fresh
connection, which the route sends to the new primary: the client sees no failure, and an
order that did commit is answered from its completed key (a replay of the same answer).

Only these errors are retried, for at most `APP_DB_RETRY_SECONDS` and within the request's
budget (app.main.within_budget): a database that stays away is still answered 503. A wait
for a pooled connection that ran out (PoolTimeout) is not retried: it already waited.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

from app import metrics
from sparkops import defaults

log = logging.getLogger("spark.app")

T = TypeVar("T")

# SQLSTATEs of a server going away or refusing writes; a connection lost without an answer
# has no SQLSTATE at all (an OperationalError with sqlstate None).
RETRYABLE_SQLSTATES = frozenset(
    {
        "25006",  # read_only_sql_transaction: a demoted primary (or a replica) took the write
        "57P01",  # admin_shutdown: the server is stopping (switchover, restart)
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: starting up or shutting down
        "08000",  # connection_exception
        "08003",  # connection_does_not_exist
        "08006",  # connection_failure
    }
)
# The pool's reconnection after a failed connect: psycopg_pool waits 1 s, then doubles (1, 2,
# 4 s...). A switchover's gap is a few seconds: with those waits the pool's next try could
# come 4 s after the new primary was reachable, and requests waiting for a connection ran
# out of time (503 after the 5 s wait, seen in tests/ha). From 0.2 s, x1.5: a try within
# about a second and a half of the database's return for a gap of up to ten seconds.
RECONNECT_FIRST_DELAY_SECONDS = 0.2
RECONNECT_BACKOFF = 1.5
FIRST_PAUSE_SECONDS = 0.05
MAX_PAUSE_SECONDS = 0.5


def reconnect_sooner() -> None:
    """psycopg_pool's backoff between reconnection attempts, for every pool of this process
    (class attributes: the pool has no option for them)."""
    AttemptWithBackoff.INITIAL_DELAY = RECONNECT_FIRST_DELAY_SECONDS
    AttemptWithBackoff.DELAY_BACKOFF = RECONNECT_BACKOFF


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, PoolTimeout):
        return False
    if not isinstance(exc, psycopg.Error):
        return False
    if exc.sqlstate is None:
        return isinstance(exc, psycopg.OperationalError)
    return exc.sqlstate in RETRYABLE_SQLSTATES


async def run(
    pool: AsyncConnectionPool,
    work: Callable[[psycopg.AsyncConnection], Awaitable[T]],
    *,
    before_retry: Callable[[psycopg.AsyncConnection], Awaitable[None]] | None = None,
    seconds: float = defaults.APP_DB_RETRY_SECONDS,
    what: str = "request",
) -> T:
    """`work(conn)` on a pooled connection; again on a fresh one after a retryable error,
    for at most `seconds`. `before_retry(conn)` runs first on the fresh connection (the
    order's: give back an idempotency key the lost connection may have left in flight)."""
    deadline = time.monotonic() + seconds
    pause = FIRST_PAUSE_SECONDS
    attempt = 1
    while True:
        try:
            async with pool.connection() as conn:
                if attempt > 1 and before_retry is not None:
                    await before_retry(conn)
                return await work(conn)
        except psycopg.Error as exc:
            if not retryable(exc) or time.monotonic() + pause > deadline:
                raise
            metrics.DB_RETRIES.labels(what).inc()
            log.warning(
                "%s: database connection lost or read-only (%s: %s); running it again on a "
                "fresh connection (attempt %d)",
                what, exc.sqlstate or "no SQLSTATE", str(exc).strip()[:120], attempt + 1,
            )  # fmt: skip
            # The other idle connections went the same way: check them all in the background
            # rather than find each dead one with a request.
            _check_soon(pool)
        await asyncio.sleep(pause)
        pause = min(pause * 2, MAX_PAUSE_SECONDS)
        attempt += 1


_checking: set[int] = set()


def _check_soon(pool: AsyncConnectionPool) -> None:
    if id(pool) in _checking:
        return
    _checking.add(id(pool))

    async def check() -> None:
        try:
            await pool.check()
        except Exception:  # a best effort: the requests run again anyway
            log.debug("pool check failed", exc_info=True)
        finally:
            _checking.discard(id(pool))

    task = asyncio.ensure_future(check())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


_tasks: set[asyncio.Task] = set()
