"""Is the app ready to serve: does the database answer `SELECT 1` through pgBouncer, within
`defaults.READY_CHECK_TIMEOUT_SECONDS`?

`/readyz` answers from `Readiness.check()`, and so does the `spark_app_ready` gauge, which
`/metrics` refreshes by running the same check at every scrape (SparkAppNotReady watches
it). Checked when asked rather than by a background loop: it costs one `SELECT 1` on a
pooled connection per probe or scrape, needs no task to keep alive, and reports the state
at the moment Prometheus or the load balancer looks, not at the last turn of a loop.

The deadline bounds the whole check, not only the wait for a pooled connection: a
connection that hangs (pgBouncer PAUSEd, a network black hole) makes the check answer
"not ready" on time, and the hanging query is cancelled so the next check starts afresh.
Concurrent callers share the one query in flight.

`/readyz` is public (the load balancer probes it through the same port as clients), so it
answers only "not ready"; the reason (which may name hosts, ports and server errors) goes to
the app's log, once each time it changes, and to whoever can read the private metrics.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg
from psycopg_pool import AsyncConnectionPool

from app import metrics
from sparkops import defaults

log = logging.getLogger("spark.readiness")
# What /readyz tells the public when the app is not ready; the reason is logged.
PUBLIC_REASON = "not ready"


class Readiness:
    def __init__(
        self, pool: AsyncConnectionPool, timeout: float = defaults.READY_CHECK_TIMEOUT_SECONDS
    ):
        self.pool = pool
        self.timeout = timeout
        self._in_flight: asyncio.Task[str | None] | None = None
        self._last: str | None = None  # the last state logged: None ready, else the reason

    async def check(self) -> str | None:
        """None when ready, else why not; the readiness gauge follows either way."""
        if self._in_flight is None or self._in_flight.done():
            self._in_flight = asyncio.create_task(self._query())
        task = self._in_flight
        try:
            reason = await asyncio.wait_for(asyncio.shield(task), self.timeout)
        except TimeoutError:
            reason = self._no_answer()
            if self._in_flight is task:
                self._in_flight = None
                task.cancel()  # psycopg cancels the query on the server; the pool checks it
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this request itself is being cancelled
            reason = self._no_answer()  # another caller gave up on the shared query
        metrics.APP_READY.set(0 if reason else 1)
        self._log_change(reason)
        return reason

    def _log_change(self, reason: str | None) -> None:
        """Log each change of state once, not every probe (the load balancer probes every
        few seconds)."""
        if reason == self._last:
            return
        if reason:
            log.warning("not ready: %s", reason)
        else:
            log.warning("ready again (was not ready: %s)", self._last)
        self._last = reason

    def _no_answer(self) -> str:
        return (
            f"database through pgBouncer: no answer within {self.timeout:g}s "
            "(pgBouncer paused, or the database overloaded or unreachable)"
        )

    async def _query(self) -> str | None:
        try:
            async with self.pool.connection(timeout=self.timeout) as conn:
                await conn.execute("SELECT 1")
        except (psycopg.Error, OSError) as exc:  # PoolTimeout is a psycopg.OperationalError
            return f"database through pgBouncer: {exc}"
        return None
