"""Client-side rate limiting: honour Retry-After, and slow down before Binance's weight limit.

429 (rate limited) and 418 (IP banned after ignoring 429s) carry Retry-After; until it has
passed the gate refuses calls locally with RateLimited / IpBanned, so a client in back-off
sends nothing (Binance escalates bans for clients that keep calling).

Binance reports the request weight used in the current minute in X-MBX-USED-WEIGHT-1M. The
window is the calendar minute (UTC). Above `slow_fraction` of the limit the gate delays each
request by a share of the time left in the window that grows linearly from 0 (at the
threshold) to all of it (at the limit): the remaining budget is spread over the rest of the
minute instead of being spent at once and answered with a 429.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import Awaitable, Callable, Mapping

from app.exchanges import metrics, settings
from app.exchanges.errors import IpBanned, RateLimited

WEIGHT_HEADER = "x-mbx-used-weight-1m"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


class RateLimitGate:
    def __init__(
        self,
        exchange: str,
        *,
        weight_limit: int | None = None,
        slow_fraction: float = settings.WEIGHT_SLOW_DOWN_FRACTION,
        window: float = settings.WEIGHT_WINDOW_SECONDS,
        default_retry_after: float = settings.DEFAULT_RETRY_AFTER_SECONDS,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if weight_limit is not None and weight_limit < 1:
            raise ValueError(f"weight_limit must be a positive weight, got {weight_limit}")
        if not 0 < slow_fraction <= 1:
            raise ValueError(f"slow_fraction must be in (0, 1], got {slow_fraction}")
        self.exchange = exchange
        self.weight_limit = weight_limit
        self.slow_fraction = slow_fraction
        self.window = window
        self.default_retry_after = default_retry_after
        self._clock = clock
        self._sleep = sleep
        self._blocked_until = 0.0
        self._banned = False
        self._used_weight = 0
        self._observed_at = -math.inf

    # --- before a request ---------------------------------------------------------------
    def check(self) -> None:
        """Raise RateLimited/IpBanned while a Retry-After is running."""
        remaining = self._blocked_until - self._clock()
        if remaining > 0:
            error = IpBanned if self._banned else RateLimited
            raise error(self.exchange, "refused locally: back-off running", retry_after=remaining)

    def delay(self) -> float:
        """Seconds to wait before the next request, from the last reported weight."""
        if self.weight_limit is None:
            return 0.0
        now = self._clock()
        window_start = math.floor(now / self.window) * self.window
        if self._observed_at < window_start:
            return 0.0  # the weight was reported in an earlier window, which has reset
        left_in_window = window_start + self.window - now
        threshold = self.slow_fraction * self.weight_limit
        if self._used_weight < threshold:
            return 0.0
        if self._used_weight >= self.weight_limit or threshold >= self.weight_limit:
            return left_in_window
        share = (self._used_weight - threshold) / (self.weight_limit - threshold)
        return left_in_window * share

    async def wait_turn(self) -> None:
        """Refuse while backing off; otherwise sleep the weight delay, if any."""
        self.check()
        pause = self.delay()
        if pause > 0:
            await self._sleep(pause)

    # --- after a response ---------------------------------------------------------------
    def observe(self, status: int, headers: Mapping[str, str]) -> float | None:
        """Record a response; for 429/418 start the back-off and return its seconds."""
        now = self._clock()
        weight = headers.get(WEIGHT_HEADER)
        if weight is not None and weight.strip().isdigit():
            self._used_weight = int(weight)
            self._observed_at = now
        if status not in (418, 429):
            return None
        metrics.RATE_LIMITED.labels(self.exchange, str(status)).inc()
        retry_after = parse_retry_after(headers.get("retry-after"), now)
        if retry_after is None:
            retry_after = self.default_retry_after
        until = now + retry_after
        if self._blocked_until <= now:
            self._banned = False  # the previous back-off is over
        # Never shorten a back-off already running; a ban outranks a plain 429.
        self._blocked_until = max(self._blocked_until, until)
        self._banned = self._banned or status == 418
        return retry_after
