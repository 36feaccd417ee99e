"""Outbox dispatcher settings, declared once; the CLI, the deploy and the tests read these.

Ports live in `sparkops.defaults` (OUTBOX_METRICS_PORT) with the other ports.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparkops import envvars

# --- claiming ----------------------------------------------------------------------------
# Events per claim, at most. Each batch pays fixed costs (four round trips, planning the
# claim); at 2,000 they weigh half what they do at 1,000 (bench/outbox_throughput.py, two
# claim loops: 0.53-0.62 of pipelined XADD against 0.39-0.53). The Redis script publishing a
# batch holds Redis for about 6 us an event: some 12 ms at 2,000.
BATCH_SIZE = 2000
# Events of one aggregate taken in one claim (published strictly one after the other).
MAX_PER_AGGREGATE = 50
# A claim holds its events this long. Publishing one batch must finish well within it: a
# dispatcher stops publishing a batch when less than LEASE_SAFETY_SECONDS of it is left.
LEASE_SECONDS = 30.0
LEASE_SAFETY_SECONDS = 5.0
POLL_INTERVAL_SECONDS = 0.2  # idle wait after a claim that found nothing
# Claim loops in one process, each under a lease owner of its own: while one waits on the
# database another publishes (bench/outbox_throughput.py, batch 2,000, 2 cores, same hour:
# one loop 0.31-0.42 of pipelined XADD, two 0.48-0.58, three 0.51-0.65, four 0.49-0.58).
WORKERS = 3

# --- retries -----------------------------------------------------------------------------
# Exponential backoff with full jitter: delay = uniform(0, min(cap, base * 2**attempts)).
# With these values an event rides out an outage of roughly 10 minutes before it is
# dead-lettered (20 attempts, most of them capped at 60 s, halved on average by jitter).
MAX_ATTEMPTS = 20
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 60.0
LAST_ERROR_MAX_CHARS = 2000

# --- retention ---------------------------------------------------------------------------
RETENTION_HOURS = 168.0  # delivered events are deleted after 7 days
PURGE_INTERVAL_SECONDS = 600.0
PURGE_CHUNK = 5000  # rows per DELETE, so a purge never holds many locks for long

# --- metrics -----------------------------------------------------------------------------
STATS_INTERVAL_SECONDS = 5.0  # how often the pending / lag / dead-letter gauges refresh

# --- publishers --------------------------------------------------------------------------
PUBLISHERS = ("redis", "console", "webhook")
PUBLISH_TIMEOUT_SECONDS = 5.0
REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_STREAM = "spark.outbox"
# Approximate trim (XADD MAXLEN ~): consumers must keep up within this many entries.
REDIS_STREAM_MAXLEN = 1_000_000
WEBHOOK_SIGNATURE_HEADER = "X-Spark-Signature"
WEBHOOK_EVENT_ID_HEADER = "X-Spark-Event-Id"

# --- environment variables (the systemd unit sets these; secrets come from files) --------
ENV_DATABASE_URL = envvars.OUTBOX_DATABASE_URL
ENV_REDIS_URL = envvars.OUTBOX_REDIS_URL
ENV_REDIS_PASSWORD_FILE = envvars.OUTBOX_REDIS_PASSWORD_FILE
ENV_WEBHOOK_URL = envvars.OUTBOX_WEBHOOK_URL
ENV_WEBHOOK_SECRET = envvars.OUTBOX_WEBHOOK_SECRET
ENV_WEBHOOK_SECRET_FILE = envvars.OUTBOX_WEBHOOK_SECRET_FILE


@dataclass(frozen=True)
class DispatcherSettings:
    """What one dispatcher process runs with; every field defaults to the constant above."""

    batch_size: int = BATCH_SIZE
    max_per_aggregate: int = MAX_PER_AGGREGATE
    lease_seconds: float = LEASE_SECONDS
    lease_safety_seconds: float = LEASE_SAFETY_SECONDS
    poll_interval: float = POLL_INTERVAL_SECONDS
    max_attempts: int = MAX_ATTEMPTS
    backoff_base: float = BACKOFF_BASE_SECONDS
    backoff_cap: float = BACKOFF_CAP_SECONDS
    retention_hours: float = RETENTION_HOURS
    purge_interval: float = PURGE_INTERVAL_SECONDS
    stats_interval: float = STATS_INTERVAL_SECONDS
    publish_timeout: float = PUBLISH_TIMEOUT_SECONDS
    workers: int = WORKERS

    def __post_init__(self) -> None:
        problems = []
        if self.batch_size < 1 or self.max_per_aggregate < 1:
            problems.append("batch size and events per aggregate must be at least 1")
        if self.workers < 1:
            problems.append("workers must be at least 1")
        if self.max_attempts < 1:
            problems.append("max attempts must be at least 1")
        if self.lease_seconds <= self.lease_safety_seconds + self.publish_timeout:
            problems.append(
                f"lease ({self.lease_seconds}s) must exceed the safety margin "
                f"({self.lease_safety_seconds}s) plus the publish timeout "
                f"({self.publish_timeout}s), or a slow publish outlives its claim"
            )
        if self.backoff_base <= 0 or self.backoff_cap < self.backoff_base:
            problems.append("backoff base must be > 0 and the cap at least the base")
        if self.retention_hours <= 0:
            problems.append("retention must be a positive number of hours")
        if min(self.poll_interval, self.purge_interval, self.stats_interval) <= 0:
            problems.append("intervals must be positive")
        if problems:
            raise ValueError("invalid outbox dispatcher settings: " + "; ".join(problems))
