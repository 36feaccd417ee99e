"""SIGTERM mid-load: the dispatcher settles its batch, exits 0 and leaves nothing claimed."""

from __future__ import annotations

import signal

from sparkops.wait import wait_until
from tests.conftest import connect_app
from tests.outbox.support import (
    STREAM,
    claimed_count,
    insert_events,
    read_stream,
    start_dispatcher,
)

EVENTS = 20_000


def test_sigterm_exits_cleanly_with_nothing_claimed(clean_db, redis_server, redis_client, tmp_path):
    with connect_app(clean_db) as conn:
        insert_events(conn, EVENTS, 100)
        proc = start_dispatcher(
            clean_db, redis_server.url, "sigterm", tmp_path, "--batch-size", "200"
        )
        try:
            wait_until(lambda: redis_client.xlen(STREAM) >= 1000, timeout=30, what="publishing")
            proc.send_signal(signal.SIGTERM)
            returncode = proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log = (tmp_path / "sigterm.log").read_text()
        assert returncode == 0, log
        assert "stopped cleanly" in log
        assert claimed_count(conn) == 0
        delivered = {
            row[0]
            for row in conn.execute(
                "SELECT event_id::text FROM outbox_events WHERE status = 'delivered'"
            )
        }
    # Stopped part way, and what it published is exactly what it recorded as delivered.
    assert 0 < len(delivered) < EVENTS
    published = [entry["event_id"] for entry in read_stream(redis_client)]
    assert len(published) == len(set(published))
    assert set(published) == delivered
