"""Binance spot REST client: ticker price, account, new order, order lookup.

Signed endpoints (account, orders) send `recvWindow` and a `timestamp` corrected by the
server-time offset (GET /api/v3/time, resynced once on -1021), signed with HMAC-SHA256 over
the exact query string sent; all parameters travel in the query string, POST included,
so what is signed is what is sent.

Order placement is safe to retry: `newClientOrderId` is derived from the caller's
idempotency key, and a 5xx or timeout ("sent, outcome unknown") is settled by looking the
order up by that id before placing it again, at most once. See `new_order`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx

from app.exchanges import parsing, settings
from app.exchanges.base import ExchangeClient, ExchangeHttp
from app.exchanges.circuit import CircuitBreaker
from app.exchanges.credentials import Secret, load_secret
from app.exchanges.errors import (
    ExchangeError,
    ExchangeUnavailable,
    MalformedResponse,
    OrderStatusUnknown,
    SignatureError,
    UnknownSymbol,
)
from app.exchanges.ratelimit import RateLimitGate

EXCHANGE = settings.BINANCE

# Binance error codes this client acts on.
CODE_TIMESTAMP_OUTSIDE_RECV_WINDOW = -1021
CODE_INVALID_SIGNATURE = -1022
CODE_INVALID_SYMBOL = -1121
CODE_DUPLICATE_ORDER = -2010  # "Duplicate order sent." (client order id of an open order)
CODE_NO_SUCH_ORDER = -2013

SIDES = ("BUY", "SELL")
ORDER_TYPES = ("LIMIT", "MARKET")
_SYMBOL = re.compile(r"[A-Z0-9]{2,20}")
CLIENT_ORDER_ID = re.compile(r"[a-zA-Z0-9-_]{1,36}")


def sign(secret: str, query: str) -> str:
    """HMAC-SHA256 of the query string, hex: Binance's SIGNED-endpoint signature."""
    return hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()


def client_order_id(idempotency_key: str) -> str:
    """The newClientOrderId for an idempotency key: same key, same id, on every attempt.

    "spk-" + 32 hex characters of SHA-256 (128 bits): 36 characters, within Binance's
    ^[a-zA-Z0-9-_]{1,36}$.
    """
    if not isinstance(idempotency_key, str) or not idempotency_key:
        raise ValueError("idempotency_key must be a non-empty string")
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return settings.CLIENT_ORDER_ID_PREFIX + digest[: settings.CLIENT_ORDER_ID_HASH_CHARS]


def wire_decimal(value: Decimal, name: str) -> str:
    """A positive Decimal as Binance wants it: plain notation, never a float."""
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be a Decimal (money is never a float), got {value!r}")
    if not value.is_finite() or value <= 0:
        raise ValueError(f"{name} must be a positive finite Decimal, got {value}")
    return format(value, "f")


def _check_symbol(symbol: str) -> str:
    if not isinstance(symbol, str) or not _SYMBOL.fullmatch(symbol):
        raise ValueError(f"symbol must be upper-case letters and digits like BTCUSDT: {symbol!r}")
    return symbol


def _error_for(status: int, body: Any) -> ExchangeError:
    """A 4xx body {"code": -1121, "msg": "Invalid symbol."} as a typed error."""
    code = body.get("code") if isinstance(body, dict) else None
    msg = body.get("msg") if isinstance(body, dict) else None
    if not isinstance(code, int) or not isinstance(msg, str):
        return MalformedResponse(EXCHANGE, f"error body without code/msg: {body!r}", status=status)
    kind = {CODE_INVALID_SIGNATURE: SignatureError, CODE_INVALID_SYMBOL: UnknownSymbol}.get(
        code, ExchangeError
    )
    return kind(EXCHANGE, msg, status=status, code=code)


def _is_duplicate(exc: ExchangeError) -> bool:
    # -2010 covers every new-order rejection; only its message tells a duplicate apart.
    return exc.code == CODE_DUPLICATE_ORDER and "duplicate" in str(exc).lower()


class BinanceClient(ExchangeClient):
    def __init__(
        self,
        base_url: str = settings.BINANCE_BASE_URL,
        api_key: Secret | None = None,
        api_secret: Secret | None = None,
        *,
        timeout: httpx.Timeout | float | None = None,
        recv_window_ms: int = settings.BINANCE_RECV_WINDOW_MS,
        weight_limit: int = settings.BINANCE_WEIGHT_LIMIT_PER_MINUTE,
        slow_fraction: float = settings.WEIGHT_SLOW_DOWN_FRACTION,
        breaker: CircuitBreaker | None = None,
        gate: RateLimitGate | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        for name, value in (("api_key", api_key), ("api_secret", api_secret)):
            if value is not None and not isinstance(value, Secret):
                raise TypeError(f"{name} must be a Secret (so it never shows in logs)")
        if not 0 < recv_window_ms <= 60000:
            raise ValueError(f"recv_window_ms must be in 1..60000, got {recv_window_ms}")
        self._api_key = api_key
        self._api_secret = api_secret
        self.recv_window_ms = recv_window_ms
        self._clock = clock
        self._sleep = sleep
        self._offset_ms: int | None = None
        gate = gate or RateLimitGate(
            EXCHANGE,
            weight_limit=weight_limit,
            slow_fraction=slow_fraction,
            clock=clock,
            sleep=sleep,
        )
        self._http = ExchangeHttp(
            EXCHANGE,
            base_url,
            timeout=timeout,
            breaker=breaker,
            gate=gate,
            error_mapper=_error_for,
            decimals=False,  # Binance money is strings: a JSON float is refused, not coerced
            transport=transport,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> BinanceClient:
        """A client with keys from SPARK_BINANCE_API_KEY / _SECRET (or their *_FILE)."""
        return cls(
            api_key=load_secret(settings.BINANCE_API_KEY_ENV, environ),
            api_secret=load_secret(settings.BINANCE_API_SECRET_ENV, environ),
            **kwargs,
        )

    def __repr__(self) -> str:
        key = "***" if self._api_key is not None else None
        return f"BinanceClient(base_url={self._http.base_url!r}, api_key={key!r})"

    # --- public endpoints ---------------------------------------------------------------
    async def ticker_price(self, symbol: str) -> parsing.TickerPrice:
        query = urlencode({"symbol": _check_symbol(symbol)})
        return await self._http.call(
            "ticker_price",
            "GET",
            f"/api/v3/ticker/price?{query}",
            lambda body: parsing.parse_ticker_price(EXCHANGE, body),
        )

    async def sync_time(self) -> int:
        """Measure the server-time offset (ms) used for signed timestamps."""
        sent = self._clock()
        server_ms = await self._http.call(
            "time", "GET", "/api/v3/time", lambda body: parsing.parse_server_time(EXCHANGE, body)
        )
        received = self._clock()
        self._offset_ms = server_ms - round((sent + received) / 2 * 1000)
        return self._offset_ms

    # --- signed endpoints ---------------------------------------------------------------
    async def account(self) -> parsing.Account:
        return await self._signed(
            "account",
            "GET",
            "/api/v3/account",
            [],
            lambda body: parsing.parse_account(EXCHANGE, body),
        )

    async def get_order(self, symbol: str, client_order_id: str) -> parsing.Order | None:
        """The order with this client order id, or None when Binance does not know it."""
        if not isinstance(client_order_id, str) or not CLIENT_ORDER_ID.fullmatch(client_order_id):
            raise ValueError(
                f"client_order_id must match ^[a-zA-Z0-9-_]{{1,36}}$: {client_order_id!r}"
            )
        params = [("symbol", _check_symbol(symbol)), ("origClientOrderId", client_order_id)]
        try:
            return await self._signed(
                "get_order",
                "GET",
                "/api/v3/order",
                params,
                lambda body: parsing.parse_order(EXCHANGE, body),
            )
        except ExchangeError as exc:
            if type(exc) is ExchangeError and exc.code == CODE_NO_SUCH_ORDER:
                return None
            raise

    async def new_order(
        self,
        symbol: str,
        side: str,
        type: str,  # Binance's own parameter name
        quantity: Decimal,
        price: Decimal | None = None,
        *,
        idempotency_key: str,
        time_in_force: str = "GTC",
    ) -> parsing.Order:
        """Place an order at most once per idempotency key.

        A 5xx or timeout leaves the outcome unknown. The client then waits until the
        attempt's recvWindow has passed (after that Binance rejects the request, so it can
        no longer land), looks the order up by client order id, and returns it if found;
        if not found it places it again, once, with the same newClientOrderId; if that too
        is unknown and a last lookup finds nothing, it raises OrderStatusUnknown. A
        "Duplicate order sent" answer (an open order already holds the id: a repeated call)
        returns that order. Binance dedupes client order ids among open orders only, which
        is why the lookup, not the exchange, is what keeps a filled order from repeating.
        """
        params = self._order_params(symbol, side, type, quantity, price, time_in_force)
        cid = client_order_id(idempotency_key)
        params.append(("newClientOrderId", cid))
        for _attempt in (1, 2):
            sent_at: float | None = self._clock()
            try:
                return await self._place(params)
            except ExchangeUnavailable as exc:
                cause: ExchangeError = exc
            except ExchangeError as exc:
                if not _is_duplicate(exc):
                    raise  # a plain rejection: nothing was placed
                # An open order already holds this id (an earlier attempt or call landed):
                # it exists, so there is nothing to wait for before fetching it.
                cause, sent_at = exc, None
            found = await self._settle(symbol, cid, sent_at, cause)
            if found is not None:
                return found
        raise OrderStatusUnknown(
            EXCHANGE,
            "order placement failed twice and the order is not on the exchange",
            client_order_id=cid,
        ) from cause

    # --- internals ----------------------------------------------------------------------
    def _order_params(
        self,
        symbol: str,
        side: str,
        type: str,  # Binance's own parameter name
        quantity: Decimal,
        price: Decimal | None,
        time_in_force: str,
    ) -> list[tuple[str, str]]:
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        if type not in ORDER_TYPES:
            raise ValueError(f"type must be one of {ORDER_TYPES}, got {type!r}")
        params = [("symbol", _check_symbol(symbol)), ("side", side), ("type", type)]
        if type == "LIMIT":
            if price is None:
                raise ValueError("a LIMIT order needs a price")
            params.append(("timeInForce", time_in_force))
        elif price is not None:
            raise ValueError("a MARKET order takes no price")
        params.append(("quantity", wire_decimal(quantity, "quantity")))
        if price is not None:
            params.append(("price", wire_decimal(price, "price")))
        params.append(("newOrderRespType", "RESULT"))
        return params

    async def _place(self, params: list[tuple[str, str]]) -> parsing.Order:
        return await self._signed(
            "new_order",
            "POST",
            "/api/v3/order",
            params,
            lambda body: parsing.parse_order(EXCHANGE, body),
        )

    async def _settle(
        self, symbol: str, cid: str, sent_at: float | None, cause: ExchangeError
    ) -> parsing.Order | None:
        """Look up an order whose placement is unknown; any failure to look is unknown too.

        With `sent_at`, first wait until that attempt's recvWindow has passed: Binance then
        rejects the request if it is still in flight, so "not found" is final.
        """
        if sent_at is not None:
            expires_in = sent_at + self.recv_window_ms / 1000 - self._clock()
            if expires_in > 0:
                await self._sleep(expires_in)
        try:
            return await self.get_order(symbol, cid)
        except ExchangeError as exc:
            raise OrderStatusUnknown(
                EXCHANGE,
                f"order placement failed ({cause}) and the lookup failed too ({exc})",
                client_order_id=cid,
            ) from exc

    async def _signed(
        self,
        endpoint: str,
        method: str,
        path: str,
        params: list[tuple[str, str]],
        parse: Callable[[Any], Any],
    ) -> Any:
        # A -1021 answer is a rejection (nothing happened), so one re-signed retry is safe
        # for every endpoint, order placement included.
        if self._api_key is None or self._api_secret is None:
            raise ValueError(
                f"{endpoint} is a signed endpoint: give the client api_key and api_secret "
                f"(BinanceClient.from_env reads {settings.BINANCE_API_KEY_ENV} and "
                f"{settings.BINANCE_API_SECRET_ENV})"
            )
        if self._offset_ms is None:
            await self.sync_time()
        for attempt in (1, 2):
            timestamp = round(self._clock() * 1000) + (self._offset_ms or 0)
            query = urlencode(
                [*params, ("recvWindow", str(self.recv_window_ms)), ("timestamp", str(timestamp))]
            )
            signature = sign(self._api_secret.reveal(), query)
            try:
                return await self._http.call(
                    endpoint,
                    method,
                    f"{path}?{query}&signature={signature}",
                    parse,
                    headers={"X-MBX-APIKEY": self._api_key.reveal()},
                )
            except ExchangeError as exc:
                if exc.code != CODE_TIMESTAMP_OUTSIDE_RECV_WINDOW or attempt == 2:
                    raise
                await self.sync_time()  # our clock drifted: re-measure, then sign anew
        raise AssertionError("unreachable")
