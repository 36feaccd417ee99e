"""Each app host's dispatcher runs under its own name (deploys.app.outbox_name): a dispatcher
starting or stopping on one host releases only its own leases, never the other host's."""

from __future__ import annotations

import asyncio

from app.outbox.dispatcher import Dispatcher
from app.outbox.publishers import ConsolePublisher
from app.outbox.store import OutboxStore, app_pool
from deploys.app import outbox_name
from tests.conftest import connect_app
from tests.outbox.support import insert_events

CLAIM = {"batch_size": 100, "max_per_aggregate": 10, "lease_seconds": 30.0}


def _held(conn, owner: str) -> int:
    return conn.execute(
        "SELECT count(*) FROM outbox_events WHERE claimed_by = %s AND claimed_until > now()",
        (owner,),
    ).fetchone()[0]


def test_a_dispatcher_starting_and_stopping_on_one_host_leaves_the_other_hosts_leases(clean_db):
    first, second = outbox_name("app"), outbox_name("app2")
    assert first != second
    with connect_app(clean_db) as conn:
        insert_events(conn, 6, 3)

    async def start_and_stop(owner: str) -> None:
        """What systemd does to a unit: start `owner`'s dispatcher, then stop it."""
        pool = app_pool(clean_db.app_conninfo())
        await pool.open(wait=True)
        try:
            stop = asyncio.Event()
            dispatcher = Dispatcher(
                OutboxStore(pool), ConsolePublisher(), owner, recover_own_leases=True, stop=stop
            )
            stop.set()  # stopped at once: only its start and stop touch leases
            await dispatcher.run()
        finally:
            await pool.close()

    async def scenario() -> list[int]:
        pool = app_pool(clean_db.app_conninfo())
        await pool.open(wait=True)
        try:
            # The first host's dispatcher is mid-batch: it holds the three heads.
            claimed = await OutboxStore(pool).claim(first, **CLAIM)
            assert len(claimed) == 6
        finally:
            await pool.close()
        held = []
        with connect_app(clean_db) as conn:
            held.append(_held(conn, first))
            await start_and_stop(second)  # the other host restarts its dispatcher
            held.append(_held(conn, first))
            await start_and_stop(first)  # this host's own unit restarts: its claims return
            held.append(_held(conn, first))
        return held

    assert asyncio.run(scenario()) == [3, 3, 0]
