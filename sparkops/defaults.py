"""Ports, paths, users and sizes, declared once.

The deploys, the templates, the app, the dashboards, the alerts, the lab and the tests read
these names; nothing else spells a port or a path. Group data in `inventories/group_data/`
may override the values that vary by environment (pool sizes, retention), starting from here.
"""

from __future__ import annotations

# --- ports -------------------------------------------------------------------------------
POSTGRES_PORT = 5432
PGBOUNCER_PORT = 6432
APP_PORT = 8000
REDIS_PORT = 6379
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
POSTGRES_EXPORTER_PORT = 9187
PGBOUNCER_EXPORTER_PORT = 9127
OUTBOX_METRICS_PORT = 9310  # the outbox dispatcher's /metrics
NODE_EXPORTER_PORT = 9100  # node_exporter on the db hosts (textfile: backup, drill metrics)
APP_METRICS_PATH = "/metrics"

# --- PostgreSQL --------------------------------------------------------------------------
POSTGRES_VERSION = 15
POSTGRES_BINDIR = f"/usr/lib/postgresql/{POSTGRES_VERSION}/bin"
DATABASE_NAME = "spark"
# Roles, least privilege each: the app reads and writes rows; the migrations role owns the
# schema; pgBouncer's auth_query runs as the auth role; the exporter reads statistics.
ROLE_APP = "spark_app"
ROLE_MIGRATIONS = "spark_owner"
ROLE_PGBOUNCER_AUTH = "pgbouncer_auth"
ROLE_MONITORING = "spark_monitor"
ROLE_PGBOUNCER_ADMIN = "pgbouncer_admin"
ROLE_PGBOUNCER_STATS = "pgbouncer_stats"

# --- pgBouncer ---------------------------------------------------------------------------
PGBOUNCER_POOL_MODE = "transaction"
PGBOUNCER_DEFAULT_POOL_SIZE = 25
PGBOUNCER_MAX_CLIENT_CONN = 2000
PGBOUNCER_ADMIN_DB = "pgbouncer"

# --- WAL archiving and backups -----------------------------------------------------------
ARCHIVE_TIMEOUT_SECONDS = 60
PGBACKREST_STANZA = "spark"
# node_exporter's textfile collector directory (Debian's default): the backup job and the
# restore drill write their .prom files here, atomically (temporary file, then rename).
NODE_EXPORTER_TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"

# --- the app -----------------------------------------------------------------------------
APP_ROOT = "/opt/spark-app"
APP_RELEASES_DIR = f"{APP_ROOT}/releases"
APP_CURRENT_LINK = f"{APP_ROOT}/current"
APP_RELEASES_KEPT = 5
APP_DB_POOL_SIZE = 10
# The schema owner's connection (direct to PostgreSQL) for migrations: the variable the
# deploy writes into /etc/spark-app/migrations.env and every reader takes it from.
MIGRATIONS_URL_ENV = "SPARK_MIGRATIONS_URL"
IDEMPOTENCY_KEY_TTL_HOURS = 48
# An in-flight key whose request has not finished in this long is presumed abandoned (the
# process died); a retry may take it over. The order and the key's completion commit in one
# transaction, so taking over cannot create a second order.
IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS = 60
IDEMPOTENCY_RETRY_AFTER_SECONDS = 1
MAX_REQUEST_BODY_BYTES = 16 * 1024
# Readiness (/readyz and the readiness gauge): the database must answer `SELECT 1` through
# pgBouncer within this long, or the app reports itself not ready.
READY_CHECK_TIMEOUT_SECONDS = 2.0
# Retry-After on a 503 for a database the app cannot reach (requests and /readyz alike).
DB_UNAVAILABLE_RETRY_AFTER_SECONDS = 5
# Arrays/objects open at once in a JSON body (orders are flat, CSP reports nest 3 deep);
# checked on the raw bytes before parsing, since Python's json recurses per level.
MAX_JSON_DEPTH = 8
