"""Prometheus collectors of the exchange clients, built from the names in sparkops.metric_names.

Label values come from bounded sets (exchanges, their endpoints, outcomes, statuses) and
are created at import, so the dashboard sees zeros, not gaps.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from app.exchanges import settings
from sparkops import metric_names as names

EXCHANGES = (settings.BINANCE, settings.BTCTURK)
ENDPOINTS = {
    settings.BINANCE: ("time", "ticker_price", "account", "new_order", "get_order"),
    settings.BTCTURK: ("ticker", "order_book"),
}
OUTCOMES = (
    "ok",  # a parsed answer
    "exchange_error",  # the exchange answered with an error (unknown symbol, signature, ...)
    "rate_limited",  # 429/418, or refused locally while a Retry-After runs
    "unavailable",  # timeout, connection error, 5xx
    "malformed",  # HTML page, invalid JSON, missing field, float where a string belongs
    "circuit_open",  # refused by the breaker without a request
)
RATE_LIMIT_STATUSES = ("429", "418")

REQUESTS = Counter(
    names.EXCHANGE_REQUESTS,
    "Exchange API calls by exchange, endpoint and outcome.",
    ["exchange", "endpoint", "outcome"],
)
CIRCUIT_STATE = Gauge(
    names.EXCHANGE_CIRCUIT_STATE,
    "Circuit breaker state per exchange: 0 closed, 1 half-open, 2 open.",
    ["exchange"],
)
RATE_LIMITED = Counter(
    names.EXCHANGE_RATE_LIMITED,
    "Rate-limit responses received from an exchange, by HTTP status (429, 418).",
    ["exchange", "status"],
)

for _exchange in EXCHANGES:
    CIRCUIT_STATE.labels(_exchange)
    for _status in RATE_LIMIT_STATUSES:
        RATE_LIMITED.labels(_exchange, _status)
    for _endpoint in ENDPOINTS[_exchange]:
        for _outcome in OUTCOMES:
            REQUESTS.labels(_exchange, _endpoint, _outcome)
