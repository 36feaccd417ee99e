"""BTCTurk public REST client: ticker and order book (API v2).

Bodies come wrapped as {"data": ..., "success": true, "message": null, "code": 0}; errors
as {"success": false, "message": "...", "code": n} with HTTP 400 for bad requests.

Ticker prices are JSON numbers on BTCTurk (order-book levels are strings). Bodies are
decoded with parse_float=Decimal, so "last": 304.41 becomes Decimal("304.41") from its
exact digits and never passes through a float (see app.exchanges.parsing).

Unknown pair: BTCTurk documents only "HTTP 400 for bad requests" with the error envelope,
not a specific code. Both endpoints here take only the pair and a limit that is checked
before sending, so a 400 from them is read as UnknownSymbol; an empty ticker list for a
pair is read the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx

from app.exchanges import parsing, settings
from app.exchanges.base import ExchangeClient, ExchangeHttp
from app.exchanges.circuit import CircuitBreaker
from app.exchanges.errors import ExchangeError, MalformedResponse, UnknownSymbol
from app.exchanges.ratelimit import RateLimitGate

EXCHANGE = settings.BTCTURK
_PAIR = re.compile(r"[A-Z0-9]{2,12}_?[A-Z0-9]{2,12}")


def _check_pair(pair: str) -> str:
    if not isinstance(pair, str) or not _PAIR.fullmatch(pair):
        raise ValueError(f"pair must look like BTCUSDT or BTC_USDT (upper case): {pair!r}")
    return pair


def _error_for(status: int, body: Any) -> ExchangeError:
    if not isinstance(body, dict) or body.get("success") is not False:
        return MalformedResponse(
            EXCHANGE, f"error body without success=false: {body!r}", status=status
        )
    message = body.get("message") or "no message"
    code = body.get("code") if isinstance(body.get("code"), int) else None
    kind = UnknownSymbol if status == 400 else ExchangeError
    return kind(EXCHANGE, str(message), status=status, code=code)


def _data(body: Any) -> Any:
    """The `data` of a successful envelope; success=false on a 200 is an exchange error."""
    if not isinstance(body, dict) or "success" not in body:
        raise MalformedResponse(EXCHANGE, f"expected the {{data, success}} envelope: {body!r:.120}")
    if body["success"] is not True:
        raise ExchangeError(EXCHANGE, str(body.get("message") or "success=false"))
    if body.get("data") is None:
        raise MalformedResponse(EXCHANGE, "missing field 'data'")
    return body["data"]


class BtcTurkClient(ExchangeClient):
    def __init__(
        self,
        base_url: str = settings.BTCTURK_BASE_URL,
        *,
        timeout: httpx.Timeout | float | None = None,
        breaker: CircuitBreaker | None = None,
        gate: RateLimitGate | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = ExchangeHttp(
            EXCHANGE,
            base_url,
            timeout=timeout,
            breaker=breaker,
            gate=gate
            or RateLimitGate(
                EXCHANGE, default_retry_after=settings.BTCTURK_DEFAULT_RETRY_AFTER_SECONDS
            ),
            error_mapper=_error_for,
            decimals=True,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"BtcTurkClient(base_url={self._http.base_url!r})"

    async def ticker(self, pair: str) -> parsing.PairTicker:
        query = urlencode({"pairSymbol": _check_pair(pair)})
        return await self._http.call(
            "ticker", "GET", f"/api/v2/ticker?{query}", _parse_ticker(pair.replace("_", ""))
        )

    async def order_book(self, pair: str, limit: int = 100) -> parsing.OrderBook:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit must be an int, got {limit!r}")
        if not 1 <= limit <= settings.BTCTURK_ORDER_BOOK_MAX_LIMIT:
            raise ValueError(
                f"limit must be in 1..{settings.BTCTURK_ORDER_BOOK_MAX_LIMIT}, got {limit}"
            )
        query = urlencode({"pairSymbol": _check_pair(pair), "limit": limit})
        return await self._http.call(
            "order_book",
            "GET",
            f"/api/v2/orderbook?{query}",
            lambda body: parsing.parse_order_book(EXCHANGE, _data(body)),
        )


def _parse_ticker(pair: str) -> Callable[[Any], parsing.PairTicker]:
    def parse(body: Any) -> parsing.PairTicker:
        items = _data(body)
        if not isinstance(items, list):
            raise MalformedResponse(EXCHANGE, f"ticker data must be a list, got {items!r:.120}")
        if not items:
            raise UnknownSymbol(EXCHANGE, f"no ticker for pair {pair}")
        for item in items:
            if isinstance(item, dict) and item.get("pair") == pair:
                return parsing.parse_pair_ticker(EXCHANGE, item)
        raise MalformedResponse(EXCHANGE, f"ticker data holds no entry for pair {pair}")

    return parse
