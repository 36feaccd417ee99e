"""Deadline-bounded polling: the one way this project waits for something to become true."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(TimeoutError):
    """The condition did not hold before the deadline."""


class StopWaiting(Exception):
    """Raised by a probe when the condition can no longer become true (the process it waits
    for has died): `wait_until` ends at once and lets it through, instead of polling on to
    the deadline."""


def wait_until(
    probe: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    max_interval: float = 1.0,
) -> T:
    """Call `probe` until it returns a truthy value or raises nothing; return that value.

    Exceptions from `probe` count as "not yet"; the last one is chained onto the timeout so
    the caller sees why the condition never held. `StopWaiting` ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    delay = interval
    while True:
        try:
            value = probe()
            if value:
                return value
            last_error = None
        except StopWaiting:
            raise
        except Exception as exc:  # the probe's failure is the "not yet" signal
            last_error = exc
        if time.monotonic() >= deadline:
            raise DeadlineExceeded(f"timed out after {timeout:.1f}s waiting for {what}") from (
                last_error
            )
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, max_interval)
