"""The outbox dispatcher: claim a batch, publish it in per-aggregate order, record the outcome.

A process runs `workers` claim loops, each under a lease owner of its own (`owner`,
`owner/1`...), so one loop's batch is claimed or settled while another's is published; several
processes may run against one database too (see `store` for why that is safe). A claim takes
whole runs (up to `max_per_aggregate` events of an aggregate) until the batch is full, so
loops and processes share a backlog as soon as it spans more aggregates than one batch holds
runs (`batch_size / max_per_aggregate`, 40 by default): per-aggregate order allows one
publisher per aggregate at a time.

Each batch:

- is claimed under a lease (one short statement), then published outside any transaction;
- is published as runs, one per aggregate (its claimed events, consecutive, in id order),
  through `Publisher.publish_runs`: each run strictly in order, stopping at its first
  failure. Redis takes the whole batch in one script call (one round trip); other
  destinations go in rounds, round k carrying the k-th event of every run still going;
- stops an aggregate at its first failure: the failed event is rescheduled with exponential
  backoff and full jitter (or dead-lettered after its last attempt, with its error), and the
  aggregate's later events are released untouched;
- stops altogether on SIGTERM or when the lease nears its end (between rounds, or before the
  one Redis call); what was published is marked delivered, the rest released, so a clean
  exit leaves nothing claimed;
- is settled in one statement: delivered, failed and released events together.

A SIGKILL between publishing and marking leaves published events leased: they are published
again once the lease runs out (or at once, by a successor started under the same `--name`).
That is the at-least-once duplicate window, at most one batch per claim loop per kill;
consumers dedupe on `event_id`.

A second task refreshes the gauges (pending, oldest pending age, dead letters) and deletes
delivered events older than the retention, on their own intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict

from app.outbox import metrics
from app.outbox.publishers import Publisher
from app.outbox.settings import LAST_ERROR_MAX_CHARS, PURGE_CHUNK, DispatcherSettings
from app.outbox.store import Failure, OutboxEvent, OutboxStore

log = logging.getLogger(__name__)

# A purge pass stops after this many chunks; the next pass continues.
PURGE_MAX_CHUNKS = 200


def backoff_delay(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): spreads the
    retries of many events failed by one outage instead of retrying them in lockstep."""
    return rng.uniform(0.0, min(cap, base * (2.0 ** min(attempts, 62))))


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:LAST_ERROR_MAX_CHARS]


class Dispatcher:
    def __init__(
        self,
        store: OutboxStore,
        publisher: Publisher,
        owner: str,
        config: DispatcherSettings | None = None,
        *,
        recover_own_leases: bool = False,
        rng: random.Random | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.owner = owner
        self.config = config or DispatcherSettings()
        self.recover_own_leases = recover_own_leases
        self.rng = rng or random.Random()
        self.stop = stop or asyncio.Event()
        self._label = publisher.name

    # --- the loop ------------------------------------------------------------------------
    @property
    def owners(self) -> list[str]:
        """The lease owner of each claim loop: the first is the process's own name."""
        return [self.owner] + [f"{self.owner}/{n}" for n in range(1, self.config.workers)]

    async def run(self) -> None:
        """Until `self.stop` is set; returns with no event left claimed by this process."""
        if self.recover_own_leases:
            released = await self.store.release_owner(self.owner, with_workers=True)
            if released:
                log.info("released %d event(s) left claimed by a previous %s", released, self.owner)
        housekeeping = asyncio.create_task(self._housekeeping(), name="outbox-housekeeping")
        try:
            # A task group: should one loop die, the others are cancelled, not left running.
            async with asyncio.TaskGroup() as loops:
                for owner in self.owners:
                    loops.create_task(self._claim_loop(owner), name=f"outbox-claims-{owner}")
        finally:
            housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping
            with contextlib.suppress(Exception):
                await self.store.release_owner(self.owner, with_workers=True)

    async def _claim_loop(self, owner: str) -> None:
        orphans = False
        while not self.stop.is_set():
            try:
                if orphans:
                    # A batch that failed on the database may have left leases of this
                    # loop's behind (a claim that committed but whose answer was lost, a
                    # settle cut short): nothing of its own is in flight between batches, so
                    # they are given back now instead of waiting out the lease (30 s of lag
                    # after a database restart, seen in the chaos scenario).
                    released = await self.store.release_owner(owner)
                    orphans = False
                    if released:
                        log.info("released %d event(s) a failed batch left leased", released)
                published = await self.dispatch_once(owner)
            except Exception:
                log.exception("outbox batch failed; retrying after the poll interval")
                orphans = True
                published = 0
            if published == 0:
                await self._sleep(self.config.poll_interval)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)

    async def dispatch_once(self, owner: str | None = None) -> int:
        """Claim, publish and settle one batch under `owner` (default: the process's own
        name); return how many events were delivered."""
        cfg = self.config
        owner = owner or self.owner
        events = await self.store.claim(
            owner,
            batch_size=cfg.batch_size,
            max_per_aggregate=cfg.max_per_aggregate,
            lease_seconds=cfg.lease_seconds,
        )
        if not events:
            return 0
        lease_ends = time.monotonic() + cfg.lease_seconds - cfg.lease_safety_seconds
        runs: OrderedDict[tuple[str, str], list[OutboxEvent]] = OrderedDict()
        for event in events:  # sorted by id, so each run is in order
            runs.setdefault(event.aggregate, []).append(event)

        def keep_going() -> bool:
            return not self.stop.is_set() and time.monotonic() < lease_ends

        started = time.perf_counter()
        outcomes = await self.publisher.publish_runs(
            list(runs.values()), timeout=cfg.publish_timeout, keep_going=keep_going
        )
        metrics.PUBLISH_DURATION.labels(self._label).observe(time.perf_counter() - started)

        delivered: list[int] = []
        failures: list[Failure] = []
        released: list[int] = []
        for run, (count, error) in zip(runs.values(), outcomes, strict=True):
            delivered.extend(e.id for e in run[:count])
            rest = run[count:]
            if error is not None and rest:
                failed = rest.pop(0)
                delay = backoff_delay(failed.attempts, cfg.backoff_base, cfg.backoff_cap, self.rng)
                failures.append(Failure(failed, describe(error), delay))
            released.extend(e.id for e in rest)  # behind a failure, or stopped early

        await self._settle(owner, delivered, failures, released)
        return len(delivered)

    async def _settle(
        self, owner: str, delivered: list[int], failures: list[Failure], released: list[int]
    ) -> None:
        marked, outcome = await self.store.settle(
            owner, delivered, failures, released, self.config.max_attempts
        )
        if failures:
            metrics.RETRIED.labels(self._label).inc(len(outcome.retried))
            metrics.DEAD_LETTERED.labels(self._label).inc(len(outcome.dead))
            if outcome.dead:
                errors = {f.event.id: f.error for f in failures}
                for event_id in outcome.dead:
                    log.error("outbox event %d dead-lettered: %s", event_id, errors[event_id])
            log.warning(
                "%d event(s) failed to publish (%d rescheduled, %d dead-lettered); first: %s",
                len(failures),
                len(outcome.retried),
                len(outcome.dead),
                failures[0].error,
            )
        if delivered:
            metrics.PUBLISHED.labels(self._label).inc(len(delivered))
            if marked != len(delivered):
                log.warning(
                    "%d published event(s) were no longer held by %s (lease ran out): "
                    "another dispatcher will publish them again",
                    len(delivered) - marked,
                    owner,
                )

    # --- gauges and retention ------------------------------------------------------------
    async def refresh_gauges(self) -> None:
        stats = await self.store.stats()
        metrics.PENDING.set(stats.pending)
        metrics.OLDEST_PENDING_AGE.set(stats.oldest_pending_age)
        metrics.DEAD_LETTERS.set(stats.dead)

    async def purge_expired(self) -> int:
        deleted = await self.store.purge(
            self.config.retention_hours * 3600.0, chunk=PURGE_CHUNK, max_chunks=PURGE_MAX_CHUNKS
        )
        if deleted:
            log.info("purged %d delivered event(s) past retention", deleted)
        return deleted

    async def _housekeeping(self) -> None:
        next_purge = time.monotonic()
        while not self.stop.is_set():
            try:
                await self.refresh_gauges()
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + self.config.purge_interval
                    await self.purge_expired()
            except Exception:
                log.exception("outbox housekeeping failed; trying again next interval")
            await self._sleep(self.config.stats_interval)
