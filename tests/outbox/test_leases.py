"""Leases: a claim holds an aggregate until it is settled or its lease runs out; then another
dispatcher takes over, and the late holder's settlement cannot undo the new holder's."""

from __future__ import annotations

import asyncio

import psycopg

from app.outbox.settings import REDIS_STREAM
from app.outbox.store import OutboxStore, app_pool
from tests.conftest import connect_app
from tests.outbox.support import insert_events

CLAIM = {"batch_size": 100, "max_per_aggregate": 10}


def test_lease_blocks_others_until_it_runs_out(clean_db):
    with connect_app(clean_db) as conn:
        inserted = insert_events(conn, 10, 2)

    async def scenario():
        pool = app_pool(clean_db.app_conninfo())
        await pool.open(wait=True)
        a, b = OutboxStore(pool), OutboxStore(pool)
        try:
            first = await a.claim("A", lease_seconds=1.0, **CLAIM)
            # While A holds both heads, B gets nothing: not the heads, not what is behind them.
            blocked = await b.claim("B", lease_seconds=30.0, **CLAIM)
            deadline = asyncio.get_running_loop().time() + 10
            taken = []
            while not taken and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)  # polling the lease's expiry, bounded by the deadline
                taken = await b.claim("B", lease_seconds=30.0, **CLAIM)
            heads = [e.id for e in first if e.id in {i.id for i in inserted[:2]}]
            late = await a.mark_delivered(heads, "A")  # A lost its lease: no effect on heads
            released = await b.release([e.id for e in taken], "B")
            return first, blocked, taken, late, released
        finally:
            await pool.close()

    first, blocked, taken, late, released = asyncio.run(scenario())
    assert [e.id for e in first] == [e.id for e in inserted]  # both runs, in id order
    assert blocked == []
    assert [e.id for e in taken] == [e.id for e in inserted]  # taken over after expiry
    assert late == 0
    assert released == 2  # only the heads carry a lease
    with connect_app(clean_db) as conn:
        unclaimed = conn.execute(
            "SELECT count(*) FROM outbox_events WHERE status = 'pending' AND claimed_by IS NULL"
        ).fetchone()[0]
    assert unclaimed == 10


def test_leases_a_failed_batch_left_behind_are_given_back_at_once(clean_db, redis_client):
    """A claim that committed but whose answer never came back (the database restarted under
    it) leaves its heads leased to this dispatcher. Nothing of its own is in flight between
    batches, so it gives them back before its next claim: the events go out within seconds,
    not after the lease (30 s here)."""
    from app.outbox.dispatcher import Dispatcher
    from app.outbox.publishers import RedisStreamPublisher
    from app.outbox.settings import DispatcherSettings

    with connect_app(clean_db) as conn:
        insert_events(conn, 20, 4)

    async def scenario():
        pool = app_pool(clean_db.app_conninfo())
        await pool.open(wait=True)
        store = OutboxStore(pool)
        real_claim, lost = store.claim, []

        async def claim_whose_answer_is_lost(*args, **kwargs):
            events = await real_claim(*args, **kwargs)
            # The first claim that leased something (with several loops, another loop's
            # claim may come back first, empty: the first one took every aggregate).
            if not lost and events:
                lost.append(len(events))
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return events

        store.claim = claim_whose_answer_is_lost
        publisher = RedisStreamPublisher(_url(redis_client))
        config = DispatcherSettings(lease_seconds=30.0, poll_interval=0.05)
        dispatcher = Dispatcher(store, publisher, "A", config)
        task = asyncio.create_task(dispatcher.run())
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            while loop.time() - started < 10:  # bounded: well inside the 30 s lease
                if (await store.stats()).pending == 0:
                    break
                await asyncio.sleep(0.05)
            return lost, loop.time() - started
        finally:
            dispatcher.stop.set()
            await task
            await publisher.aclose()
            await pool.close()

    lost, seconds = asyncio.run(scenario())
    assert lost and lost[0] > 0  # the lost claim had leased events
    assert seconds < 5, seconds
    with connect_app(clean_db) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM outbox_events WHERE status = 'delivered'"
            ).fetchone()[0]
            == 20
        )
    assert redis_client.xlen(REDIS_STREAM) >= 20


def _url(client) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"
