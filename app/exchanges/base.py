"""The request path shared by the exchange clients: rate-limit gate, circuit breaker,
timeouts, status mapping, JSON decoding, metrics.

Each client supplies how its error bodies map to typed errors and how a body is parsed;
everything else about a call (what counts as an outage, what is counted) is decided here
once, so Binance and BTCTurk behave alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Self, TypeVar

import httpx

from app.exchanges import metrics, settings
from app.exchanges.circuit import CircuitBreaker
from app.exchanges.errors import (
    CircuitOpen,
    ExchangeError,
    ExchangeUnavailable,
    IpBanned,
    MalformedResponse,
    RateLimited,
)
from app.exchanges.parsing import load_json
from app.exchanges.ratelimit import RateLimitGate

T = TypeVar("T")
# Maps (status, decoded body) of a 4xx answer to the typed error to raise.
ErrorMapper = Callable[[int, Any], ExchangeError]


def default_timeout() -> httpx.Timeout:
    return httpx.Timeout(settings.READ_TIMEOUT_SECONDS, connect=settings.CONNECT_TIMEOUT_SECONDS)


class ExchangeHttp:
    def __init__(
        self,
        exchange: str,
        base_url: str,
        *,
        timeout: httpx.Timeout | float | None,
        breaker: CircuitBreaker | None,
        gate: RateLimitGate | None,
        error_mapper: ErrorMapper,
        decimals: bool,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.exchange = exchange
        self.breaker = breaker or CircuitBreaker(exchange)
        self.gate = gate or RateLimitGate(exchange)
        self._error_mapper = error_mapper
        self._decimals = decimals
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout if timeout is not None else default_timeout(),
            transport=transport,
            headers={"User-Agent": "spark-app"},
            follow_redirects=False,
        )

    @property
    def base_url(self) -> str:
        return str(self._client.base_url)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(
        self,
        endpoint: str,
        method: str,
        url: str,
        parse: Callable[[Any], T],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> T:
        """One request: gate, breaker, send, classify, parse. Raises only ExchangeError."""
        count = metrics.REQUESTS.labels
        try:
            await self.gate.wait_turn()
            self.breaker.before_call()
        except RateLimited:
            count(self.exchange, endpoint, "rate_limited").inc()
            raise
        except CircuitOpen:
            count(self.exchange, endpoint, "circuit_open").inc()
            raise
        try:
            response = await self._client.request(method, url, headers=headers)
        except httpx.TimeoutException as exc:
            self._failed(endpoint, "unavailable")
            raise ExchangeUnavailable(self.exchange, f"{endpoint}: timed out ({exc!r})") from exc
        except httpx.TransportError as exc:
            self._failed(endpoint, "unavailable")
            raise ExchangeUnavailable(self.exchange, f"{endpoint}: {exc!r}") from exc
        except BaseException:
            self.breaker.release()  # cancelled: no verdict on the exchange's health
            raise
        try:
            result = self._classify(endpoint, response, parse)
        except (ExchangeUnavailable, MalformedResponse) as exc:
            self._failed(
                endpoint, "unavailable" if isinstance(exc, ExchangeUnavailable) else "malformed"
            )
            raise
        except IpBanned as exc:
            # A ban: the exchange refuses us for retry_after; the breaker opens for as long,
            # so its gauge says the exchange is unusable, not merely slow.
            self.breaker.trip(exc.retry_after)
            count(self.exchange, endpoint, "rate_limited").inc()
            raise
        except RateLimited:
            self.breaker.record_success()  # it answered; back-off is the gate's business
            count(self.exchange, endpoint, "rate_limited").inc()
            raise
        except ExchangeError:
            self.breaker.record_success()
            count(self.exchange, endpoint, "exchange_error").inc()
            raise
        except Exception as exc:
            # A body shape the parsers did not foresee: still a typed error, never a crash
            # (and never a half-open trial slot left taken).
            self._failed(endpoint, "malformed")
            raise MalformedResponse(
                self.exchange, f"{endpoint}: unparseable response ({exc!r})"
            ) from exc
        self.breaker.record_success()
        count(self.exchange, endpoint, "ok").inc()
        return result

    def _failed(self, endpoint: str, outcome: str) -> None:
        self.breaker.record_failure()
        metrics.REQUESTS.labels(self.exchange, endpoint, outcome).inc()

    def _classify(self, endpoint: str, response: httpx.Response, parse: Callable[[Any], T]) -> T:
        status = response.status_code
        retry_after = self.gate.observe(status, response.headers)
        if retry_after is not None:
            error = IpBanned if status == 418 else RateLimited
            raise error(
                self.exchange,
                f"{endpoint}: {_snippet(response)}",
                retry_after=retry_after,
                status=status,
            )
        if status >= 500:
            raise ExchangeUnavailable(
                self.exchange, f"{endpoint}: server error: {_snippet(response)}", status=status
            )
        body = load_json(
            self.exchange,
            response.text,
            response.headers.get("content-type", ""),
            decimals=self._decimals,
        )
        if 400 <= status < 500:
            raise self._error_mapper(status, body)
        if not 200 <= status < 300:
            raise MalformedResponse(
                self.exchange, f"{endpoint}: unexpected HTTP {status}", status=status
            )
        return parse(body)

    def __repr__(self) -> str:
        return f"ExchangeHttp({self.exchange!r}, base_url={self.base_url!r})"


def _snippet(response: httpx.Response) -> str:
    return f"HTTP {response.status_code} {response.text[:120]!r}"


class ExchangeClient:
    """What every exchange client shares around its `ExchangeHttp`: the breaker and rate
    gate it exposes, and closing (directly or as an async context manager)."""

    _http: ExchangeHttp

    @property
    def breaker(self) -> CircuitBreaker:
        return self._http.breaker

    @property
    def gate(self) -> RateLimitGate:
        return self._http.gate

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
