"""Two dispatcher processes share one outbox: every event once, in per-aggregate order."""

from __future__ import annotations

import time

from sparkops.metric_names import OUTBOX_PUBLISHED as PUBLISHED
from sparkops.wait import wait_until
from testkit.proc import free_port, stop_process
from tests.conftest import connect_app
from tests.outbox.support import (
    check_stream,
    claimed_count,
    insert_events,
    outbox_counts,
    read_stream,
    scrape,
    start_dispatcher,
)

EVENTS = 10_000
AGGREGATES = 200


def test_two_dispatchers_publish_each_event_once_in_aggregate_order(
    clean_db, redis_server, redis_client, tmp_path
):
    with connect_app(clean_db) as conn:
        ports = [free_port(), free_port()]
        # Batches of 100 over 200 aggregates: room for both (one dispatcher holding every
        # aggregate's head would leave the other nothing to claim, by design). Both are
        # running before the events arrive: started together, the one that happened to be
        # ready first could drain 10,000 events before the other's first claim.
        procs = [
            start_dispatcher(
                clean_db, redis_server.url, f"pair-{n}", tmp_path,
                "--metrics-port", str(port), "--batch-size", "100",
            )
            for n, port in enumerate(ports, 1)
        ]  # fmt: skip
        inserted = insert_events(conn, EVENTS, AGGREGATES)
        started = time.monotonic()
        try:
            wait_until(
                lambda: outbox_counts(conn).get("delivered", 0) == EVENTS,
                timeout=90,
                what=f"{EVENTS} events delivered",
            )
            elapsed = time.monotonic() - started
            published = [scrape(port)[f"{PUBLISHED}{{publisher=redis}}"] for port in ports]
        finally:
            for proc in procs:
                stop_process(proc)
        assert [p.returncode for p in procs] == [0, 0], (tmp_path / "pair-1.log").read_text()
        assert claimed_count(conn) == 0
    # Both really shared the work, and together published each event once.
    assert all(count > 0 for count in published), published
    assert sum(published) == EVENTS

    entries = read_stream(redis_client)
    check = check_stream(entries, inserted)
    print(
        f"\n{EVENTS} events by two dispatchers in {elapsed:.1f}s ({EVENTS / elapsed:.0f}/s), "
        f"split {published}"
    )
    assert not check.missing, f"{len(check.missing)} events never arrived"
    assert check.duplicates == 0
    assert not check.unknown
    assert not check.order_violations, check.order_violations[:10]
    assert len(entries) == EVENTS
