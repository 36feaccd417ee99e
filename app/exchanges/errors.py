"""Typed errors of the exchange clients.

Every failure an exchange call can have is one of these, so callers branch on the type and
never on message text. Each carries the exchange name; errors the exchange reported carry
its own code and message as well.
"""

from __future__ import annotations


class ExchangeError(Exception):
    """Base class; also used as-is for an exchange error with no more specific meaning."""

    def __init__(
        self,
        exchange: str,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
    ) -> None:
        self.exchange = exchange
        self.status = status
        self.code = code
        detail = [f"{exchange}: {message}"]
        if status is not None:
            detail.append(f"HTTP {status}")
        if code is not None:
            detail.append(f"code {code}")
        super().__init__(" ".join([detail[0], *(f"({d})" for d in detail[1:])]))


class ExchangeUnavailable(ExchangeError):
    """Timeout, connection failure or a 5xx: the exchange could not answer. Safe to retry
    reads later; for order placement see OrderStatusUnknown."""


class RateLimited(ExchangeError):
    """HTTP 429: back off for `retry_after` seconds. The client refuses calls until then."""

    def __init__(self, exchange: str, message: str, *, retry_after: float, **kwargs) -> None:
        self.retry_after = retry_after
        super().__init__(exchange, f"{message}; retry after {retry_after:g} s", **kwargs)


class IpBanned(RateLimited):
    """HTTP 418: the IP kept calling after 429s and is banned for `retry_after` seconds."""


class SignatureError(ExchangeError):
    """The exchange rejected the request signature (Binance -1022): wrong secret or a
    request altered after signing. Not retried: the same request fails the same way."""


class UnknownSymbol(ExchangeError):
    """The symbol or pair does not exist on the exchange (Binance -1121, BTCTurk 400)."""


class MalformedResponse(ExchangeError):
    """The response is not what the contract says: invalid JSON, an HTML error page, a
    missing field, or a JSON number where a decimal string is required."""


class OrderStatusUnknown(ExchangeError):
    """Order placement failed in a way that may or may not have placed the order, and the
    lookup by client order id could not settle it. Do not place it again blindly: look it up
    later by `client_order_id`."""

    def __init__(self, exchange: str, message: str, *, client_order_id: str, **kwargs) -> None:
        self.client_order_id = client_order_id
        super().__init__(exchange, f"{message} (client order id {client_order_id})", **kwargs)


class CircuitOpen(ExchangeError):
    """The circuit breaker for this exchange is open: recent calls failed, so this one was
    refused without touching the network. Retry after `retry_after` seconds."""

    def __init__(self, exchange: str, *, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(
            exchange, f"circuit open after repeated failures; retry in {retry_after:.1f} s"
        )
