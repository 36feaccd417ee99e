"""Steady traffic against the app: a new connection per request at a fixed rate, each
outcome recorded (status, or the connection error or timeout) with when it started and how
long it took. For the zero-downtime test and benchmark: what a restart costs the clients."""

from __future__ import annotations

import http.client
import ssl
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


@dataclass(frozen=True)
class Outcome:
    started: float  # time.monotonic()
    seconds: float
    status: int | None  # None: no answer
    error: str = ""

    @property
    def failed(self) -> bool:
        return self.status is None or self.status >= 500


@dataclass
class Traffic:
    """`next_request(i)` gives the i-th request; `rate` requests a second, each on a new
    connection, until stop() or `max_seconds` (a bound, whatever the caller does)."""

    base_url: str
    next_request: Callable[[int], Request]
    rate: float = 80.0
    timeout: float = 10.0
    max_seconds: float = 300.0
    workers: int = 32
    outcomes: list[Outcome] = field(default_factory=list)
    # For an https:// base URL (through the load balancer): whom to trust, e.g. the deploy's CA.
    ssl_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        url = urlsplit(self.base_url)
        self._https = url.scheme == "https"
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or (443 if self._https else 80)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _one(self, request: Request) -> None:
        started = time.monotonic()
        status, error = None, ""
        if self._https:
            conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=self.ssl_context
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        try:
            conn.request(request.method, request.path, body=request.body, headers=request.headers)
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        with self._lock:
            self.outcomes.append(Outcome(started, time.monotonic() - started, status, error))

    def _run(self) -> None:
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            i = 0
            while not self._stop.is_set() and i < int(self.rate * self.max_seconds):
                due = start + i / self.rate
                delay = due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                pool.submit(self._one, self.next_request(i))
                i += 1

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Outcome]:
        """Stop sending, wait for the answers of requests sent (each bounded by `timeout`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 30)
        with self._lock:
            return sorted(self.outcomes, key=lambda o: o.started)


def failures(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.failed]


def p99(outcomes: list[Outcome]) -> float:
    """The 99th percentile latency in seconds (0 with fewer than two answers)."""
    times = [o.seconds for o in outcomes]
    if len(times) < 2:
        return times[0] if times else 0.0
    return statistics.quantiles(times, n=100, method="inclusive")[98]


def during(outcomes: list[Outcome], start: float, end: float) -> list[Outcome]:
    """Requests started within [start, end] (monotonic times)."""
    return [o for o in outcomes if start <= o.started <= end]
