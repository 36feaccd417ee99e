"""Rate limits per API key, counted in PostgreSQL so they hold across app processes and hosts.

A fixed one-second window per key: one row in `api_rate_windows` holds the window's start
and the requests counted in it, moved on and counted by a single upsert (a row lock held for
one statement, in autocommit). A key over its `rate_limit` gets 429 with `Retry-After: 1`
(the next window) and the refusal is counted in `spark_api_rate_limited_total`.

POST /orders counts in the same statement that claims the idempotency key
(`app.idempotency.claim`), so the limit adds no round trip to an order; the reads count with
`hit`, one statement of their own. A fixed window lets a client send up to twice its limit
across a window boundary; it is the simplest limit that is exact across processes.
"""

from __future__ import annotations

from psycopg import AsyncConnection

from app import metrics
from app.edge import RequestError

RETRY_AFTER_SECONDS = 1  # the window's length: the next window starts within it

# The CTE both `hit` and the idempotency claim start with; yields `used`, this request's
# number in the key's current window.
COUNT = """
rate AS (
    INSERT INTO api_rate_windows AS w (api_key_id, window_start, used)
    VALUES (%(api_key_id)s, date_trunc('second', now()), 1)
    ON CONFLICT (api_key_id) DO UPDATE
    SET used = CASE WHEN w.window_start = EXCLUDED.window_start THEN w.used + 1 ELSE 1 END,
        window_start = EXCLUDED.window_start
    RETURNING used
)"""
_HIT = f"WITH {COUNT} SELECT used FROM rate"


def refused() -> RequestError:
    metrics.RATE_LIMITED.inc()
    exc = RequestError(
        429, "rate_limited",
        "this API key is over its rate limit (requests per second); retry after Retry-After",
    )  # fmt: skip
    exc.headers = {"retry-after": str(RETRY_AFTER_SECONDS)}
    return exc


async def allowed(conn: AsyncConnection, api_key_id: str, limit: int) -> bool:
    """Count a request of this key: False when it is over the limit (answer `refused()`)."""
    row = await (await conn.execute(_HIT, {"api_key_id": api_key_id})).fetchone()
    return row[0] <= limit
