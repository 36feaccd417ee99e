"""Every metric name the platform reads, declared once.

The app registers its collectors from these names (`app.metrics`); the dashboard, the alert
rules and the tests import the same constants. Exporter metrics (postgres_exporter,
pgBouncer exporter) are listed here too, so a renamed exporter metric is one edit.

Counters are declared with their exposed `_total` name; histograms by their base name
(Prometheus exposes `_bucket`, `_sum` and `_count` series).
"""

from __future__ import annotations

PREFIX = "spark"

# --- the app: HTTP -----------------------------------------------------------------------
HTTP_REQUEST_DURATION = (
    f"{PREFIX}_http_request_duration_seconds"  # histogram: route, method, status
)
HTTP_REQUESTS_IN_FLIGHT = f"{PREFIX}_http_requests_in_flight"  # gauge

# --- the app: safety features ------------------------------------------------------------
IDEMPOTENCY_OUTCOMES = f"{PREFIX}_idempotency_requests_total"  # counter: outcome
RISK_BLOCKS = f"{PREFIX}_risk_blocks_total"  # counter: rule
ORDERS_ACCEPTED = f"{PREFIX}_orders_accepted_total"  # counter: side
AUTH_FAILURES = f"{PREFIX}_api_auth_failures_total"  # counter: reason
RATE_LIMITED = f"{PREFIX}_api_rate_limited_total"  # counter (429 answers): limit
CSP_REPORTS = f"{PREFIX}_csp_reports_total"  # counter: directive
MONEY_OPERATIONS = f"{PREFIX}_money_operations_total"  # counter: kind
POSITION_UNIQUE_VIOLATIONS = f"{PREFIX}_position_unique_violations_total"  # counter
DB_RETRIES = f"{PREFIX}_db_retries_total"  # counter, label `what`: work run again (app.dbretry)
IDEMPOTENCY_KEYS_PURGED = f"{PREFIX}_idempotency_keys_purged_total"  # counter
APP_BUILD_INFO = f"{PREFIX}_build_info"  # gauge=1: release
# /readyz's answer, refreshed at each /metrics scrape: 1 ready, 0 not (database unreachable).
APP_READY = f"{PREFIX}_app_ready"  # gauge 0/1

# --- the outbox dispatcher ---------------------------------------------------------------
OUTBOX_PENDING = f"{PREFIX}_outbox_pending_events"  # gauge
OUTBOX_OLDEST_PENDING_AGE = f"{PREFIX}_outbox_oldest_pending_age_seconds"  # gauge
OUTBOX_DEAD_LETTERS = f"{PREFIX}_outbox_dead_letter_events"  # gauge
OUTBOX_PUBLISHED = f"{PREFIX}_outbox_published_total"  # counter: publisher
OUTBOX_RETRIED = f"{PREFIX}_outbox_retries_total"  # counter: publisher
OUTBOX_DEAD_LETTERED = f"{PREFIX}_outbox_dead_lettered_total"  # counter: publisher
OUTBOX_PUBLISH_DURATION = f"{PREFIX}_outbox_publish_duration_seconds"  # histogram: publisher

# --- exchange clients --------------------------------------------------------------------
EXCHANGE_REQUESTS = f"{PREFIX}_exchange_requests_total"  # counter: exchange, endpoint, outcome
EXCHANGE_CIRCUIT_STATE = f"{PREFIX}_exchange_circuit_state"  # gauge: exchange (0/1/2)
EXCHANGE_RATE_LIMITED = f"{PREFIX}_exchange_rate_limited_total"  # counter: exchange, status

# --- runbooks ----------------------------------------------------------------------------
RESTORE_DRILL_LAST_SUCCESS = f"{PREFIX}_restore_drill_last_success"  # gauge 0/1
RESTORE_DRILL_LAST_RUN_TIMESTAMP = f"{PREFIX}_restore_drill_last_run_timestamp_seconds"
RESTORE_DRILL_DURATION = f"{PREFIX}_restore_drill_duration_seconds"  # gauge

# --- label values (bounded sets, so label cardinality stays fixed) -----------------------
IDEMPOTENCY_OUTCOME_VALUES = (
    "created",  # first writer: the request ran
    "replayed",  # completed key: stored response returned
    "in_flight",  # first request still running: 409 + Retry-After
    "payload_mismatch",  # key reused with another payload: 422
    "invalid_key",  # missing or malformed key: 400
)
AUTH_FAILURE_REASONS = (
    "missing",  # no Authorization header: 401
    "malformed",  # not Bearer, not a key's shape, or two headers: 401
    "unknown",  # no such key: 401
    "revoked",  # a revoked key: 401
    "forbidden",  # the key lacks the permission: 403
)
RATE_LIMITS = (
    "api_key",  # the request's API key was over its limit: 429
    "client_addr",  # the request's client address was over its limit: 429
)
RISK_RULES = ("kill_switch", "max_notional", "max_position", "price_band")
MONEY_OPERATION_KINDS = (
    "align_price",
    "align_quantity",
    "round",
    "commission",
    "realized_pnl",
    "unrealized_pnl",
    "average_price",
    "apply_fill",
)

# --- exporters (names as the exporters publish them) -------------------------------------
# Prometheus's own per-target series: 1 when the last scrape succeeded, 0 when it failed.
SCRAPE_UP = "up"
PG_UP = "pg_up"
PG_DATABASE_SIZE = "pg_database_size_bytes"
PG_ARCHIVER_ARCHIVED = "pg_stat_archiver_archived_count"
PG_ARCHIVER_FAILED = "pg_stat_archiver_failed_count"
PG_ARCHIVER_LAST_ARCHIVE_AGE = "pg_stat_archiver_last_archive_age"
PGBOUNCER_UP = "pgbouncer_up"
PGBOUNCER_CLIENT_WAITING = "pgbouncer_pools_client_waiting_connections"
PGBOUNCER_CLIENT_ACTIVE = "pgbouncer_pools_client_active_connections"
PGBOUNCER_SERVER_ACTIVE = "pgbouncer_pools_server_active_connections"
PGBOUNCER_SERVER_IDLE = "pgbouncer_pools_server_idle_connections"
PGBOUNCER_CLIENT_MAXWAIT = "pgbouncer_pools_client_maxwait_seconds"
PGBOUNCER_POOL_SIZE = "pgbouncer_databases_pool_size"
PGBACKREST_LAST_BACKUP_TIMESTAMP = "pgbackrest_backup_last_completion_timestamp_seconds"
# 1 when a cluster node's last scheduled backup came from the primary though a replica streamed.
PGBACKREST_BACKUP_FELL_BACK = "pgbackrest_backup_fell_back_to_primary"
# The WAL budget check's last verdict: WAL written since the newest backup a restore could
# start from (absent when there is none), and the budget past which it asks for a backup.
PGBACKREST_WAL_SINCE_BACKUP = "pgbackrest_wal_since_backup_bytes"
PGBACKREST_WAL_BUDGET = "pgbackrest_wal_budget_bytes"

# --- Patroni's REST API /metrics and etcd's (names as they publish them) -----------------
PATRONI_PRIMARY = "patroni_primary"  # 1 on the node holding the leader key
PATRONI_REPLICA = "patroni_replica"
PATRONI_SYNC_STANDBY = "patroni_sync_standby"
PATRONI_POSTGRES_RUNNING = "patroni_postgres_running"
PATRONI_TIMELINE = "patroni_postgres_timeline"
PATRONI_XLOG_LOCATION = "patroni_xlog_location"  # the primary's current WAL position
PATRONI_XLOG_RECEIVED = "patroni_xlog_received_location"  # a replica's
PATRONI_XLOG_REPLAYED = "patroni_xlog_replayed_location"
ETCD_HAS_LEADER = "etcd_server_has_leader"
ETCD_LEADER_CHANGES = "etcd_server_leader_changes_seen_total"
