"""Runs the outbox's SQL (`app.outbox.queries`) through pgBouncer in transaction mode.

How a claim keeps per-aggregate order with several dispatchers
---------------------------------------------------------------
An event is *eligible* when it is pending, due (`next_attempt_at <= now()`), not leased (or
its lease ran out), and no earlier event of its aggregate is pending or dead. So at any
moment only the oldest undelivered event of an aggregate, its *head*, can be claimed.

A claim takes two statements, each its own short transaction (no session state):

1. find candidate heads: walk the aggregates that have pending events (a skip scan of the
   pending-by-aggregate index, one descent per aggregate, resuming where the previous claim
   stopped so every aggregate gets its turn) and keep those whose head is due, not leased
   and not behind a dead letter, counting the events each one's run would give, until the
   runs fill the batch. Cost grows with the aggregates visited, not with pending events: a
   long backlog, or events stuck behind a dead letter, are never read. A backlog is thus
   claimed as a few whole runs (up to the run limit each), leaving the aggregates after
   them to the next claim or to another dispatcher; steady traffic as many short runs;
2. lock the candidates that are still eligible with `FOR UPDATE SKIP LOCKED` (every
   condition checked again, including "no earlier pending event"): a head another
   dispatcher is claiming right now is skipped, not waited for; if that dispatcher has
   already committed its lease, PostgreSQL re-checks the row's own conditions on the new
   version and the lease excludes it, so one head is never claimed twice. Then take, head
   by head in the walk's order, the next pending events of its aggregate (a contiguous run
   in id order, up to the run limit) until the batch is full; nobody else can take them,
   because their head is pending and ours. Lease only the heads the batch takes from
   (`claimed_by`, `claimed_until`; a head locked but not needed is free again at commit)
   and return the runs.

The dispatcher then publishes outside any transaction, each run strictly in order and
stopping at the first failure; it marks what it published delivered and reschedules or
releases the rest. A later event becomes a head only when every earlier one is delivered
(committed), so two dispatchers can never publish one aggregate out of order, short of a
lease running out while its holder is still publishing; the dispatcher stops publishing a
batch well before its lease ends (`LEASE_SAFETY_SECONDS`) to keep that from happening.

Leases instead of a long transaction: holding `FOR UPDATE` locks while publishing would
pin a server connection (pgBouncer transaction mode) for the length of a Redis call, and a
dispatcher killed mid-batch would leave its rows locked until PostgreSQL notices the dead
client. A lease costs one extra UPDATE and makes recovery explicit: after a crash the events
are claimable again when the lease runs out, or at once when the restarted dispatcher, under
the same name, releases its predecessor's leases.

Dead letters block their aggregate: an event that exhausted its attempts is parked as
`dead`, and its aggregate's later events wait (they would otherwise arrive without the one
before them). The dead-letter gauge and alert surface it; an operator fixes the cause and
requeues the dead event (`sparkops outbox requeue`). Other aggregates keep flowing.

Order is id order, i.e. the order in which events were inserted. Writers of one aggregate
serialize on the aggregate's own row (the order, the position), so within an aggregate
insertion order is commit order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from psycopg_pool import AsyncConnectionPool

from app.outbox import queries as q


class OutboxEvent(NamedTuple):
    """One claimed event. The payload stays the JSON text PostgreSQL stored: decimals in it
    are never parsed into floats on the way through. A named tuple: a claim builds a thousand
    at a time, and a frozen dataclass costs several times as much to build."""

    id: int
    event_id: str
    aggregate_type: str
    aggregate_id: str
    event_type: str
    payload_json: str
    attempts: int
    created_at: datetime

    @property
    def aggregate(self) -> tuple[str, str]:
        return (self.aggregate_type, self.aggregate_id)


@dataclass(frozen=True)
class Failure:
    event: OutboxEvent
    error: str
    delay: float  # seconds until the next attempt


@dataclass(frozen=True)
class FailOutcome:
    retried: list[int] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Stats:
    pending: int
    in_flight: int
    oldest_pending_age: float
    dead: int


@dataclass(frozen=True)
class PurgePlan:
    events: int
    oldest: datetime | None
    newest: datetime | None


def id_array(ids: list[int]) -> str:
    """PostgreSQL's literal of a bigint array, `{1,2,3}`: one join, where psycopg would dump
    the list element by element in Python (its array dumper showed in the dispatcher's
    profile)."""
    return "{" + ",".join(map(str, ids)) + "}"


def app_pool(conninfo: str, *, max_size: int = 2, **kwargs) -> AsyncConnectionPool:
    """A pool for pgBouncer in transaction mode: autocommit, no server-side prepared
    statements (each statement may land on another server connection)."""
    return AsyncConnectionPool(
        conninfo,
        min_size=1,
        max_size=max_size,
        kwargs={"autocommit": True, "prepare_threshold": None},
        open=False,
        **kwargs,
    )


class OutboxStore:
    """Owns the pool; every statement is its own short transaction (autocommit)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        # Where each owner's last head search stopped (aggregate key); absent: from the
        # start. One per owner: two loops sharing one cursor would walk into the same heads.
        self._cursors: dict[str, tuple[str, str]] = {}

    async def _execute(self, query: str, params: dict) -> tuple[list[tuple], int]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(query, params)
            # Rows are fetched here, while we still hold the connection.
            rows = await cur.fetchall() if cur.description else []
            return rows, cur.rowcount

    async def find_heads(
        self, budget: int, max_per_aggregate: int, after: tuple[str, str] | None
    ) -> tuple[list[tuple[int, str, str]], int, tuple[str, str] | None]:
        """Claimable heads whose runs add up to `budget` events, walking aggregates in key
        order after `after`: the heads, the events their runs hold (up to the run limit
        each), and where the walk stopped if it stopped before the end (the budget filled,
        or too many aggregates visited), else None."""
        params = {
            "budget": budget,
            "max_per_aggregate": max_per_aggregate,
            "max_visits": budget * q.MAX_VISITS_PER_EVENT,
        }
        if after is None:
            rows, _ = await self._execute(q.FIND_HEADS_FROM_START, params)
        else:
            params.update(after_type=after[0], after_id=after[1])
            rows, _ = await self._execute(q.FIND_HEADS_AFTER, params)
        heads = [(head, agg_type, agg_id) for head, agg_type, agg_id, eligible, _, _ in rows
                 if eligible]  # fmt: skip
        if not rows:
            return [], 0, None
        total = rows[-1][5]
        cut = total >= budget or len(rows) >= params["max_visits"]
        return heads, total, (rows[-1][1], rows[-1][2]) if cut else None

    async def claim(
        self, owner: str, *, batch_size: int, max_per_aggregate: int, lease_seconds: float
    ) -> list[OutboxEvent]:
        """Find heads (resuming the walk where this owner's last claim stopped), then, in one
        statement, lock those still eligible, lease the ones the batch takes from, and return
        their runs, in id order."""
        cursor = self._cursors.pop(owner, None)
        heads, total, stopped = await self.find_heads(batch_size, max_per_aggregate, cursor)
        if stopped is None and cursor is not None and total < batch_size:
            # Wrap around: the aggregates before the cursor fill what is left, and the next
            # claim starts after the last of them.
            seen = {h[0] for h in heads}
            more, _, stopped = await self.find_heads(batch_size - total, max_per_aggregate, None)
            heads += [h for h in more if h[0] not in seen]
        if stopped is not None:
            self._cursors[owner] = stopped
        if not heads:
            return []
        params = {
            "candidates": [h[0] for h in heads],
            "owner": owner,
            "batch_size": batch_size,
            "max_per_aggregate": max_per_aggregate,
            "lease": lease_seconds,
        }
        rows, _ = await self._execute(q.CLAIM, params)
        events = [OutboxEvent(*row) for row in rows]
        events.sort(key=lambda e: e.id)
        return events

    async def settle(
        self,
        owner: str,
        delivered: list[int],
        failures: list[Failure],
        released: list[int],
        max_attempts: int,
    ) -> tuple[int, FailOutcome]:
        """Record a batch's outcome in one statement (queries.SETTLE, or MARK_DELIVERED
        when every event was delivered): how many of `delivered` were still ours to mark, and
        which failures were retried or parked."""
        if not failures and not released:
            return await self.mark_delivered(delivered, owner), FailOutcome()
        ids = [*delivered, *(f.event.id for f in failures), *released]
        params = {
            "ids": ids,
            "outcomes": ["delivered"] * len(delivered)
            + ["failed"] * len(failures)
            + ["released"] * len(released),
            "errors": [None] * len(delivered)
            + [f.error for f in failures]
            + [None] * len(released),
            "delays": [0.0] * len(delivered) + [f.delay for f in failures] + [0.0] * len(released),
            "owner": owner,
            "max_attempts": max_attempts,
        }
        rows, _ = await self._execute(q.SETTLE, params)
        marked = 0
        outcome = FailOutcome()
        for event_id, kind, status in rows:
            if kind == "delivered":
                marked += 1
            elif kind == "failed":
                (outcome.dead if status == "dead" else outcome.retried).append(event_id)
        return marked, outcome

    async def mark_delivered(self, ids: list[int], owner: str) -> int:
        if not ids:
            return 0
        _, count = await self._execute(q.MARK_DELIVERED, {"ids": id_array(ids), "owner": owner})
        return count

    async def fail(self, failures: list[Failure], owner: str, max_attempts: int) -> FailOutcome:
        if not failures:
            return FailOutcome()
        params = {
            "ids": [f.event.id for f in failures],
            "errors": [f.error for f in failures],
            "delays": [f.delay for f in failures],
            "owner": owner,
            "max_attempts": max_attempts,
        }
        rows, _ = await self._execute(q.FAIL, params)
        outcome = FailOutcome()
        for event_id, status in rows:
            (outcome.dead if status == "dead" else outcome.retried).append(event_id)
        return outcome

    async def release(self, ids: list[int], owner: str) -> int:
        if not ids:
            return 0
        _, count = await self._execute(q.RELEASE, {"ids": ids, "owner": owner})
        return count

    async def release_owner(self, owner: str, *, with_workers: bool = False) -> int:
        """Give back every lease held under `owner` (a predecessor that died, or ourselves),
        and with `with_workers` those of its other loops too (`owner/1`, `owner/2`...)."""
        query = q.RELEASE_OWNER_AND_WORKERS if with_workers else q.RELEASE_OWNER
        _, count = await self._execute(query, {"owner": owner})
        return count

    async def purge(self, older_than_seconds: float, *, chunk: int, max_chunks: int) -> int:
        """Delete delivered events older than the retention, `chunk` rows at a time."""
        deleted = 0
        for _ in range(max_chunks):
            _, count = await self._execute(
                q.PURGE_CHUNK, {"age": older_than_seconds, "chunk": chunk}
            )
            deleted += count
            if count < chunk:
                break
        return deleted

    async def purge_plan(self, older_than_seconds: float) -> PurgePlan:
        rows, _ = await self._execute(q.PURGE_PLAN, {"age": older_than_seconds})
        return PurgePlan(*rows[0])

    async def dead_letters(self, event_ids: list[str] | None) -> list[tuple]:
        """Dead-lettered events, all of them (None) or those listed."""
        params = {"all": event_ids is None, "event_ids": event_ids or []}
        rows, _ = await self._execute(q.DEAD_LETTERS, params)
        return rows

    async def requeue_dead(self, event_ids: list[str] | None) -> int:
        params = {"all": event_ids is None, "event_ids": event_ids or []}
        _, count = await self._execute(q.REQUEUE_DEAD, params)
        return count

    async def stats(self) -> Stats:
        rows, _ = await self._execute(q.STATS, {})
        pending, in_flight, age, dead = rows[0]
        return Stats(pending, in_flight, float(age), dead)

    async def top_errors(self, limit: int = 5) -> list[tuple[str, str, int, int]]:
        rows, _ = await self._execute(q.TOP_ERRORS, {"limit": limit})
        return rows
