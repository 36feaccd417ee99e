"""The app's Prometheus collectors, built from the names in `sparkops.metric_names`.

Label values come from bounded sets; collectors that are hit on hot paths are pre-bound to
their children at import, so an increment costs one atomic add, not a label lookup.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from sparkops import metric_names as names

# Latency buckets around what an order takes through pgBouncer (a few ms) up to timeouts.
HTTP_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUEST_DURATION = Histogram(
    names.HTTP_REQUEST_DURATION,
    "HTTP request duration by route template, method and status code.",
    ["route", "method", "status"],
    buckets=HTTP_BUCKETS,
)
HTTP_REQUESTS_IN_FLIGHT = Gauge(names.HTTP_REQUESTS_IN_FLIGHT, "HTTP requests being served.")

IDEMPOTENCY_OUTCOMES = Counter(
    names.IDEMPOTENCY_OUTCOMES, "POST /orders requests by idempotency outcome.", ["outcome"]
)
RISK_BLOCKS = Counter(names.RISK_BLOCKS, "Orders blocked by a pre-trade risk rule.", ["rule"])
ORDERS_ACCEPTED = Counter(names.ORDERS_ACCEPTED, "Orders accepted and filled.", ["side"])
AUTH_FAILURES = Counter(
    names.AUTH_FAILURES, "Requests refused for their API key (401/403), by reason.", ["reason"]
)
RATE_LIMITED = Counter(
    names.RATE_LIMITED,
    "Requests refused with 429, by the limit they passed: their API key's or their address's.",
    ["limit"],
)
CSP_REPORTS = Counter(
    names.CSP_REPORTS, "Content-Security-Policy violation reports received.", ["directive"]
)
MONEY_OPERATIONS = Counter(names.MONEY_OPERATIONS, "Money-utility operations by kind.", ["kind"])
POSITION_UNIQUE_VIOLATIONS = Counter(
    names.POSITION_UNIQUE_VIOLATIONS,
    "Attempts to open a second open position for one (account, symbol, strategy).",
)
DB_RETRIES = Counter(
    names.DB_RETRIES,
    "Database work run again on a fresh connection after the old one was lost or read-only.",
    ["what"],
)
IDEMPOTENCY_KEYS_PURGED = Counter(
    names.IDEMPOTENCY_KEYS_PURGED, "Expired idempotency keys deleted by the cleanup job."
)
APP_BUILD_INFO = Gauge(
    names.APP_BUILD_INFO, "The running release (value is always 1).", ["release"]
)
APP_READY = Gauge(
    names.APP_READY,
    "1 when the app is ready (the database answers through pgBouncer), 0 when not; "
    "checked at each scrape, as /readyz checks it.",
)

# Every label value exists from the start, so rate() and the dashboard see zeros, not gaps.
for _outcome in names.IDEMPOTENCY_OUTCOME_VALUES:
    IDEMPOTENCY_OUTCOMES.labels(_outcome)
for _reason in names.AUTH_FAILURE_REASONS:
    AUTH_FAILURES.labels(_reason)
for _rule in names.RISK_RULES:
    RISK_BLOCKS.labels(_rule)
for _kind in names.MONEY_OPERATION_KINDS:
    MONEY_OPERATIONS.labels(_kind)
for _limit in names.RATE_LIMITS:
    RATE_LIMITED.labels(_limit)
for _side in ("buy", "sell"):
    ORDERS_ACCEPTED.labels(_side)
