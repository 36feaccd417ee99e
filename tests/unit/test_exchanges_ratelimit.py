"""Retry-After back-off and Binance weight slow-down, with an injected clock and sleep."""

from __future__ import annotations

import asyncio
import email.utils

import pytest

from app.exchanges.errors import IpBanned, RateLimited
from app.exchanges.ratelimit import RateLimitGate, parse_retry_after

MINUTE_START = 1_700_000_040.0  # a multiple of 60: the start of a weight window


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def gate(clock: Clock, **kwargs) -> RateLimitGate:
    kwargs.setdefault("weight_limit", 1200)
    return RateLimitGate("binance", clock=clock, sleep=clock.sleep, **kwargs)


def test_parse_retry_after_seconds_and_dates():
    assert parse_retry_after("30", now=0) == 30
    assert parse_retry_after(" 2.5 ", now=0) == 2.5
    assert parse_retry_after("-4", now=0) == 0
    date = email.utils.formatdate(MINUTE_START + 90, usegmt=True)
    assert parse_retry_after(date, now=MINUTE_START) == pytest.approx(90)
    for bad in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(bad, now=0) is None


def test_429_refuses_locally_until_retry_after_passes():
    clock = Clock(MINUTE_START)
    limiter = gate(clock)
    assert limiter.observe(429, {"retry-after": "30"}) == 30
    clock.now += 29
    with pytest.raises(RateLimited) as refused:
        limiter.check()
    assert not isinstance(refused.value, IpBanned)
    assert refused.value.retry_after == pytest.approx(1)
    clock.now += 1
    limiter.check()


def test_418_is_a_ban_and_is_never_shortened_by_a_later_429():
    clock = Clock(MINUTE_START)
    limiter = gate(clock)
    limiter.observe(418, {"retry-after": "120"})
    limiter.observe(429, {"retry-after": "5"})
    clock.now += 60
    with pytest.raises(IpBanned) as refused:
        limiter.check()
    assert refused.value.retry_after == pytest.approx(60)


def test_missing_retry_after_uses_the_default():
    clock = Clock(MINUTE_START)
    limiter = gate(clock, default_retry_after=45)
    assert limiter.observe(429, {}) == 45


def test_no_delay_below_the_slow_down_threshold():
    clock = Clock(MINUTE_START + 30)
    limiter = gate(clock)
    limiter.observe(200, {"x-mbx-used-weight-1m": "959"})  # 80% of 1200 is 960
    assert limiter.delay() == 0


def test_delay_grows_from_threshold_to_limit():
    clock = Clock(MINUTE_START + 30)  # 30 s left in the window
    limiter = gate(clock)
    limiter.observe(200, {"x-mbx-used-weight-1m": "1080"})  # halfway from 960 to 1200
    assert limiter.delay() == pytest.approx(15)
    limiter.observe(200, {"x-mbx-used-weight-1m": "1200"})
    assert limiter.delay() == pytest.approx(30)  # at the limit: wait for the window reset


def test_weight_from_an_earlier_window_does_not_delay():
    clock = Clock(MINUTE_START + 59)
    limiter = gate(clock)
    limiter.observe(200, {"x-mbx-used-weight-1m": "1199"})
    clock.now += 2  # the next minute: Binance has reset the counter
    assert limiter.delay() == 0


def test_wait_turn_sleeps_through_the_injected_sleep():
    clock = Clock(MINUTE_START + 40)
    limiter = gate(clock, weight_limit=100, slow_fraction=0.5)
    limiter.observe(200, {"x-mbx-used-weight-1m": "75"})
    asyncio.run(limiter.wait_turn())
    assert clock.slept == [pytest.approx(10)]


def test_gate_without_weight_limit_never_delays():
    clock = Clock(MINUTE_START)
    limiter = RateLimitGate("btcturk", clock=clock, sleep=clock.sleep)
    limiter.observe(200, {"x-mbx-used-weight-1m": "100000"})
    assert limiter.delay() == 0


@pytest.mark.parametrize(
    "kwargs", [{"weight_limit": 0}, {"slow_fraction": 0}, {"slow_fraction": 1.5}]
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        RateLimitGate("binance", **kwargs)
