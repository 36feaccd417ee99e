"""Rate limits per API key and per client address, counted in PostgreSQL so they hold
across app processes and hosts.

A fixed one-second window per key and per client: one row in `api_rate_windows` (per key)
and one in `client_rate_windows` (per client) hold the window's start and the requests
counted in it, moved on and counted by upserts in a single statement (row locks held for
one statement, in autocommit). A request over either limit gets 429 with `Retry-After: 1`
(the next window), and the refusal is counted in `spark_api_rate_limited_total` by which
limit refused it (`limit`: api_key or client_addr).

POST /orders counts in the same statement that claims the idempotency key
(`app.idempotency.claim`), so the limits add no round trip to an order; the reads count with
`hit`, one statement of their own. A request whose key is refused (401/403) counts against
its client's limit only (`hit_client`), so guessing keys from one address is throttled too.
A fixed window lets a client send up to twice its limit across a window boundary; it is the
simplest limit that is exact across processes. A request whose transaction started in an
earlier second than the window's (it reached the row late: descheduled, or queued on the
row's lock) counts in the current window; it never moves the window back, which would reset
the count and let a burst through.

The client is the address uvicorn saw (behind a proxy: from X-Forwarded-For, taken only
from the proxies in `--forwarded-allow-ips`); an IPv6 client is counted by its /64 prefix,
since one host usually holds a whole /64. A request with no address (a Unix socket) is
counted by its key only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from psycopg import AsyncConnection

from app import metrics
from app.edge import RequestError

RETRY_AFTER_SECONDS = 1  # the window's length: the next window starts within it
IPV6_PREFIX = 64

# The CTEs `hit` and the idempotency claim start with: `rate` yields `used`, this request's
# number in its key's current window; `client` the same for its client address (no row when
# the address is unknown). Parameters: api_key_id, client.
COUNT = """
rate AS (
    INSERT INTO api_rate_windows AS w (api_key_id, window_start, used)
    VALUES (%(api_key_id)s, date_trunc('second', now()), 1)
    ON CONFLICT (api_key_id) DO UPDATE
    SET used = CASE WHEN w.window_start >= EXCLUDED.window_start THEN w.used + 1 ELSE 1 END,
        window_start = greatest(w.window_start, EXCLUDED.window_start)
    RETURNING used
), client AS (
    INSERT INTO client_rate_windows AS w (client, window_start, used)
    SELECT %(client)s::text, date_trunc('second', now()), 1 WHERE %(client)s::text IS NOT NULL
    ON CONFLICT (client) DO UPDATE
    SET used = CASE WHEN w.window_start >= EXCLUDED.window_start THEN w.used + 1 ELSE 1 END,
        window_start = greatest(w.window_start, EXCLUDED.window_start)
    RETURNING used
)"""
# What this request's numbers in both windows are (a client with no row counts 0).
USED = "(SELECT used FROM rate), coalesce((SELECT used FROM client), 0)"
# True when neither limit is passed; parameters: limit, client_limit.
WITHIN = (
    "(SELECT used FROM rate) <= %(limit)s "
    "AND coalesce((SELECT used FROM client), 0) <= %(client_limit)s"
)
_HIT = f"WITH {COUNT} SELECT {USED}"
_HIT_CLIENT = """
INSERT INTO client_rate_windows AS w (client, window_start, used)
VALUES (%(client)s, date_trunc('second', now()), 1)
ON CONFLICT (client) DO UPDATE
SET used = CASE WHEN w.window_start >= EXCLUDED.window_start THEN w.used + 1 ELSE 1 END,
    window_start = greatest(w.window_start, EXCLUDED.window_start)
RETURNING used
"""
_PURGE_CLIENTS = """
DELETE FROM client_rate_windows
WHERE window_start < now() - make_interval(secs => %(seconds)s)
"""

_MESSAGES = {
    "api_key": "this API key is over its rate limit (requests per second)",
    "client_addr": "your address is over its rate limit (requests per second)",
}


@dataclass(frozen=True)
class Budget:
    """Whom a request counts against, and their limits (requests per second)."""

    api_key_id: str
    limit: int
    client: str | None  # from `client_of`
    client_limit: int

    def params(self) -> dict:
        return {"api_key_id": self.api_key_id, "limit": self.limit, "client": self.client,
                "client_limit": self.client_limit}  # fmt: skip


def client_of(addr: str | None) -> str | None:
    """What a client address is counted as: the IPv4 address, or the IPv6 /64 prefix."""
    if addr is None:
        return None
    ip = ipaddress.ip_address(addr)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False))
    return str(ip)


def over(used: int, limit: int, client_used: int, client_limit: int) -> str | None:
    """Which limit this request passed ("api_key" or "client_addr"), or None."""
    if used > limit:
        return "api_key"
    if client_used > client_limit:
        return "client_addr"
    return None


def refused(limit: str = "api_key") -> RequestError:
    metrics.RATE_LIMITED.labels(limit).inc()
    exc = RequestError(429, "rate_limited", f"{_MESSAGES[limit]}; retry after Retry-After")
    exc.headers = {"retry-after": str(RETRY_AFTER_SECONDS)}
    return exc


async def hit(conn: AsyncConnection, budget: Budget) -> str | None:
    """Count a request of this key and client: the limit it passed (answer `refused(that)`),
    or None when it may go ahead."""
    used, client_used = await (await conn.execute(_HIT, budget.params())).fetchone()
    return over(used, budget.limit, client_used, budget.client_limit)


async def hit_client(conn: AsyncConnection, client: str | None, client_limit: int) -> bool:
    """Count a request that has no valid key against its client alone: False when the
    client is over its limit."""
    if client is None:
        return True
    row = await (await conn.execute(_HIT_CLIENT, {"client": client})).fetchone()
    return row[0] <= client_limit


async def purge_clients(conn: AsyncConnection, idle_seconds: int = 60) -> int:
    """Delete the windows of clients not seen for `idle_seconds` (their next request starts
    a new window anyway)."""
    return (await conn.execute(_PURGE_CLIENTS, {"seconds": idle_seconds})).rowcount
