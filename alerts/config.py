"""Every selector, threshold and `for:` duration the alert rules and the dashboard use.

One place, as in the monitoring mixins: `alerts.rules` builds the rules from these values,
`dashboards.risk` draws the same thresholds on its panels, and the promtool test cases in
`alerts.promtool_cases` place their samples on either side of them. Change a number here,
run `sparkops alerts build` and `sparkops dashboards build`, and all three follow.
"""

from __future__ import annotations

from sparkops import defaults

# --- where the rule file and its documentation live --------------------------------------
RULE_GROUP = "spark-ops"
# runbook_url = RUNBOOK_BASE_URL + "#" + anchor-of-the-alert-name; the section exists in
# docs/alerts.md (a unit test checks every anchor).
RUNBOOK_BASE_URL = "https://git.spark-trading.internal/spark-ops/blob/main/docs/alerts.md"
RUNBOOK_DOC = "docs/alerts.md"

# --- scrape jobs: the Prometheus scrape configuration uses these same names --------------
JOB_APP = "spark-app"
JOB_POSTGRES = "postgres"
JOB_PGBOUNCER = "pgbouncer"
# The outbox dispatcher is its own process (`sparkops outbox run`) with its own /metrics.
JOB_OUTBOX = "spark-outbox"
# The restore drill and the pgBackRest backup timestamp are written as .prom files for
# node_exporter's textfile collector on the database host (docs/alerts.md says how).
JOB_NODE = "node"
# A Patroni cluster (docs/ha.md): each node's REST API /metrics, each etcd member's /metrics.
# A single-host inventory scrapes neither, and the cluster's alerts then stay silent.
JOB_PATRONI = "patroni"
JOB_ETCD = "etcd"

APP_SELECTOR = f'job="{JOB_APP}"'
OUTBOX_SELECTOR = f'job="{JOB_OUTBOX}"'
POSTGRES_SELECTOR = f'job="{JOB_POSTGRES}"'
PGBOUNCER_SELECTOR = f'job="{JOB_PGBOUNCER}"'
# Pools of real databases: pgBouncer's own admin console is listed as a pool too.
PGBOUNCER_POOL_SELECTOR = f'{PGBOUNCER_SELECTOR}, database!="{defaults.PGBOUNCER_ADMIN_DB}"'
BACKUP_SELECTOR = f'job="{JOB_NODE}"'
PATRONI_SELECTOR = f'job="{JOB_PATRONI}"'
ETCD_SELECTOR = f'job="{JOB_ETCD}"'
# The dashboard's size panel shows the platform's database, not template0/1 or postgres.
DATABASE_SELECTOR = f'datname="{defaults.DATABASE_NAME}"'

# Range over which rates are taken: four scrapes at a 15 s interval at least, and the
# window the dashboard's rate panels use too.
RATE_WINDOW = "5m"

SEVERITY_CRITICAL = "critical"  # pages someone now
SEVERITY_WARNING = "warning"  # a ticket for working hours

# --- thresholds and `for:` durations, by alert --------------------------------------------
# Blocks per second for one risk rule; a burst of blocks is normal when a client retries a
# rejected order, a sustained rate means a mis-set limit or a client gone wrong.
RISK_BLOCK_RATE_PER_SECOND = 0.2
RISK_BLOCK_FOR = "10m"

# Seconds the oldest client has waited for a server connection in a pgBouncer pool.
PGBOUNCER_MAX_WAIT_SECONDS = 1.0
PGBOUNCER_SATURATION_FOR = "5m"
# The dashboard's utilisation panel draws the pool size as its ceiling.
PGBOUNCER_POOL_SIZE = defaults.PGBOUNCER_DEFAULT_POOL_SIZE

HTTP_LATENCY_QUANTILE = 0.95
HTTP_LATENCY_P95_SECONDS = 0.5
HTTP_LATENCY_FOR = "10m"

# CSP reports per second for one directive; a browser extension produces a trickle, a
# broken deploy (a missing nonce) produces one per page view.
CSP_REPORTS_PER_SECOND = 0.1
CSP_VIOLATIONS_FOR = "15m"

# Share of POST /orders answered 409 (in flight) or 422 (payload mismatch).
IDEMPOTENCY_CONFLICT_OUTCOMES = ("in_flight", "payload_mismatch")
IDEMPOTENCY_CONFLICT_RATIO = 0.05
# ...and at least this many conflicts per second (3 a minute): on a quiet system one retried
# request (or `sparkops validate`'s deliberate mismatch) is a large share of very little.
IDEMPOTENCY_CONFLICTS_MIN_PER_SECOND = 0.05
IDEMPOTENCY_CONFLICT_FOR = "10m"

# The archiver retries a failing segment every minute, so failures keep rising while the
# archived count stands still; one failure followed by success is not an alert.
WAL_ARCHIVE_FAILING_WINDOW = "10m"
WAL_ARCHIVE_FAILING_FOR = "5m"
# archive_timeout forces a segment switch at least this often on a busy cluster; fifteen
# of them without an archived segment means point-in-time recovery is falling behind.
WAL_ARCHIVE_STALE_SECONDS = 15 * defaults.ARCHIVE_TIMEOUT_SECONDS
WAL_ARCHIVE_STALE_FOR = "5m"

# Differential backups run daily; a day plus two hours of slack.
BACKUP_MAX_AGE_SECONDS = 26 * 3600
BACKUP_TOO_OLD_FOR = "15m"
# The value changes only when a backup ends (hours apart): waiting adds nothing.
BACKUP_FELL_BACK_FOR = "0m"
# The WAL a restore would replay, against the budget past which the check asks for a backup
# (deploys/pgbackrest.py): under heavy writes it passes the budget for a minimum interval
# between backups; twice the budget for half an hour means the backups fail or do not keep up.
WAL_BUDGET_OVER_FACTOR = 2
WAL_BUDGET_OVER_FOR = "30m"

OUTBOX_LAG_SECONDS = 120
OUTBOX_LAG_FOR = "5m"
OUTBOX_DEAD_LETTERS_MAX = 0
OUTBOX_DEAD_LETTERS_FOR = "5m"

DOWN_FOR = "1m"

# The app as its users see it. Not ready: the app's readiness check (what /readyz answers:
# the database through pgBouncer within defaults.READY_CHECK_TIMEOUT_SECONDS) fails, as the
# spark_app_ready gauge shows at every scrape. That check must finish inside Prometheus's
# scrape_timeout (10 s by default). An app that does not answer its scrape at all is
# SparkAppDown (up == 0, or the job absent), with the same one-minute window.
APP_NOT_READY_FOR = "1m"
# Server errors: the share of the users' requests an app instance answers with a 5xx. Probes
# and scrapes are left out: /readyz answers 503 exactly when SparkAppNotReady holds, and the
# load balancer's probes would otherwise dilute the share (or, when not ready, dominate it).
APP_PROBE_ROUTES = ("/healthz", "/readyz", "/metrics")
# A short rate window, so the alert starts and clears within a couple of minutes.
APP_SERVER_ERRORS_WINDOW = "2m"
APP_SERVER_ERROR_RATIO = 0.05
# ...and at least this many 5xx per second (3 a minute): one 500 in a quiet minute is a large
# share of very little, and not worth a page.
APP_SERVER_ERRORS_MIN_PER_SECOND = 0.05
APP_SERVER_ERRORS_FOR = "1m"

# The drill runs weekly; a week and a day without a run counts as failed.
RESTORE_DRILL_MAX_AGE_SECONDS = 8 * 24 * 3600
RESTORE_DRILL_FOR = "10m"

# --- the Patroni cluster ------------------------------------------------------------------
# No node is primary: writes fail. Patroni's lease (PATRONI_TTL_SECONDS) plus a promotion is
# well under a minute, so a minute without a leader is a failover that did not happen.
HA_NO_LEADER_FOR = "1m"
# Bytes a replica's replayed WAL is behind the primary's; beyond maximum_lag_on_failover
# (1 MiB) it cannot be promoted, beyond this it is worth a look.
HA_REPLICATION_LAG_BYTES = 16 * 1024 * 1024
HA_REPLICATION_LAG_FOR = "5m"
# A failover or switchover moves the timeline; the alert stays while one happened this recently.
HA_FAILOVER_WINDOW = "15m"
HA_FAILOVER_FOR = "0m"
# A replica that received no WAL while the primary wrote some: not streaming.
HA_NOT_STREAMING_WINDOW = "5m"
HA_NOT_STREAMING_FOR = "2m"
ETCD_MEMBER_DOWN_FOR = "1m"
