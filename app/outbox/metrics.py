"""The outbox dispatcher's Prometheus collectors, built from the names in `sparkops.metric_names`.

The gauges describe the table (every dispatcher reports the same values; aggregate them
with max, not sum); the counters and the histogram describe this process's work.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from app.outbox import settings
from sparkops import metric_names as names

# A pipelined XADD round takes about a millisecond; a webhook, tens to hundreds.
PUBLISH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

PENDING = Gauge(names.OUTBOX_PENDING, "Outbox events waiting to be published.")
OLDEST_PENDING_AGE = Gauge(
    names.OUTBOX_OLDEST_PENDING_AGE,
    "Age of the oldest pending outbox event (publishing lag), seconds.",
)
DEAD_LETTERS = Gauge(
    names.OUTBOX_DEAD_LETTERS, "Outbox events parked as dead letters (they block their aggregate)."
)
PUBLISHED = Counter(names.OUTBOX_PUBLISHED, "Outbox events published.", ["publisher"])
RETRIED = Counter(
    names.OUTBOX_RETRIED, "Failed outbox publish attempts scheduled for retry.", ["publisher"]
)
DEAD_LETTERED = Counter(
    names.OUTBOX_DEAD_LETTERED,
    "Outbox events dead-lettered after their last attempt failed.",
    ["publisher"],
)
PUBLISH_DURATION = Histogram(
    names.OUTBOX_PUBLISH_DURATION,
    "Time to publish one batch of outbox events (every run of it), seconds.",
    ["publisher"],
    buckets=PUBLISH_BUCKETS,
)

# Every label value exists from the start, so rate() and the dashboard see zeros, not gaps.
for _publisher in settings.PUBLISHERS:
    PUBLISHED.labels(_publisher)
    RETRIED.labels(_publisher)
    DEAD_LETTERED.labels(_publisher)
    PUBLISH_DURATION.labels(_publisher)
