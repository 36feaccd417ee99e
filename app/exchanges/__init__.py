"""Exchange clients (Binance, BTCTurk) with timeouts, a circuit breaker per exchange and
rate-limit handling; every failure is one of the typed errors in `errors`."""

from app.exchanges.binance import BinanceClient
from app.exchanges.btcturk import BtcTurkClient
from app.exchanges.errors import (
    CircuitOpen,
    ExchangeError,
    ExchangeUnavailable,
    IpBanned,
    MalformedResponse,
    OrderStatusUnknown,
    RateLimited,
    SignatureError,
    UnknownSymbol,
)

__all__ = [
    "BinanceClient",
    "BtcTurkClient",
    "CircuitOpen",
    "ExchangeError",
    "ExchangeUnavailable",
    "IpBanned",
    "MalformedResponse",
    "OrderStatusUnknown",
    "RateLimited",
    "SignatureError",
    "UnknownSymbol",
]
