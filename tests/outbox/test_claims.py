"""What one claim takes, on real PostgreSQL: a backlog as a few whole runs (few heads leased,
the next aggregates left for the next claim or another dispatcher), steady traffic as many
short runs, every aggregate in its turn, and aggregates that cannot go walked past."""

from __future__ import annotations

import asyncio
from collections import Counter

from app.outbox import queries
from app.outbox.store import OutboxStore, app_pool
from tests.conftest import connect_app
from tests.outbox.support import insert_events

LEASE = 30.0


def _claims(clean_db, *rounds):
    """Run `rounds` (each: a list of (store index, owner, claim kwargs, settle?)) against two
    stores sharing one pool; return every claim's events."""

    async def scenario():
        pool = app_pool(clean_db.app_conninfo())
        await pool.open(wait=True)
        stores = [OutboxStore(pool), OutboxStore(pool)]
        taken = []
        try:
            for which, owner, kwargs, settle in rounds:
                events = await stores[which].claim(owner, lease_seconds=LEASE, **kwargs)
                taken.append(events)
                if settle:
                    await stores[which].settle(owner, [e.id for e in events], [], [], 20)
            return taken
        finally:
            await pool.close()

    return asyncio.run(scenario())


def _leased(conn) -> dict[str, str]:
    rows = conn.execute(
        "SELECT aggregate_id, claimed_by FROM outbox_events WHERE claimed_until > now()"
    ).fetchall()
    return dict(rows)


def _runs(events) -> list[tuple[str, int]]:
    """(aggregate, events taken) in the order the batch's runs start."""
    counts = Counter(e.aggregate_id for e in events)
    order = sorted(counts, key=lambda agg: min(e.id for e in events if e.aggregate_id == agg))
    return [(agg, counts[agg]) for agg in order]


def test_a_backlog_is_claimed_as_whole_runs_and_only_their_heads_are_leased(clean_db):
    with connect_app(clean_db) as conn:
        insert_events(conn, 1000, 10)  # agg-0 .. agg-9, 100 events each
    [batch] = _claims(clean_db, (0, "A", {"batch_size": 120, "max_per_aggregate": 50}, False))
    assert len(batch) == 120
    assert sorted(Counter(e.aggregate_id for e in batch).items()) == [
        ("agg-0", 50), ("agg-1", 50), ("agg-2", 20),
    ]  # fmt: skip
    for agg in ("agg-0", "agg-1", "agg-2"):  # each run consecutive, from the head
        ids = [e.id for e in batch if e.aggregate_id == agg]
        assert ids == sorted(ids)
    with connect_app(clean_db) as conn:
        assert _leased(conn) == {"agg-0": "A", "agg-1": "A", "agg-2": "A"}
        heads = conn.execute(
            "SELECT min(id) FROM outbox_events WHERE aggregate_id IN ('agg-0', 'agg-1', 'agg-2')"
            " GROUP BY aggregate_id ORDER BY 1"
        ).fetchall()
        leased_ids = conn.execute(
            "SELECT id FROM outbox_events WHERE claimed_until > now() ORDER BY id"
        ).fetchall()
    assert leased_ids == heads  # the heads, not the events behind them


def test_a_second_dispatcher_takes_the_next_aggregates_while_the_first_holds_its_own(clean_db):
    with connect_app(clean_db) as conn:
        insert_events(conn, 1000, 10)
    claim = {"batch_size": 100, "max_per_aggregate": 50}
    first, second = _claims(clean_db, (0, "A", claim, False), (1, "B", claim, False))
    a_aggs = {e.aggregate_id for e in first}
    b_aggs = {e.aggregate_id for e in second}
    assert a_aggs == {"agg-0", "agg-1"} and b_aggs == {"agg-2", "agg-3"}
    assert len(first) == len(second) == 100
    with connect_app(clean_db) as conn:
        assert _leased(conn) == {"agg-0": "A", "agg-1": "A", "agg-2": "B", "agg-3": "B"}


def test_every_aggregate_gets_its_turn_before_any_gets_a_second(clean_db):
    with connect_app(clean_db) as conn:
        insert_events(conn, 1000, 10)
    claim = {"batch_size": 150, "max_per_aggregate": 50}
    batches = _claims(clean_db, *[(0, "A", claim, True) for _ in range(5)])
    order = [agg for batch in batches for agg, _ in _runs(batch)]
    # 10 aggregates x 50 events in the first five claims: each once, in key order, then wrap.
    assert order[:10] == [f"agg-{n}" for n in range(10)]
    assert order[10:] == ["agg-0", "agg-1", "agg-2", "agg-3", "agg-4"]
    assert all(len(batch) == 150 for batch in batches[:3])


def test_steady_traffic_is_claimed_as_many_short_runs(clean_db):
    with connect_app(clean_db) as conn:
        insert_events(conn, 10, 10)  # one event in each of ten aggregates
    [batch] = _claims(clean_db, (0, "A", {"batch_size": 100, "max_per_aggregate": 50}, False))
    assert sorted(e.aggregate_id for e in batch) == [f"agg-{n}" for n in range(10)]
    with connect_app(clean_db) as conn:
        assert len(_leased(conn)) == 10


def test_the_walk_passes_aggregates_that_cannot_go_and_counts_nothing_for_them(clean_db):
    with connect_app(clean_db) as conn:
        insert_events(conn, 40, 4)  # agg-0 .. agg-3, 10 events each
        heads = dict(
            conn.execute(
                "SELECT aggregate_id, min(id) FROM outbox_events GROUP BY aggregate_id"
            ).fetchall()
        )
        # agg-0's head is dead (its aggregate waits), agg-1's backs off, agg-2's is another
        # dispatcher's: only agg-3 can go.
        conn.execute(
            "UPDATE outbox_events SET status = 'dead', last_error = 'poison' WHERE id = %s",
            (heads["agg-0"],),
        )
        conn.execute(
            "UPDATE outbox_events SET next_attempt_at = now() + interval '1 hour' WHERE id = %s",
            (heads["agg-1"],),
        )
        conn.execute(
            "UPDATE outbox_events SET claimed_by = 'other', "
            "claimed_until = now() + interval '1 minute' WHERE id = %s",
            (heads["agg-2"],),
        )
    [batch] = _claims(clean_db, (0, "A", {"batch_size": 5, "max_per_aggregate": 50}, False))
    assert {e.aggregate_id for e in batch} == {"agg-3"}
    assert len(batch) == 5  # the batch filled from the one aggregate that can go
    assert batch[0].id == heads["agg-3"]


def test_a_batch_delivered_whole_is_settled_except_what_another_dispatcher_took_over(clean_db):
    with connect_app(clean_db) as conn:
        insert_events(conn, 6, 2)  # agg-0, agg-1: three events each

    async def scenario() -> int:
        pool = app_pool(clean_db.app_conninfo())
        await pool.open(wait=True)
        try:
            store = OutboxStore(pool)
            batch = await store.claim("A", batch_size=10, max_per_aggregate=10, lease_seconds=LEASE)
            assert len(batch) == 6
            with connect_app(clean_db) as conn:
                # A's lease on agg-1's head ran out and B took it over.
                conn.execute(
                    "UPDATE outbox_events SET claimed_by = 'B' WHERE id = (SELECT min(id) "
                    "FROM outbox_events WHERE aggregate_id = 'agg-1')"
                )
            marked, outcome = await store.settle("A", [e.id for e in batch], [], [], 20)
            assert outcome.retried == [] and outcome.dead == []
            return marked
        finally:
            await pool.close()

    assert asyncio.run(scenario()) == 5
    with connect_app(clean_db) as conn:
        rows = conn.execute(
            "SELECT status, claimed_by, count(*) FROM outbox_events GROUP BY 1, 2 ORDER BY 1"
        ).fetchall()
    assert rows == [("delivered", None, 5), ("pending", "B", 1)]


def _pages(conn) -> dict[int, int]:
    """Each pending event's heap page (the block of its current row version)."""
    rows = conn.execute(
        "SELECT id, (ctid::text::point)[0]::bigint FROM outbox_events WHERE status = 'pending'"
    ).fetchall()
    return dict(rows)


def test_a_claim_over_many_heads_leases_each_in_place(clean_db):
    """Every event a head (one per aggregate): the claim locks each by its primary key and
    leases it in place: the new row version on the old one's page, which for an UPDATE of
    columns no index holds is a heap-only update, no index entry written (the table keeps
    room on its pages, migration 0016)."""
    with connect_app(clean_db) as conn:
        inserted = insert_events(conn, 300, 300)
        before = _pages(conn)
        heads = conn.execute(
            queries.FIND_HEADS_FROM_START,
            {"budget": 300, "max_per_aggregate": 10, "max_visits": 6000},
        ).fetchall()
        assert len(heads) == 300 and all(eligible for _, _, _, eligible, _, _ in heads)
        claimed = conn.execute(
            queries.CLAIM,
            {"candidates": [h[0] for h in heads], "owner": "A", "batch_size": 300,
             "max_per_aggregate": 10, "lease": LEASE},
        ).fetchall()  # fmt: skip
        leased = conn.execute(
            "SELECT count(*) FROM outbox_events WHERE claimed_by = 'A'"
        ).fetchone()[0]
        after = _pages(conn)
    assert sorted(row[0] for row in claimed) == sorted(e.id for e in inserted)
    assert leased == 300
    moved = {event for event, page in before.items() if after[event] != page}
    assert not moved, f"{len(moved)} of 300 leases moved their row to another page"
