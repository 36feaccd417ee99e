"""A circuit breaker per exchange: closed, open, half-open.

Closed: calls go through; `failure_threshold` consecutive failures open the circuit.
Open: calls are refused with CircuitOpen, without touching the network, until `cool_down`
seconds have passed; then the circuit is half-open.
Half-open: exactly one trial call goes through (others are refused); its success closes the
circuit, its failure opens it again for another cool-down.

"Failure" means the exchange could not answer (ExchangeUnavailable, MalformedResponse); an
answer such as "unknown symbol" or "bad signature" proves the exchange is up and counts as
success. The state is exported as a gauge (0 closed, 1 half-open, 2 open).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from app.exchanges import metrics, settings
from app.exchanges.errors import CircuitOpen


class State(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        exchange: str,
        *,
        failure_threshold: int = settings.CIRCUIT_FAILURE_THRESHOLD,
        cool_down: float = settings.CIRCUIT_COOL_DOWN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if cool_down <= 0:
            raise ValueError(f"cool_down must be positive seconds, got {cool_down}")
        self.exchange = exchange
        self.failure_threshold = failure_threshold
        self.cool_down = cool_down
        self._clock = clock
        self._state = State.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self._gauge = metrics.CIRCUIT_STATE.labels(exchange)
        self._gauge.set(State.CLOSED)

    @property
    def state(self) -> State:
        """The current state; an open circuit whose cool-down is over reads as half-open."""
        if self._state is State.OPEN and self._clock() - self._opened_at >= self.cool_down:
            self._set(State.HALF_OPEN)
        return self._state

    def before_call(self) -> None:
        """Admit a call or raise CircuitOpen. Every admitted call must end in exactly one of
        `record_success`, `record_failure` or `release`."""
        state = self.state
        if state is State.CLOSED:
            return
        if state is State.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return
        remaining = (
            self.cool_down - (self._clock() - self._opened_at) if state is State.OPEN else 0.0
        )
        raise CircuitOpen(self.exchange, retry_after=max(remaining, 0.0))

    def record_success(self) -> None:
        self._trial_in_flight = False
        self._failures = 0
        if self._state is not State.CLOSED:
            self._set(State.CLOSED)

    def record_failure(self) -> None:
        self._trial_in_flight = False
        self._failures += 1
        if self._state is State.HALF_OPEN or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self._set(State.OPEN)

    def trip(self, seconds: float) -> None:
        """Open at once, for the longer of `seconds` and the cool-down: the exchange has
        banned us (418) and every call before the ban ends would only lengthen it. The state
        (the gauge) tells the app's operators the exchange is unusable for now."""
        self._trial_in_flight = False
        self._opened_at = self._clock() + max(seconds, self.cool_down) - self.cool_down
        self._set(State.OPEN)

    def release(self) -> None:
        """The admitted call ended without a verdict (cancelled): free the trial slot."""
        self._trial_in_flight = False

    def _set(self, state: State) -> None:
        self._state = state
        self._gauge.set(state)

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker({self.exchange!r}, state={self._state.name}, "
            f"failures={self._failures})"
        )
