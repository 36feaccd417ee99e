"""One dispatcher process, several claim loops (three by default): each loop holds leases
under its own owner, the loops publish at the same time, every event goes out once and in
per-aggregate order, and a restart under the name takes back every loop's leases, no one else's."""

from __future__ import annotations

import asyncio
import time

from app.outbox.dispatcher import Dispatcher
from app.outbox.publishers import ConsolePublisher, Publisher, RedisStreamPublisher
from app.outbox.settings import WORKERS, DispatcherSettings
from app.outbox.store import OutboxStore, app_pool
from sparkops.wait import wait_until
from tests.conftest import connect_app
from tests.outbox.support import DispatcherThread, check_stream, insert_events, read_stream

EVENTS = 2000
AGGREGATES = 100
PUBLISH_PAUSE_SECONDS = 0.05


class Unhurried(Publisher):
    """A real Redis publisher that takes a moment per batch, as a remote one would: long
    enough for the other loop's batch to be seen in flight at the same time."""

    def __init__(self, inner: Publisher) -> None:
        self.inner = inner
        self.name = inner.name

    async def publish(self, event) -> None:
        await self.inner.publish(event)

    async def publish_runs(self, runs, *, timeout, keep_going):
        await asyncio.sleep(PUBLISH_PAUSE_SECONDS)
        return await self.inner.publish_runs(runs, timeout=timeout, keep_going=keep_going)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_the_default_is_three_claim_loops():
    assert WORKERS == 3 and DispatcherSettings().workers == 3


def test_two_loops_publish_at_once_each_event_once_in_aggregate_order(
    clean_db, redis_server, redis_client
):
    with connect_app(clean_db) as conn:
        inserted = insert_events(conn, EVENTS, AGGREGATES)
    config = DispatcherSettings(
        workers=2, batch_size=100, max_per_aggregate=10, poll_interval=0.02, stats_interval=0.1
    )
    holders_seen: set[frozenset[str]] = set()

    def make_publisher():
        return Unhurried(RedisStreamPublisher(redis_server.url))

    with connect_app(clean_db) as conn:
        with DispatcherThread(clean_db.app_conninfo(), make_publisher, "pair", config):

            def drained() -> bool:
                holders = conn.execute(
                    "SELECT DISTINCT claimed_by FROM outbox_events WHERE claimed_until > now()"
                ).fetchall()
                holders_seen.add(frozenset(h for (h,) in holders))
                return conn.execute(
                    "SELECT count(*) = 0 FROM outbox_events WHERE status = 'pending'"
                ).fetchone()[0]

            wait_until(drained, timeout=60, what="the backlog drained", interval=0.01)
        leftover = conn.execute(
            "SELECT count(*) FROM outbox_events WHERE claimed_by IS NOT NULL"
        ).fetchone()[0]
    # Both loops held leases at one moment, each under its own owner, and nobody else did.
    assert frozenset({"pair", "pair/1"}) in holders_seen, holders_seen
    assert set().union(*holders_seen) == {"pair", "pair/1"}
    check = check_stream(read_stream(redis_client), inserted)
    assert not check.missing and not check.unknown
    assert check.order_violations == []
    assert check.duplicates == 0
    assert leftover == 0  # a clean stop gives every loop's leases back


def test_a_restart_under_the_name_takes_back_every_loops_leases_and_no_one_elses(clean_db):
    with connect_app(clean_db) as conn:
        insert_events(conn, 40, 4)  # agg-0 .. agg-3
    claim = {"batch_size": 10, "max_per_aggregate": 10, "lease_seconds": 30.0}

    async def scenario() -> dict[str, int]:
        pool = app_pool(clean_db.app_conninfo(), max_size=3)
        await pool.open(wait=True)
        try:
            store = OutboxStore(pool)
            # A predecessor "app" that ran three loops died holding leases under each; a
            # neighbour whose name starts the same ("app2") holds one too.
            for owner in ("app", "app/1", "app/2", "app2"):
                assert len(await store.claim(owner, **claim)) == 10
            stop = asyncio.Event()
            stop.set()  # started and stopped at once: only its start and stop touch leases
            restarted = Dispatcher(
                store, ConsolePublisher(), "app", DispatcherSettings(workers=2),
                recover_own_leases=True, stop=stop,
            )  # fmt: skip
            await restarted.run()
        finally:
            await pool.close()
        with connect_app(clean_db) as conn:
            return dict(
                conn.execute(
                    "SELECT claimed_by, count(*) FROM outbox_events "
                    "WHERE claimed_until > now() GROUP BY claimed_by"
                ).fetchall()
            )

    started = time.monotonic()
    assert asyncio.run(scenario()) == {"app2": 1}
    assert time.monotonic() - started < 30  # at once, not after the lease
