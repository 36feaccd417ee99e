"""The outbox's SQL, one named statement each; `app.outbox.store` runs them and explains
how they keep per-aggregate order."""

from __future__ import annotations

# Finding heads walks the *aggregates* that have pending events (a skip scan of the
# pending-by-aggregate index: one index descent per aggregate), never the whole backlog: a
# backlog of a million events over a hundred aggregates costs a hundred descents, and the
# events waiting behind a dead letter are never read. The walk starts after the aggregate
# where the previous claim stopped and wraps around, so every aggregate gets its turn.
#
# Each aggregate visited says whether its head is claimable (due, not leased, not behind a
# dead letter) and, if so, how many events its run would give (its pending events from the
# head, counted up to the run limit). The walk stops once the runs found fill the batch:
# a backlog is claimed as a few long runs (a few heads to lease, and a next claim, or another
# dispatcher, finds the aggregates after them), steady traffic as many short ones.
# Each step of the walk finds the next aggregate by its first pending event, which is that
# aggregate's head: its row says whether it is due and unleased, so no second lookup.
# OFFSET 0 keeps `h` and `t` subqueries of their own: flattened, each expression would be
# evaluated once per use (the dead-letter check again inside `take`, the count again inside
# `total`).
_HEAD_OF = """
    CROSS JOIN LATERAL (
        SELECT {agg}.next_attempt_at <= now()
               AND ({agg}.claimed_until IS NULL OR {agg}.claimed_until < now())
               AND NOT EXISTS (
                   SELECT 1 FROM outbox_events d
                   WHERE d.status = 'dead' AND d.aggregate_type = {agg}.aggregate_type
                     AND d.aggregate_id = {agg}.aggregate_id AND d.id < {agg}.id) AS eligible
        OFFSET 0
    ) h
    CROSS JOIN LATERAL (
        SELECT CASE WHEN NOT h.eligible THEN 0 ELSE (
            SELECT count(*) FROM (
                SELECT 1 FROM outbox_events r
                WHERE r.status = 'pending' AND r.aggregate_type = {agg}.aggregate_type
                  AND r.aggregate_id = {agg}.aggregate_id AND r.id >= {agg}.id
                ORDER BY r.id
                LIMIT %(max_per_aggregate)s) run)
        END AS take
        OFFSET 0
    ) t
"""
_NEXT_HEAD = """
        SELECT x.aggregate_type, x.aggregate_id, x.id, x.next_attempt_at, x.claimed_until
        FROM outbox_events x
"""
FIND_HEADS = (
    """
WITH RECURSIVE walk AS (
    SELECT f.aggregate_type, f.aggregate_id, 1 AS n, f.id, h.eligible, t.take,
           t.take AS total
    FROM ("""
    + _NEXT_HEAD
    + """
          WHERE x.status = 'pending' AND {after}
          ORDER BY x.aggregate_type, x.aggregate_id, x.id
          LIMIT 1) f
"""
    + _HEAD_OF.format(agg="f")
    + """
    UNION ALL
    SELECT nxt.aggregate_type, nxt.aggregate_id, w.n + 1, nxt.id, h.eligible, t.take,
           w.total + t.take
    FROM walk w
    CROSS JOIN LATERAL ("""
    + _NEXT_HEAD
    + """
        WHERE x.status = 'pending'
          AND (x.aggregate_type, x.aggregate_id) > (w.aggregate_type, w.aggregate_id)
        ORDER BY x.aggregate_type, x.aggregate_id, x.id
        LIMIT 1
    ) nxt
"""
    + _HEAD_OF.format(agg="nxt")
    + """
    WHERE w.n < %(max_visits)s AND w.total < %(budget)s
)
SELECT id, aggregate_type, aggregate_id, eligible, take, total FROM walk ORDER BY n
"""
)
FIND_HEADS_FROM_START = FIND_HEADS.replace("{after}", "TRUE")
FIND_HEADS_AFTER = FIND_HEADS.replace(
    "{after}", "(x.aggregate_type, x.aggregate_id) > (%(after_type)s, %(after_id)s)"
)
# Aggregates one search may walk past (backing off, leased, blocked) for each event it may
# claim, before it gives up.
MAX_VISITS_PER_EVENT = 20

# The candidates were heads when found; every condition is checked again under the lock.
CLAIM = """
WITH heads AS (
    SELECT e.id, e.aggregate_type, e.aggregate_id, c.ord
    FROM unnest(%(candidates)s::bigint[]) WITH ORDINALITY AS c(id, ord)
    -- One primary key lookup per candidate: a lateral subquery with its own row lock is
    -- not flattened into a join, which a large backlog would have planned as a hash join
    -- over a scan of every pending row (20 of a 2,000-head claim's 69 ms, measured).
    CROSS JOIN LATERAL (
        SELECT e.id, e.aggregate_type, e.aggregate_id
        FROM outbox_events e
        WHERE e.id = c.id
          AND e.status = 'pending'
          AND e.next_attempt_at <= now()
          AND (e.claimed_until IS NULL OR e.claimed_until < now())
          AND NOT EXISTS (
              SELECT 1 FROM outbox_events p
              WHERE p.status = 'pending' AND p.aggregate_type = e.aggregate_type
                AND p.aggregate_id = e.aggregate_id AND p.id < e.id)
          AND NOT EXISTS (
              SELECT 1 FROM outbox_events d
              WHERE d.status = 'dead' AND d.aggregate_type = e.aggregate_type
                AND d.aggregate_id = e.aggregate_id AND d.id < e.id)
        FOR UPDATE OF e SKIP LOCKED
    ) e
),
-- The runs in the order the walk found their heads, each whole (up to the run limit), until
-- the batch is full: what the walk counted, unless a head was taken in the meantime. The
-- rows come out of the index scan that finds them (no second lookup by id).
runs AS (
    SELECT r.*, h.id AS head
    FROM heads h
    CROSS JOIN LATERAL (
        SELECT x.id, x.event_id::text AS event_id, x.aggregate_type, x.aggregate_id,
               x.event_type, x.payload::text AS payload, x.attempts, x.created_at
        FROM outbox_events x
        WHERE x.status = 'pending' AND x.aggregate_type = h.aggregate_type
          AND x.aggregate_id = h.aggregate_id AND x.id >= h.id
        ORDER BY x.id
        LIMIT %(max_per_aggregate)s
    ) r
    ORDER BY h.ord, r.id
    LIMIT %(batch_size)s
),
-- Only the heads the batch takes from are leased: the events behind a head cannot be
-- claimed by anyone while the head is pending, so leasing them too would cost an UPDATE per
-- event for nothing; a head locked here but left out of the batch is free again at commit.
leased AS (
    UPDATE outbox_events o
    SET claimed_by = %(owner)s, claimed_until = now() + make_interval(secs => %(lease)s)
    WHERE o.id = ANY(ARRAY(SELECT DISTINCT head FROM runs))
)
SELECT id, event_id, aggregate_type, aggregate_id, event_type, payload, attempts, created_at
FROM runs
"""

# One statement settles a whole batch: each event was delivered (published), failed (retry
# later, or park as dead after the last attempt) or released (not published: leave it as it
# was, giving back our lease). Rows another dispatcher took over (its lease, after ours ran
# out) are left alone; an event behind a head is not leased, and is ours while its head is.
# Atomic: a failed event behind a head is rescheduled in the same commit that delivers its
# predecessor and so makes it a head.
SETTLE = """
WITH s AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(outcomes)s::text[], %(errors)s::text[],
                         %(delays)s::float8[]) AS s(id, outcome, error, delay)
)
UPDATE outbox_events o
SET status = CASE s.outcome
                 WHEN 'delivered' THEN 'delivered'
                 WHEN 'failed' THEN
                     CASE WHEN o.attempts + 1 >= %(max_attempts)s THEN 'dead' ELSE 'pending' END
                 ELSE o.status END,
    delivered_at = CASE WHEN s.outcome = 'delivered' THEN now() ELSE o.delivered_at END,
    attempts = o.attempts + CASE WHEN s.outcome = 'failed' THEN 1 ELSE 0 END,
    last_error = CASE WHEN s.outcome = 'failed' THEN s.error ELSE o.last_error END,
    next_attempt_at = CASE WHEN s.outcome = 'failed' THEN now() + make_interval(secs => s.delay)
                           ELSE o.next_attempt_at END,
    claimed_by = NULL, claimed_until = NULL
FROM s
WHERE o.id = s.id AND o.status = 'pending'
  AND (o.claimed_by IS NULL OR o.claimed_by = %(owner)s)
  AND (s.outcome <> 'released' OR o.claimed_by = %(owner)s)
RETURNING o.id, s.outcome, o.status
"""

# A batch delivered whole (the usual case) settles with this rather than SETTLE: no
# per-event outcomes, about a fifth cheaper on PostgreSQL's side and on ours (one array of a
# thousand to send, not four). The ids come as an array literal (`{1,2,3}`, store.id_array),
# written in one join rather than dumped element by element.
MARK_DELIVERED = """
UPDATE outbox_events
SET status = 'delivered', delivered_at = now(), claimed_by = NULL, claimed_until = NULL
WHERE id = ANY(%(ids)s::bigint[]) AND status = 'pending'
  AND (claimed_by IS NULL OR claimed_by = %(owner)s)
"""

# One statement for every failure of a batch: retry later, or park as dead after the last
# attempt. Rows another dispatcher took over (its lease, after ours ran out) are left alone;
# a failed event that is not a head is unleased but still behind a pending head of ours.
FAIL = """
WITH f AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(errors)s::text[], %(delays)s::float8[])
        AS f(id, error, delay)
)
UPDATE outbox_events o
SET attempts = o.attempts + 1,
    last_error = f.error,
    status = CASE WHEN o.attempts + 1 >= %(max_attempts)s THEN 'dead' ELSE 'pending' END,
    next_attempt_at = now() + make_interval(secs => f.delay),
    claimed_by = NULL, claimed_until = NULL
FROM f
WHERE o.id = f.id AND o.status = 'pending'
  AND (o.claimed_by IS NULL OR o.claimed_by = %(owner)s)
RETURNING o.id, o.status
"""

RELEASE = """
UPDATE outbox_events SET claimed_by = NULL, claimed_until = NULL
WHERE id = ANY(%(ids)s) AND claimed_by = %(owner)s
"""

RELEASE_OWNER = """
UPDATE outbox_events SET claimed_by = NULL, claimed_until = NULL
WHERE claimed_by = %(owner)s AND status = 'pending'
"""

# A process's loops hold leases as `owner`, `owner/1`, `owner/2`...: this gives back all of
# them (a predecessor that ran more loops than we do included). Host names hold no '/'.
RELEASE_OWNER_AND_WORKERS = """
UPDATE outbox_events SET claimed_by = NULL, claimed_until = NULL
WHERE (claimed_by = %(owner)s OR left(claimed_by, length(%(owner)s) + 1) = %(owner)s || '/')
  AND status = 'pending'
"""

# SKIP LOCKED: two dispatchers purging at once split the work instead of queueing.
PURGE_CHUNK = """
DELETE FROM outbox_events WHERE id IN (
    SELECT id FROM outbox_events
    WHERE status = 'delivered' AND delivered_at < now() - make_interval(secs => %(age)s)
    LIMIT %(chunk)s
    FOR UPDATE SKIP LOCKED)
"""

PURGE_PLAN = """
SELECT count(*), min(delivered_at), max(delivered_at)
FROM outbox_events
WHERE status = 'delivered' AND delivered_at < now() - make_interval(secs => %(age)s)
"""

DEAD_LETTERS = """
SELECT event_id::text, aggregate_type, aggregate_id, event_type, attempts, left(last_error, 200)
FROM outbox_events
WHERE status = 'dead' AND (%(all)s OR event_id::text = ANY(%(event_ids)s))
ORDER BY id
"""

# Back to the queue with a fresh set of attempts; the last error stays until it is replaced.
REQUEUE_DEAD = """
UPDATE outbox_events
SET status = 'pending', attempts = 0, next_attempt_at = now(), claimed_by = NULL,
    claimed_until = NULL
WHERE status = 'dead' AND (%(all)s OR event_id::text = ANY(%(event_ids)s))
"""

# Pending and dead rows are read through their partial indexes, never by a scan of the
# table, which holds every delivered event of the retention period (a week of them) and is
# read every few seconds for the gauges.
STATS = """
SELECT p.pending, p.leased, p.oldest, d.dead
FROM (SELECT count(*) AS pending,
             count(*) FILTER (WHERE claimed_until > now()) AS leased,
             coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest
      FROM outbox_events
      WHERE status = 'pending') p,
     (SELECT count(*) AS dead FROM outbox_events WHERE status = 'dead') d
"""

TOP_ERRORS = """
SELECT status, left(last_error, 200) AS error, count(*) AS events, max(attempts)
FROM (SELECT status, last_error, attempts FROM outbox_events
      WHERE status = 'pending' AND last_error IS NOT NULL
      UNION ALL
      SELECT status, last_error, attempts FROM outbox_events
      WHERE status = 'dead' AND last_error IS NOT NULL) e
GROUP BY status, left(last_error, 200)
ORDER BY count(*) DESC
LIMIT %(limit)s
"""
