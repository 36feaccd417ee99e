"""Idempotency keys, after the IETF httpapi Idempotency-Key draft and Stripe's design.

- First writer wins: the key is claimed by `INSERT ... ON CONFLICT DO NOTHING` in its own
  short transaction, so a concurrent duplicate sees the claim at once instead of queueing
  behind the first request's transaction.
- The order and the key's completion commit together (see app.orders), so a completed key
  always has its order, and an in-flight key whose process died has none.
- A completed key replays the stored status and body; an in-flight key answers 409 with
  Retry-After; the same key with another payload answers 422.
- An in-flight key older than the in-flight timeout is presumed abandoned and may be taken
  over by a retry.
- Keys expire after 48 h through `purge_expired` (the `sparkops app purge-idempotency-keys`
  job).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal

from psycopg import AsyncConnection

from app import metrics, ratelimit

Outcome = Literal["created", "replayed", "in_flight", "payload_mismatch", "rate_limited"]


@dataclass(frozen=True)
class Claim:
    outcome: Outcome
    limit: str | None = None  # for rate_limited: which limit (app.ratelimit.over)
    status: int | None = None  # for replayed
    body: str | None = None  # for replayed


def request_hash(method: str, path: str, fields: dict) -> str:
    canonical = json.dumps([method, path, fields], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


_CLAIM = """
INSERT INTO idempotency_keys (key, request_hash, state)
VALUES (%(key)s, %(hash)s, 'in_flight')
ON CONFLICT (key) DO NOTHING
RETURNING key
"""
# The first claim also counts the request against its API key's and its client's rate
# limits (app.ratelimit), in the same statement: a request over either claims nothing.
CLAIM_COUNTED = f"""
WITH {ratelimit.COUNT}, claimed AS (
    INSERT INTO idempotency_keys (key, request_hash, state)
    SELECT %(key)s, %(hash)s, 'in_flight' WHERE {ratelimit.WITHIN}
    ON CONFLICT (key) DO NOTHING
    RETURNING key
)
SELECT {ratelimit.USED}, (SELECT count(*) FROM claimed)
"""
_LOOK = """
SELECT request_hash, state, response_status, response_body,
       locked_at < now() - make_interval(secs => %(timeout)s) AS abandoned
FROM idempotency_keys WHERE key = %(key)s
"""
_TAKE_OVER = """
UPDATE idempotency_keys SET locked_at = now()
WHERE key = %(key)s AND state = 'in_flight'
  AND locked_at < now() - make_interval(secs => %(timeout)s)
RETURNING key
"""
# The completion is the database function complete_idempotency_key (migration 0014), called
# by app.orders in the order's transaction.
_RELEASE = "DELETE FROM idempotency_keys WHERE key = %(key)s AND state = 'in_flight'"
_PURGE = """
DELETE FROM idempotency_keys
WHERE key IN (
    SELECT key FROM idempotency_keys
    WHERE created_at < now() - make_interval(hours => %(hours)s)
    ORDER BY created_at LIMIT %(batch)s
)
"""


async def claim(
    conn: AsyncConnection, key: str, fingerprint: str, timeout_s: int,
    rate: ratelimit.Budget | None = None,
) -> Claim:  # fmt: skip
    """Decide what this request may do with its key.

    `conn` is in autocommit mode: each statement is its own transaction, one round trip.
    `rate`: the request is counted against its key's and client's limits first.
    """
    params = {"key": key, "hash": fingerprint, "timeout": timeout_s}
    if rate is not None:
        params.update(rate.params())
        used, client_used, claimed = await (await conn.execute(CLAIM_COUNTED, params)).fetchone()
        limit = ratelimit.over(used, rate.limit, client_used, rate.client_limit)
        if limit is not None:
            return Claim("rate_limited", limit=limit)
        if claimed:
            return counted(Claim("created"))
    # Two rounds: the row may vanish between the INSERT and the SELECT (released by a
    # failed first request, or purged), in which case we try to claim it again.
    for _ in range(2):
        if (await conn.execute(_CLAIM, params)).rowcount == 1:
            return counted(Claim("created"))
        row = await (await conn.execute(_LOOK, params)).fetchone()
        if row is None:
            continue
        stored_hash, state, status, body, abandoned = row
        if stored_hash != fingerprint:
            return counted(Claim("payload_mismatch"))
        if state == "completed":
            return counted(Claim("replayed", status=status, body=body))
        if abandoned and (await conn.execute(_TAKE_OVER, params)).rowcount == 1:
            return counted(Claim("created"))
        return counted(Claim("in_flight"))
    return counted(Claim("in_flight"))


async def release(conn: AsyncConnection, key: str) -> None:
    """Give the key back after an unexpected failure, so the client's retry can run."""
    await conn.execute(_RELEASE, {"key": key})


async def purge_expired(conn: AsyncConnection, hours: int, batch: int = 5000) -> int:
    """Delete keys older than `hours`, in batches so no transaction holds many row locks."""
    total = 0
    while True:
        deleted = (await conn.execute(_PURGE, {"hours": hours, "batch": batch})).rowcount
        total += deleted
        metrics.IDEMPOTENCY_KEYS_PURGED.inc(deleted)
        if deleted < batch:
            return total


def counted(result: Claim) -> Claim:
    """Count a claim's outcome (`spark_idempotency_outcomes_total`) and return it."""
    metrics.IDEMPOTENCY_OUTCOMES.labels(result.outcome).inc()
    return result
