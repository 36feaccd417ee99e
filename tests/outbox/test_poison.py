"""A poison event is dead-lettered after its attempts, keeps its error, blocks only its own
aggregate's later events; every other aggregate keeps flowing."""

from __future__ import annotations

from app.outbox.publishers import Publisher, PublishError, RedisStreamPublisher
from app.outbox.settings import DispatcherSettings
from sparkops.metric_names import OUTBOX_DEAD_LETTERED, OUTBOX_DEAD_LETTERS, OUTBOX_RETRIED
from sparkops.wait import wait_until
from tests.conftest import connect_app
from tests.outbox.support import DispatcherThread, check_stream, insert_events, read_stream

EVENTS = 300
AGGREGATES = 30
MAX_ATTEMPTS = 3


class FailsFor(Publisher):
    """Refuses one event, forwards the rest to a real publisher."""

    def __init__(self, inner: Publisher, poison_event_id: str) -> None:
        self.inner = inner
        self.name = inner.name
        self.poison = poison_event_id
        self.refusals = 0

    async def publish(self, event) -> None:
        if event.event_id == self.poison:
            self.refusals += 1
            raise PublishError("schema registry rejected the payload (poison)")
        await self.inner.publish(event)

    async def aclose(self) -> None:
        await self.inner.aclose()


def sample(name: str, **labels) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_poison_event_is_dead_lettered_and_others_flow(clean_db, redis_server, redis_client):
    with connect_app(clean_db) as conn:
        inserted = insert_events(conn, EVENTS, AGGREGATES)
        blocked_agg = "agg-5"
        agg_events = [e for e in inserted if e.aggregate_id == blocked_agg]
        poison = agg_events[2]  # two before it go out, the rest wait behind it
        config = DispatcherSettings(
            max_attempts=MAX_ATTEMPTS,
            backoff_base=0.01,
            backoff_cap=0.05,
            poll_interval=0.02,
            stats_interval=0.1,
            lease_seconds=10,
            lease_safety_seconds=1,
            publish_timeout=2,
        )
        dead_before = sample(OUTBOX_DEAD_LETTERED, publisher="redis")
        retried_before = sample(OUTBOX_RETRIED, publisher="redis")
        holder = {}

        def make_publisher():
            holder["p"] = FailsFor(RedisStreamPublisher(redis_server.url), poison.event_id)
            return holder["p"]

        expected_delivered = EVENTS - (len(agg_events) - 2)
        with DispatcherThread(clean_db.app_conninfo(), make_publisher, "poison", config):
            wait_until(
                lambda: conn.execute(
                    "SELECT count(*) FILTER (WHERE status = 'delivered') = %s"
                    " AND count(*) FILTER (WHERE status = 'dead') = 1 FROM outbox_events",
                    (expected_delivered,),
                ).fetchone()[0],
                timeout=30,
                what="every other event delivered and the poison event dead",
            )
            wait_until(lambda: sample(OUTBOX_DEAD_LETTERS) == 1, timeout=5, what="gauge")

        status, attempts, last_error = conn.execute(
            "SELECT status, attempts, last_error FROM outbox_events WHERE event_id = %s",
            (poison.event_id,),
        ).fetchone()
        assert (status, attempts) == ("dead", MAX_ATTEMPTS)
        assert "PublishError: schema registry rejected the payload (poison)" in last_error
        assert holder["p"].refusals == MAX_ATTEMPTS
        later = [e.event_id for e in agg_events[3:]]
        states = conn.execute(
            "SELECT DISTINCT status FROM outbox_events WHERE event_id::text = ANY(%s)", (later,)
        ).fetchall()
        assert states == [("pending",)], "events after a dead letter must wait behind it"

    assert sample(OUTBOX_DEAD_LETTERED, publisher="redis") - dead_before == 1
    assert sample(OUTBOX_RETRIED, publisher="redis") - retried_before == MAX_ATTEMPTS - 1
    entries = read_stream(redis_client)
    check = check_stream(entries, inserted)
    assert check.missing == {poison.event_id, *later}
    assert check.duplicates == 0 and not check.order_violations


def test_a_long_queue_behind_a_dead_letter_stalls_nobody_else(clean_db, redis_server):
    """The head search walks aggregates, not events: thousands of events waiting behind a
    dead letter neither block nor slow the claim of other aggregates' events."""
    with connect_app(clean_db) as conn:
        stuck = insert_events(conn, 3000, 1, prefix="stuck-")
        conn.execute(
            "UPDATE outbox_events SET status = 'dead', last_error = 'poison' WHERE id = %s",
            (stuck[0].id,),
        )
        flowing = insert_events(conn, 200, 20, prefix="flow-")
        config = DispatcherSettings(poll_interval=0.02, stats_interval=0.1)
        with DispatcherThread(
            clean_db.app_conninfo(),
            lambda: RedisStreamPublisher(redis_server.url),
            "stuck",
            config,
        ):
            wait_until(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM outbox_events WHERE status = 'delivered'"
                    ).fetchone()[0]
                    == len(flowing)
                ),
                timeout=20,
                what="the other aggregates' events delivered",
            )
        counts = dict(conn.execute("SELECT status, count(*) FROM outbox_events GROUP BY 1"))
    assert counts == {"delivered": 200, "dead": 1, "pending": 2999}
