"""Circuit breaker states with an injected clock."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from app.exchanges.circuit import CircuitBreaker, State
from app.exchanges.errors import CircuitOpen
from sparkops import metric_names as names


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gauge(exchange: str) -> float | None:
    return REGISTRY.get_sample_value(names.EXCHANGE_CIRCUIT_STATE, {"exchange": exchange})


def test_opens_after_threshold_consecutive_failures():
    clock = Clock()
    breaker = CircuitBreaker("binance", failure_threshold=3, cool_down=10, clock=clock)
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    assert breaker.state is State.CLOSED
    breaker.before_call()
    breaker.record_success()  # a success resets the count
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    assert breaker.state is State.CLOSED
    breaker.before_call()
    breaker.record_failure()
    assert breaker.state is State.OPEN
    assert gauge("binance") == 2
    with pytest.raises(CircuitOpen) as refused:
        breaker.before_call()
    assert refused.value.retry_after == pytest.approx(10)


def test_half_open_admits_one_trial_and_success_closes():
    clock = Clock()
    breaker = CircuitBreaker("binance", failure_threshold=1, cool_down=10, clock=clock)
    breaker.before_call()
    breaker.record_failure()
    clock.now += 9.9
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    clock.now += 0.1
    assert breaker.state is State.HALF_OPEN
    assert gauge("binance") == 1
    breaker.before_call()  # the trial
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # a second caller while the trial runs
    breaker.record_success()
    assert breaker.state is State.CLOSED
    assert gauge("binance") == 0
    breaker.before_call()


def test_failed_trial_reopens_for_a_full_cool_down():
    clock = Clock()
    breaker = CircuitBreaker("btcturk", failure_threshold=2, cool_down=5, clock=clock)
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    clock.now += 5
    breaker.before_call()
    breaker.record_failure()  # one failure in half-open is enough
    assert breaker.state is State.OPEN
    clock.now += 4.9
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    clock.now += 0.1
    breaker.before_call()


def test_released_trial_frees_the_slot():
    clock = Clock()
    breaker = CircuitBreaker("binance", failure_threshold=1, cool_down=1, clock=clock)
    breaker.before_call()
    breaker.record_failure()
    clock.now += 1
    breaker.before_call()
    breaker.release()  # cancelled: no verdict
    assert breaker.state is State.HALF_OPEN
    breaker.before_call()


@pytest.mark.parametrize(("threshold", "cool_down"), [(0, 1), (1, 0)])
def test_bad_settings_are_refused(threshold, cool_down):
    with pytest.raises(ValueError):
        CircuitBreaker("binance", failure_threshold=threshold, cool_down=cool_down)
