"""sparkops.wait: a probe's failure is "not yet", except StopWaiting, which ends the wait."""

from __future__ import annotations

import time

import pytest

from sparkops.wait import DeadlineExceeded, StopWaiting, wait_until


def test_a_failing_probe_is_retried_until_the_deadline():
    calls = []

    def probe():
        calls.append(1)
        raise RuntimeError("not up")

    with pytest.raises(DeadlineExceeded) as caught:
        wait_until(probe, timeout=0.3, what="x", interval=0.01)
    assert len(calls) > 2 and isinstance(caught.value.__cause__, RuntimeError)


def test_stop_waiting_ends_the_wait_at_once():
    start = time.monotonic()
    with pytest.raises(StopWaiting, match="died"):
        wait_until(lambda: (_ for _ in ()).throw(StopWaiting("died")), timeout=30, what="x")
    assert time.monotonic() - start < 1
