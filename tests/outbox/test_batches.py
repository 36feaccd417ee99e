"""Batches of runs: one aggregate's consecutive events go out in one publish call, in order;
a failure mid-run stops that run there (what came before stays delivered, the rest waits
behind the failed event); Redis takes a batch in one script call and reports each run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from app.outbox.publishers import Publisher, PublishError, RedisStreamPublisher
from app.outbox.settings import DispatcherSettings
from app.outbox.store import OutboxEvent
from sparkops.wait import wait_until
from tests.conftest import connect_app
from tests.outbox.support import (
    DispatcherThread,
    check_stream,
    claimed_count,
    insert_events,
    outbox_counts,
    read_stream,
)

AGGREGATES = 4
PER_AGGREGATE = 40
EVENTS = AGGREGATES * PER_AGGREGATE
CONFIG = DispatcherSettings(
    # One claim loop: these tests read what each publish call carried, and two loops
    # starting together may split the first batch between them (tests/outbox/test_workers.py
    # covers several loops).
    workers=1,
    batch_size=1000,
    max_per_aggregate=50,
    backoff_base=0.01,
    backoff_cap=0.05,
    poll_interval=0.02,
    stats_interval=0.1,
    lease_seconds=10,
    lease_safety_seconds=1,
    publish_timeout=2,
)


class Recording(RedisStreamPublisher):
    """The real Redis publisher, noting the run lengths of each call; with `poison`, refuses
    that event (publishing its run's events before it) `refusals` times."""

    def __init__(self, url: str, poison: str | None = None, refusals: int = 0) -> None:
        super().__init__(url)
        self.calls: list[list[int]] = []
        self.poison, self.refusals = poison, refusals

    async def publish_runs(self, runs, *, timeout, keep_going=lambda: True):
        self.calls.append([len(run) for run in runs])
        cut = [len(run) for run in runs]
        if self.refusals > 0:
            for n, run in enumerate(runs):
                ids = [e.event_id for e in run]
                if self.poison in ids:
                    cut[n] = ids.index(self.poison)
                    self.refusals -= 1
        outcomes = await super().publish_runs(
            [run[:c] for run, c in zip(runs, cut, strict=True)],
            timeout=timeout,
            keep_going=keep_going,
        )
        return [
            (count, PublishError("refused (test)")) if c < len(run) else (count, error)
            for run, c, (count, error) in zip(runs, cut, outcomes, strict=True)
        ]


def drain(stack, publisher: Recording) -> None:
    with (
        DispatcherThread(stack.app_conninfo(), lambda: publisher, "batches", CONFIG),
        connect_app(stack) as conn,
    ):
        wait_until(
            lambda: outbox_counts(conn).get("delivered", 0) == EVENTS,
            timeout=60,
            what=f"{EVENTS} events delivered",
        )


def test_a_batch_publishes_each_aggregates_run_in_order_in_one_call(
    clean_db, redis_server, redis_client
):
    with connect_app(clean_db) as conn:
        inserted = insert_events(conn, EVENTS, AGGREGATES)
    publisher = Recording(redis_server.url)
    drain(clean_db, publisher)
    # One call took every aggregate's whole run: 40 events of each, in one round trip.
    assert publisher.calls[0] == [PER_AGGREGATE] * AGGREGATES, publisher.calls
    check = check_stream(read_stream(redis_client), inserted)
    assert not check.missing and not check.unknown
    assert check.duplicates == 0 and check.order_violations == []
    with connect_app(clean_db) as conn:
        assert claimed_count(conn) == 0


def test_a_failure_mid_run_keeps_what_came_before_and_holds_back_what_follows(
    clean_db, redis_server, redis_client
):
    with connect_app(clean_db) as conn:
        inserted = insert_events(conn, EVENTS, AGGREGATES)
    blocked = [e for e in inserted if e.aggregate_id == "agg-1"]
    poison = blocked[15]
    publisher = Recording(redis_server.url, poison=poison.event_id, refusals=2)
    drain(clean_db, publisher)

    entries = read_stream(redis_client)
    check = check_stream(entries, inserted)
    assert not check.missing and check.duplicates == 0 and check.order_violations == []
    # The first call delivered the 15 events before the poison and every other aggregate's
    # run; nothing after the poison went out before it (the order check above), and the
    # retries published only what was left of agg-1.
    assert publisher.calls[0] == [PER_AGGREGATE] * AGGREGATES, publisher.calls
    later = [n for call in publisher.calls[1:] for n in call]
    assert later and max(later) <= PER_AGGREGATE - 15, publisher.calls
    with connect_app(clean_db) as conn:
        attempts, error = conn.execute(
            "SELECT attempts, last_error FROM outbox_events WHERE event_id = %s",
            (poison.event_id,),
        ).fetchone()
        assert attempts == 2 and "refused (test)" in error
        assert conn.execute("SELECT max(attempts) FROM outbox_events").fetchone()[0] == 2
        assert claimed_count(conn) == 0


def event(n: int, aggregate: str) -> OutboxEvent:
    created = datetime(2026, 12, 1, tzinfo=UTC)
    return OutboxEvent(n, f"e-{n}", "order", aggregate, "order.created", '{"n": 1}', 0, created)


def test_the_redis_script_reports_a_refusal_for_each_run(redis_server, redis_client):
    redis_client.set("not-a-stream", "x")  # XADD on it is refused: WRONGTYPE

    async def go():
        publisher = RedisStreamPublisher(redis_server.url, "not-a-stream")
        try:
            runs = [[event(1, "a"), event(2, "a")], [event(3, "b")]]
            return await publisher.publish_runs(runs, timeout=5)
        finally:
            await publisher.aclose()

    outcomes = asyncio.run(go())
    assert [count for count, _ in outcomes] == [0, 0]
    assert all(isinstance(e, PublishError) and "WRONGTYPE" in str(e) for _, e in outcomes)
    assert redis_client.get("not-a-stream") == b"x"


class FailsOn(Publisher):
    """Pure logic of the default (rounds): records what it was asked, fails chosen events."""

    def __init__(self, failing: set[int]) -> None:
        self.failing, self.seen = failing, []

    async def publish(self, event: OutboxEvent) -> None:
        self.seen.append(event.id)
        if event.id in self.failing:
            raise PublishError(f"no {event.id}")


def test_rounds_stop_a_run_at_its_first_failure_and_carry_on_with_the_others():
    runs = [[event(1, "a"), event(2, "a"), event(3, "a")], [event(4, "b"), event(5, "b")]]
    publisher = FailsOn({2})
    outcomes = asyncio.run(publisher.publish_runs(runs, timeout=5))
    assert [count for count, _ in outcomes] == [1, 2]
    assert isinstance(outcomes[0][1], PublishError) and outcomes[1][1] is None
    assert 3 not in publisher.seen  # nothing after a failure is sent
    stopped = asyncio.run(FailsOn(set()).publish_runs(runs, timeout=5, keep_going=lambda: False))
    assert stopped == [(0, None), (0, None)]
