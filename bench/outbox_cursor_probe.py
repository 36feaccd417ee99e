"""What the outbox's PostgreSQL side would cost with a per-aggregate cursor instead of a status
per event: a probe for the people who decide (issue 15's outbox target, docs/outbox.md).

The dispatcher today claims and settles each event (app/outbox/store.py): a lease per head, an
UPDATE per event marking it delivered. Its store alone (claim and settle, nothing published)
drains at about a quarter of a pipelined XADD of the same Redis, so no Redis path reaches the
issue's 0.5. The design probed here keeps events immutable and moves the moving parts to one
row per aggregate (`delivered_up_to`, the lease, the head's attempts, dead): a claim leases
aggregates and reads their next events by index range; a settle moves each aggregate's mark
in one UPDATE per aggregate, not per event. The writer then upserts its aggregate's row in the
same statement as the event (`last_event_id`), which costs the order path something: measured
here too.

On one throwaway stack (PostgreSQL, pgBouncer in transaction mode, Redis), with the same
backlog (`--events` over `--aggregates`, the bench's payload), through pgBouncer as the app
role, prints:

1. the store of today alone (bench/outbox_throughput.py's measure), events/s;
2. the probed design's claim and settle alone, events/s (tables in a schema of their own,
   dropped at the end);
3. pipelined XADD of the same Redis, and each store's rate over it: the ceiling of a
   dispatcher built on it with no time spent on Redis;
4. the writer: one event per transaction, as the order path writes it, without and with the
   aggregate row's upsert, ms per transaction.

Figures only; nothing here is the app's code path.

Usage: .venv/bin/python bench/outbox_cursor_probe.py [--events 50000] [--aggregates 200]
           [--writes 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from outbox_throughput import PAYLOAD, measure_raw_xadd, measure_store_alone

from app.outbox import settings
from app.outbox.store import app_pool
from sparkops import defaults
from testkit.redis import RedisServer
from testkit.stack import DbStack

SCHEMA = "outbox_probe"
OWNER = "probe"

SETUP = f"""
DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    event_type     text NOT NULL,
    payload        jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_by_aggregate ON {SCHEMA}.events (aggregate_type, aggregate_id, id);
CREATE TABLE {SCHEMA}.aggregates (
    aggregate_type  text NOT NULL,
    aggregate_id    text NOT NULL,
    last_event_id   bigint NOT NULL,
    delivered_up_to bigint NOT NULL DEFAULT 0,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    dead            boolean NOT NULL DEFAULT false,
    claimed_by      text,
    claimed_until   timestamptz,
    PRIMARY KEY (aggregate_type, aggregate_id)
);
CREATE INDEX aggregates_pending ON {SCHEMA}.aggregates (next_attempt_at)
    WHERE last_event_id > delivered_up_to AND NOT dead;
GRANT USAGE ON SCHEMA {SCHEMA} TO {defaults.ROLE_APP};
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA {SCHEMA} TO {defaults.ROLE_APP};
"""

BACKLOG = f"""
INSERT INTO {SCHEMA}.events (aggregate_type, aggregate_id, event_type, payload)
SELECT 'position', 'acct-' || ((g - 1) %% %(aggregates)s), 'order.filled', %(payload)s::jsonb
FROM generate_series(1, %(count)s) AS g ORDER BY g
"""
MARKS = f"""
INSERT INTO {SCHEMA}.aggregates (aggregate_type, aggregate_id, last_event_id)
SELECT aggregate_type, aggregate_id, max(id) FROM {SCHEMA}.events
GROUP BY aggregate_type, aggregate_id;
"""

# Lease the due aggregates (skipping those another dispatcher holds), read each one's next
# events after its mark by index range, and keep a batch of runs in the order today's claim
# keeps them (every aggregate's first event, then every second, ...). An aggregate leased
# but left out of the batch is released by the settle.
CLAIM = f"""
WITH due AS (
    SELECT a.aggregate_type, a.aggregate_id, a.delivered_up_to
    FROM {SCHEMA}.aggregates a
    WHERE a.last_event_id > a.delivered_up_to AND NOT a.dead
      AND a.next_attempt_at <= now()
      AND (a.claimed_until IS NULL OR a.claimed_until < now())
    ORDER BY a.next_attempt_at
    LIMIT %(aggregates)s
    FOR UPDATE SKIP LOCKED
),
leased AS (
    UPDATE {SCHEMA}.aggregates a
    SET claimed_by = %(owner)s, claimed_until = now() + make_interval(secs => %(lease)s)
    FROM due d
    WHERE a.aggregate_type = d.aggregate_type AND a.aggregate_id = d.aggregate_id
)
SELECT r.id, r.event_id::text, r.aggregate_type, r.aggregate_id, r.event_type,
       r.payload::text, r.created_at
FROM due d
CROSS JOIN LATERAL (
    SELECT e.*, row_number() OVER (ORDER BY e.id) AS pos
    FROM {SCHEMA}.events e
    WHERE e.aggregate_type = d.aggregate_type AND e.aggregate_id = d.aggregate_id
      AND e.id > d.delivered_up_to
    ORDER BY e.id
    -- Only what the batch can take: the batch shared among the leased aggregates, up to
    -- the run limit (reading 50 per aggregate for a batch of 5 each was most of the claim).
    LIMIT least(%(per_aggregate)s,
                ceil(%(batch)s::numeric / greatest((SELECT count(*) FROM due), 1)))::int
) r
ORDER BY r.pos, r.id
LIMIT %(batch)s
"""

# Every aggregate this dispatcher leased: its mark moves to the last event published (or
# stays), its lease ends.
SETTLE = f"""
UPDATE {SCHEMA}.aggregates a
SET delivered_up_to = greatest(a.delivered_up_to, s.upto), attempts = 0,
    claimed_by = NULL, claimed_until = NULL
FROM unnest(%(types)s::text[], %(ids)s::text[], %(uptos)s::bigint[]) AS s(t, i, upto)
WHERE a.aggregate_type = s.t AND a.aggregate_id = s.i AND a.claimed_by = %(owner)s
"""
RELEASE_REST = f"""
UPDATE {SCHEMA}.aggregates SET claimed_by = NULL, claimed_until = NULL
WHERE claimed_by = %(owner)s
"""

WRITE_EVENT = f"""
INSERT INTO {SCHEMA}.events (aggregate_type, aggregate_id, event_type, payload)
VALUES ('position', %(aggregate)s, 'order.filled', %(payload)s)
"""
WRITE_EVENT_AND_MARK = f"""
WITH e AS (
    INSERT INTO {SCHEMA}.events (aggregate_type, aggregate_id, event_type, payload)
    VALUES ('position', %(aggregate)s, 'order.filled', %(payload)s)
    RETURNING id, aggregate_type, aggregate_id
)
INSERT INTO {SCHEMA}.aggregates (aggregate_type, aggregate_id, last_event_id)
SELECT aggregate_type, aggregate_id, id FROM e
ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET last_event_id = EXCLUDED.last_event_id
"""


def prepare(stack: DbStack, events: int, aggregates: int) -> None:
    with psycopg.connect(stack.owner_conninfo(), autocommit=True) as owner:
        owner.execute(SETUP)
        owner.execute(
            BACKLOG,
            {"count": events, "aggregates": aggregates, "payload": json.dumps(PAYLOAD)},
        )
        owner.execute(MARKS)
        owner.execute(f"ANALYZE {SCHEMA}.events")
        owner.execute(f"ANALYZE {SCHEMA}.aggregates")


def drain_by_cursor(stack: DbStack, events: int, batch: int, per_aggregate: int) -> float:
    """The probed claim and settle, as today's store runs its own (an async pool through
    pgBouncer, the rows parsed into Python): events/s."""

    async def drain() -> float:
        pool = app_pool(stack.app_conninfo())
        await pool.open()
        claim_args = {
            "owner": OWNER,
            "lease": settings.LEASE_SECONDS,
            "aggregates": batch // 5,  # runs of 5 with the defaults, as today's claim takes
            "per_aggregate": per_aggregate,
            "batch": batch,
        }
        done = 0
        started = time.perf_counter()
        try:
            while done < events:
                async with pool.connection() as conn:
                    cur = await conn.execute(CLAIM, claim_args)
                    rows = await cur.fetchall()
                if not rows:
                    raise RuntimeError(f"nothing to claim after {done} of {events} events")
                last: dict[tuple[str, str], int] = {}
                for row in rows:  # in id order within an aggregate
                    last[(row[2], row[3])] = row[0]
                async with pool.connection() as conn:
                    await conn.execute(
                        SETTLE,
                        {"owner": OWNER, "types": [k[0] for k in last],
                         "ids": [k[1] for k in last], "uptos": list(last.values())},
                    )  # fmt: skip
                    await conn.execute(RELEASE_REST, {"owner": OWNER})
                done += len(rows)
        finally:
            await pool.close()
        return done / (time.perf_counter() - started)

    return asyncio.run(drain())


def write_cost(stack: DbStack, writes: int, aggregates: int) -> tuple[float, float]:
    """ms per one-event transaction through pgBouncer, without and with the mark's upsert,
    in alternating blocks so both see the same machine."""
    payload = json.dumps(PAYLOAD)
    spent = {WRITE_EVENT: 0.0, WRITE_EVENT_AND_MARK: 0.0}
    with psycopg.connect(stack.app_conninfo(), autocommit=True, prepare_threshold=None) as conn:
        for block in range(10):
            for sql in (WRITE_EVENT, WRITE_EVENT_AND_MARK) if block % 2 else (
                    WRITE_EVENT_AND_MARK, WRITE_EVENT):  # fmt: skip
                started = time.perf_counter()
                for n in range(writes // 10):
                    conn.execute(sql, {"aggregate": f"acct-{n % aggregates}", "payload": payload})
                spent[sql] += time.perf_counter() - started
    return (spent[WRITE_EVENT] / writes * 1000, spent[WRITE_EVENT_AND_MARK] / writes * 1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--aggregates", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=settings.BATCH_SIZE)
    parser.add_argument("--writes", type=int, default=3000)
    args = parser.parse_args()
    with DbStack() as stack, RedisServer() as redis:
        print(f"{args.events} events over {args.aggregates} aggregates, batch "
              f"{args.batch_size}, through pgBouncer as the app role")  # fmt: skip
        today, _claiming, _settling = measure_store_alone(stack, args)
        prepare(stack, args.events, args.aggregates)
        cursor = drain_by_cursor(stack, args.events, args.batch_size, settings.MAX_PER_AGGREGATE)
        raw = measure_raw_xadd(redis, args.events, args.batch_size)
        print(f"  store of today alone (claim + settle per event): {today:9.0f} events/s, "
              f"{today / raw:.2f} of XADD")  # fmt: skip
        print(f"  per-aggregate cursor alone (claim + settle):      {cursor:9.0f} events/s, "
              f"{cursor / raw:.2f} of XADD ({cursor / today:.1f}x today's)")  # fmt: skip
        print(f"  pipelined XADD, redis-py, {args.batch_size} per pipeline:  {raw:9.0f} /s")
        plain, marked = write_cost(stack, args.writes, args.aggregates)
        print(f"  writer, one event per transaction: {plain:.3f} ms; with the aggregate's "
              f"upsert in the same statement {marked:.3f} ms (+{marked - plain:.3f} ms, "
              f"{marked / plain - 1:+.0%})")  # fmt: skip
        with psycopg.connect(stack.owner_conninfo(), autocommit=True) as owner:
            owner.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
