"""Helpers for the outbox tests: insert events, run dispatcher processes, read the stream."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from app.outbox import settings
from app.outbox.dispatcher import Dispatcher
from app.outbox.store import OutboxStore, app_pool
from sparkops.wait import wait_until
from testkit.stack import DbStack

STREAM = settings.REDIS_STREAM

INSERT = """
INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, payload)
SELECT 'order', %(prefix)s || ((g - 1) %% %(aggregates)s), 'order.created',
       jsonb_build_object('seq', g, 'price', '12345.678901234567890123')
FROM generate_series(1, %(count)s) AS g
ORDER BY g
RETURNING id, event_id::text, aggregate_id
"""


@dataclass(frozen=True)
class Inserted:
    id: int
    event_id: str
    aggregate_id: str


def insert_events(
    conn: psycopg.Connection, count: int, aggregates: int, prefix: str = "agg-"
) -> list[Inserted]:
    """`count` events spread round-robin over `aggregates` aggregates, in one transaction."""
    rows = conn.execute(
        INSERT, {"count": count, "aggregates": aggregates, "prefix": prefix}
    ).fetchall()
    return [Inserted(*row) for row in rows]


def read_stream(client, stream: str = STREAM) -> list[dict[str, str]]:
    """Every entry, in stream order, fields decoded."""
    entries = []
    last = "-"
    for _ in range(10_000):  # pages of 10k entries; bounded
        page = client.xrange(stream, min=last, count=10_000)
        if last != "-":
            page = page[1:]
        if not page:
            break
        for _entry_id, fields in page:
            entries.append({k.decode(): v.decode() for k, v in fields.items()})
        last = page[-1][0].decode()
    return entries


@dataclass
class StreamCheck:
    missing: set[str]
    duplicates: int
    order_violations: list[str]
    unknown: set[str]


def check_stream(entries: list[dict[str, str]], inserted: list[Inserted]) -> StreamCheck:
    """Every inserted event in the stream? how many extra copies? per-aggregate order kept
    (first copies of an aggregate's events in id order)?"""
    by_event = {e.event_id: e for e in inserted}
    seen: set[str] = set()
    duplicates = 0
    last_id: dict[str, int] = defaultdict(int)
    violations: list[str] = []
    unknown: set[str] = set()
    for entry in entries:
        event_id = entry["event_id"]
        if event_id not in by_event:
            unknown.add(event_id)
            continue
        if event_id in seen:
            duplicates += 1
            continue
        seen.add(event_id)
        event = by_event[event_id]
        if event.id < last_id[event.aggregate_id]:
            violations.append(
                f"{event.aggregate_id}: event {event.id} after {last_id[event.aggregate_id]}"
            )
        last_id[event.aggregate_id] = event.id
    return StreamCheck(set(by_event) - seen, duplicates, violations, unknown)


def dispatcher_command(stack: DbStack, redis_url: str, name: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-c", "from sparkops_cli.main import main; main()",
        "outbox", "run",
        "--database-url", stack.app_conninfo(),
        "--publisher", "redis",
        "--redis-url", redis_url,
        "--name", name,
        "--poll-interval", "0.05",
        "--stats-interval", "0.5",
        *extra,
    ]  # fmt: skip


READY_LINE = "publishing to"  # logged by app.outbox.service once its loop runs


def start_dispatcher(
    stack: DbStack, redis_url: str, name: str, log_dir: Path, *extra: str, ready: bool = True
) -> subprocess.Popen:
    """A dispatcher as its own process, as in production (metrics off unless asked); with
    `ready`, return once its loop runs (signals handled, pool open)."""
    if "--metrics-port" not in extra:
        extra = (*extra, "--metrics-port", "0")
    path = log_dir / f"{name}.log"
    starts_before = path.read_text().count(READY_LINE) if path.exists() else 0
    log = open(path, "ab")  # noqa: SIM115 - the child owns it
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.Popen(
            dispatcher_command(stack, redis_url, name, *extra),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    finally:
        log.close()
    if ready:

        def started() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"dispatcher {name} exited:\n{path.read_text()[-3000:]}")
            return path.read_text().count(READY_LINE) > starts_before

        try:
            wait_until(started, timeout=30, what=f"dispatcher {name} to start")
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    return proc


def scrape(port: int) -> dict[str, float]:
    """Samples of the dispatcher's /metrics, by name plus labels (`name{k=v}` when labelled)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def outbox_counts(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT status, count(*) FROM outbox_events GROUP BY status").fetchall()
    return dict(rows)


def claimed_count(conn: psycopg.Connection) -> int:
    return conn.execute(
        "SELECT count(*) FROM outbox_events WHERE claimed_by IS NOT NULL"
    ).fetchone()[0]


class DispatcherThread:
    """An in-process dispatcher on its own event loop and pool, for tests that swap in a
    publisher (a fault-injecting wrapper) or read its collectors directly."""

    def __init__(self, conninfo: str, make_publisher, owner: str, config) -> None:
        self.conninfo = conninfo
        self.make_publisher = make_publisher
        self.owner = owner
        self.config = config
        self.dispatcher = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"dispatcher-{owner}", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    async def _main(self) -> None:
        # As the service sizes it: a connection per claim loop and one for housekeeping.
        workers = (self.config or settings.DispatcherSettings()).workers
        pool = app_pool(self.conninfo, max_size=workers + 1)
        await pool.open(wait=True, timeout=15)
        publisher = self.make_publisher()
        try:
            self.dispatcher = Dispatcher(OutboxStore(pool), publisher, self.owner, self.config)
            self.loop = asyncio.get_running_loop()
            self._ready.set()
            await self.dispatcher.run()
        finally:
            await publisher.aclose()
            await pool.close()

    def __enter__(self) -> DispatcherThread:
        self._thread.start()
        if not self._ready.wait(timeout=20) or self.error:
            raise RuntimeError(f"dispatcher thread did not start: {self.error!r}")
        return self

    def __exit__(self, *exc) -> None:
        if self.loop is not None and self.dispatcher is not None:
            self.loop.call_soon_threadsafe(self.dispatcher.stop.set)
        self._thread.join(timeout=20)
        assert not self._thread.is_alive(), "dispatcher thread did not stop"
        if self.error:
            raise self.error
