"""Failures under load: a dispatcher SIGKILLed again and again, and Redis down for 30 s.

At-least-once is the promise: no event is ever lost; duplicates are counted and bounded by
what a kill can cause (one claimed batch each)."""

from __future__ import annotations

import random
import threading
import time

import pytest

from app.outbox.settings import WORKERS
from sparkops.metric_names import OUTBOX_OLDEST_PENDING_AGE, OUTBOX_RETRIED
from sparkops.wait import wait_until
from testkit.proc import free_port, stop_process
from testkit.redis import RedisServer
from tests.conftest import connect_app
from tests.outbox.support import (
    STREAM,
    check_stream,
    claimed_count,
    insert_events,
    outbox_counts,
    read_stream,
    scrape,
    start_dispatcher,
)

KILLS = 20
BATCH = 200
# A kill can catch every claim loop of the process between publishing and marking.
DUPLICATES_PER_KILL = BATCH * WORKERS
# Long enough for many retries (backoff capped at 2 s below) and a lag well past the cap.
OUTAGE_SECONDS = 15


class Writer:
    """Inserts `per_tick` events every `tick` seconds on its own connection until stopped:
    the load the failures happen under."""

    def __init__(self, stack, per_tick: int, tick: float, aggregates: int, prefix: str) -> None:
        self.stack, self.per_tick, self.tick = stack, per_tick, tick
        self.aggregates, self.prefix = aggregates, prefix
        self.inserted = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with connect_app(self.stack) as conn:
            while not self.stopped.wait(self.tick):
                self.inserted += insert_events(conn, self.per_tick, self.aggregates, self.prefix)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)


@pytest.mark.chaos
def test_sigkill_twenty_times_loses_nothing(clean_db, redis_server, redis_client, tmp_path):
    rng = random.Random()
    args = ("--batch-size", str(BATCH), "--max-per-aggregate", "10", "--lease", "15")
    with connect_app(clean_db) as conn:
        inserted = insert_events(conn, 5000, 100, prefix="base-")
        with Writer(clean_db, per_tick=50, tick=0.1, aggregates=20, prefix="live-") as writer:
            for kill in range(KILLS):
                proc = start_dispatcher(clean_db, redis_server.url, "chaos", tmp_path, *args)
                before = redis_client.xlen(STREAM)
                try:
                    # Wait until it is publishing, then kill it at a random moment.
                    wait_until(
                        lambda b=before: redis_client.xlen(STREAM) > b,
                        timeout=30,
                        what=f"dispatcher #{kill + 1} to publish",
                    )
                    time.sleep(rng.uniform(0.0, 0.3))  # the random moment itself
                finally:
                    proc.kill()
                    proc.wait(timeout=10)
                assert proc.returncode == -9
        inserted += writer.inserted

        # A successor under the same name takes back the dead one's claims and drains.
        proc = start_dispatcher(clean_db, redis_server.url, "chaos", tmp_path, *args)
        try:
            wait_until(
                lambda: outbox_counts(conn) == {"delivered": len(inserted)},
                timeout=60,
                what="every event delivered after the kills",
            )
        finally:
            stop_process(proc)
        assert proc.returncode == 0
        assert claimed_count(conn) == 0

    check = check_stream(read_stream(redis_client), inserted)
    print(
        f"\n{len(inserted)} events, {KILLS} SIGKILLs: {len(check.missing)} lost, "
        f"{check.duplicates} duplicates ({check.duplicates / KILLS:.0f} per kill, "
        f"bound {DUPLICATES_PER_KILL} per kill), {len(check.order_violations)} order violations"
    )
    assert not check.missing, f"lost {len(check.missing)} events"
    assert check.duplicates <= KILLS * DUPLICATES_PER_KILL
    assert not check.order_violations, check.order_violations[:10]


@pytest.mark.chaos
def test_redis_outage_retries_then_delivers_everything(clean_db, tmp_path):
    # Its own Redis, persistent, so what was published before the outage survives it.
    with RedisServer(persistent=True) as redis_server:
        client = redis_server.client()
        port = free_port()
        args = ("--metrics-port", str(port), "--backoff-base", "0.2", "--backoff-cap", "2",
                "--max-attempts", "1000", "--publish-timeout", "2", "--lease", "10")  # fmt: skip
        proc = start_dispatcher(clean_db, redis_server.url, "outage", tmp_path, *args)
        lag = OUTBOX_OLDEST_PENDING_AGE
        retried = f"{OUTBOX_RETRIED}{{publisher=redis}}"
        try:
            with connect_app(clean_db) as conn:
                with Writer(clean_db, per_tick=20, tick=0.1, aggregates=50, prefix="o-") as writer:
                    wait_until(lambda: client.xlen(STREAM) >= 200, timeout=30, what="publishing")
                    assert scrape(port)[lag] < 2
                    redis_server.stop()
                    down_at = time.monotonic()
                    # The lag rises while Redis is down, and failed attempts are retried.
                    wait_until(
                        lambda: scrape(port)[lag] > OUTAGE_SECONDS * 2 / 3,
                        timeout=OUTAGE_SECONDS + 5,
                        what="lag",
                    )
                    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
                    peak = scrape(port)
                    assert peak[retried] > 0
                    redis_server.start()
                inserted = writer.inserted
                # Then it falls back once Redis is back, and everything gets through.
                wait_until(
                    lambda: outbox_counts(conn) == {"delivered": len(inserted)},
                    timeout=60,
                    what="every event delivered after the outage",
                )
                recovered = time.monotonic() - down_at - OUTAGE_SECONDS
                wait_until(lambda: scrape(port)[lag] < 2, timeout=10, what="lag to fall")
        finally:
            stop_process(proc)
        assert proc.returncode == 0
        check = check_stream(read_stream(client), inserted)
        print(
            f"\nRedis down {OUTAGE_SECONDS}s: peak lag {peak[lag]:.1f}s, drained "
            f"{recovered:.1f}s after restart, "
            f"{peak[retried]:.0f} retries, {len(inserted)} events, {check.duplicates} duplicates"
        )
        assert not check.missing
        assert not check.order_violations, check.order_violations[:10]
        client.close()
