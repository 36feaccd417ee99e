"""Ports, names, users, sizes and bounds, declared once (host paths: sparkops/layout.py).

The deploys, the templates, the app, the dashboards, the alerts, the lab and the tests read
these names; nothing else spells a port or a path. Group data in `inventories/group_data/`
may override the values that vary by environment (pool sizes, retention), starting from here.
"""

from __future__ import annotations

# --- ports -------------------------------------------------------------------------------
SSH_PORT = 22  # the deploys' and runbooks' way in; the firewall admits the control machine
# A runbook's commands to a host share one SSH connection (runbooks.executor.SshExecutor);
# it closes this long after the last one. Short: a host rebuilt at the same address must
# not be reached through a connection to the old one.
SSH_CONTROL_PERSIST_SECONDS = 10
POSTGRES_PORT = 5432
PGBOUNCER_PORT = 6432
APP_PORT = 8000
# A new release's preflight (spark-app-activate): started on 127.0.0.1 beside the live app
# and asked /readyz before anything switches; loopback only, no firewall rule.
APP_PREFLIGHT_PORT = 8001
# The app's /metrics, bound to the host's private address (the public APP_PORT answers 404).
APP_METRICS_PORT = 9311
REDIS_PORT = 6379
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
POSTGRES_EXPORTER_PORT = 9187
PGBOUNCER_EXPORTER_PORT = 9127
OUTBOX_METRICS_PORT = 9310  # the outbox dispatcher's /metrics
NODE_EXPORTER_PORT = 9100  # node_exporter on the db hosts (textfile: backup, drill metrics)
APP_METRICS_PATH = "/metrics"
TOXIPROXY_API_PORT = 8474  # Toxiproxy's own default; chaos.api serves its API there too
# --- the high-availability cluster (Patroni + etcd; deploys/hacluster.py) -----------------
PATRONI_REST_PORT = 8008  # Patroni's REST API: /primary, /replica health checks, /metrics
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
# The database route on each app host (HAProxy, loopback only): writes go to the pgBouncer
# of the node Patroni says is primary; migrations reach that node's PostgreSQL directly.
DB_ROUTE_PRIMARY_PORT = 5000
DB_ROUTE_MIGRATIONS_PORT = 5001
DB_ROUTE_REPLICAS_PORT = 5002
# pgBackRest's TLS server on every node of a cluster: the primary's backup copies the files
# from a replica through it (backup-standby; deploys/pgbackrest.py).
PGBACKREST_TLS_PORT = 8432
PATRONI_SCOPE = "spark"  # the cluster's name in etcd (Patroni's `scope`)
# Patroni's leader lease: a dead primary is replaced after at most TTL seconds.
PATRONI_TTL_SECONDS = 20
PATRONI_LOOP_WAIT_SECONDS = 5
PATRONI_RETRY_TIMEOUT_SECONDS = 5
# HAProxy's health check of Patroni's REST API on each node.
DB_ROUTE_CHECK_INTERVAL_MS = 1000

# --- PostgreSQL --------------------------------------------------------------------------
POSTGRES_VERSION = 15
DATABASE_NAME = "spark"
# Roles, least privilege each: the app reads and writes rows; the migrations role owns the
# schema; pgBouncer's auth_query runs as the auth role; the exporter reads statistics.
ROLE_APP = "spark_app"
ROLE_MIGRATIONS = "spark_owner"
ROLE_PGBOUNCER_AUTH = "pgbouncer_auth"
ROLE_MONITORING = "spark_monitor"
# Writes the kill switch (trading_halts), which the app role may only read: a NOLOGIN role
# that the schema owner and operators' own login roles are members of (`SET ROLE`).
ROLE_OPERATOR = "spark_operator"
ROLE_PGBOUNCER_ADMIN = "pgbouncer_admin"
ROLE_PGBOUNCER_STATS = "pgbouncer_stats"

# --- pgBouncer ---------------------------------------------------------------------------
PGBOUNCER_POOL_MODE = "transaction"
PGBOUNCER_DEFAULT_POOL_SIZE = 25
PGBOUNCER_MAX_CLIENT_CONN = 2000
PGBOUNCER_ADMIN_DB = "pgbouncer"
# A client idle inside a transaction longer than this is disconnected by pgBouncer itself:
# a backstop above the app role's own bound (APP_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS, which
# PostgreSQL enforces and logs with the role's name, so it is the one that normally fires),
# covering any role that lacks the setting. It is what keeps a restore's PAUSE, which waits
# for every server connection to be released, from waiting on a stuck client for ever.
PGBOUNCER_IDLE_TRANSACTION_TIMEOUT_SECONDS = 12
# After a failed connect or login to PostgreSQL, pgBouncer waits this long before trying again
# (its default, 15 s, kept orders failing for 15.6 s after a 2 s PostgreSQL restart in the
# chaos run; with 1 s they flowed again 2.3 s after it went down: tests/chaos).
PGBOUNCER_SERVER_LOGIN_RETRY_SECONDS = 1

# --- WAL archiving and backups -----------------------------------------------------------
ARCHIVE_TIMEOUT_SECONDS = 60
# Full-page images compressed in the WAL (PostgreSQL 15, Debian's build has lz4): after each
# checkpoint most WAL is such images, so less of it to archive, keep and replay in a restore
# (bench/restore_schedule.py prints the WAL of one interval with and without).
POSTGRES_WAL_COMPRESSION = "lz4"
# How long a restore's archive-get waits for pgBackRest's async prefetch to deliver a segment
# before it fetches the segment from the repository itself (runbooks.pitr.restore_command).
# A prefetched segment is delivered at once; one that is not (the first, the one PostgreSQL
# reads again at the end of recovery, the missing one that ends it) took the async get's
# polling 0.3-0.4 s against 0.03 s fetched directly, and the prefetcher fills its queue ahead
# either way. Also the bound on pgBackRest 2.45's lost lock race at a timeline switch, which
# would wait out the whole ARCHIVE_TIMEOUT_SECONDS and report the segment missing (upstream
# PR #2806). pgBackRest's smallest archive-timeout; bench/restore_schedule.py measures it.
ARCHIVE_GET_ASYNC_WAIT_SECONDS = 0.1
PGBACKREST_STANZA = "spark"
# Where a cluster node's backup copied its data files from (layout.PGBACKREST_BACKUP_SOURCE_FILE):
# a replica; the primary because no replica streamed; the primary although one streamed,
# because no replica's pgBackRest server answered (what PgBackRestBackupFellBackToPrimary
# reports: the backups load the primary until someone mends the replica's server).
BACKUP_SOURCE_REPLICA = "replica"
BACKUP_SOURCE_PRIMARY = "primary"
BACKUP_SOURCE_FELL_BACK = "primary-fallback"

# --- the app -----------------------------------------------------------------------------
APP_RELEASES_KEPT = 5
APP_DB_POOL_SIZE = 10
# uvicorn worker processes per app host. One: each process serves its own /metrics on
# APP_METRICS_PORT (a second worker could not bind it), so more workers need per-process
# metrics first; bench/orders_throughput.py --app-workers measures what they would give.
APP_WORKERS = 1
# Schema migrations run under this PostgreSQL advisory lock (per database), so app hosts
# that migrate at once (one deploy, several app hosts) run them one after the other and the
# later ones find the schema at head. The ASCII of "sparkmig"; pg_locks shows it as
# classid 1936744818, objid 1802332519. A migration waits at most MIGRATION_LOCK_WAIT_SECONDS
# for another to finish, then names the holder and fails.
MIGRATION_LOCK_KEY = 0x737061726B6D6967
MIGRATION_LOCK_WAIT_SECONDS = 600
IDEMPOTENCY_KEY_TTL_HOURS = 48
# An in-flight key whose request has not finished in this long is presumed abandoned (the
# process died); a retry may take it over. The order and the key's completion commit in one
# transaction, so taking over cannot create a second order.
IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS = 60
IDEMPOTENCY_RETRY_AFTER_SECONDS = 1
# API keys (app/apikeys.py): `Authorization: Bearer spk_<43 base64url characters>` (256 random
# bits). Each app process keeps what a key may do for at most this long, so a revoked key
# stops working on every process within it (the issue asks for 1 s).
API_KEY_PREFIX = "spk_"
API_KEY_CACHE_TTL_SECONDS = 0.5
API_KEY_CACHE_MAX_ENTRIES = 10_000
# Requests per second per API key (counted in PostgreSQL, shared by every app process and
# host), unless `sparkops app keys create --rate-limit` says otherwise.
API_KEY_DEFAULT_RATE_LIMIT = 20
# Requests per second per client address (an IPv6 client: per /64), over every app process
# and host, on the routes that touch data, whether or not the key is valid (app.ratelimit).
# Above a key's limit: several keys may share an address (a desk behind NAT). The app's
# SPARK_CLIENT_RATE_LIMIT overrides it.
CLIENT_RATE_LIMIT = 200
# GET /positions pages: `limit` defaults to this and may not exceed the maximum.
PAGE_SIZE_DEFAULT = 100
PAGE_SIZE_MAX = 1000
# Bounds on every session of the app role (the app and the outbox dispatcher both connect as
# ROLE_APP through pgBouncer), set on the role (ALTER ROLE ... SET, sparkops.dbroles) so no
# code path can forget them. All stay well below IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS: a
# request whose transaction is stuck is cut off long before a retry may take its key over.
# - statement: the app's statements take milliseconds (an order is one transaction of three
#   or four quick batches, the outbox runs single short statements, purges go in 5,000-row
#   chunks);
#   15 s leaves two orders of magnitude for a loaded machine and lock waits (it bounds those
#   too), and still ends a runaway query before a client's own timeout makes it retry.
# - idle in transaction: the app never waits on anything but PostgreSQL inside a
#   transaction, so a session idle in one for 10 s is a stuck or dead client holding locks
#   and a pgBouncer server connection; PostgreSQL ends it, which frees the pool and lets a
#   restore's PAUSE complete.
# No role-level lock_timeout: statement_timeout already bounds lock waits, and a shorter one
# would turn ordinary contention on a hot position under load into failed orders.
# PostgreSQL 15 has no bound on a whole transaction (transaction_timeout is PostgreSQL 17);
# the app's transactions are a few back-to-back batches, so these two bound them in practice.
APP_STATEMENT_TIMEOUT_SECONDS = 15
APP_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS = 10
MAX_REQUEST_BODY_BYTES = 16 * 1024
# Readiness (/readyz and the readiness gauge): the database must answer `SELECT 1` through
# pgBouncer within this long, or the app reports itself not ready.
READY_CHECK_TIMEOUT_SECONDS = 2.0
# A request's whole time on the database (the wait for a pooled connection included): past
# it the client gets 503 + Retry-After, and the work is cancelled behind the answer. Without
# it a black-holed database connection hangs a request until TCP gives up (minutes); the
# chaos scenarios (tests/chaos) hold every answer to it.
APP_REQUEST_TIMEOUT_SECONDS = 10.0
# A request whose database connection was lost (a cluster's switchover or failover, a
# restart) is run again on a fresh one for at most this long (app.dbretry), within the budget
# above: a planned switchover takes 2-5 s (docs/ha.md).
APP_DB_RETRY_SECONDS = 8.0
# Retry-After on a 503 for a database the app cannot reach (requests and /readyz alike).
DB_UNAVAILABLE_RETRY_AFTER_SECONDS = 5
# uvicorn closes an idle keep-alive connection after this long. Longer than the Retry-After
# above: with uvicorn's default (5 s, equal to it) a client that waited exactly as told sent
# its retry as the server closed the connection, and read a reset (1 in 2 chaos runs of the
# partition scenario, tests/chaos).
APP_KEEP_ALIVE_SECONDS = DB_UNAVAILABLE_RETRY_AFTER_SECONDS + 5
# On SIGTERM (a restart) uvicorn stops accepting, closes idle connections and lets requests
# in flight finish for at most this long before it cancels them; longer than a request may
# take (APP_REQUEST_TIMEOUT_SECONDS).
APP_GRACEFUL_SHUTDOWN_SECONDS = 20
# Between stopping accepting and closing idle connections, the old process waits this long for
# the requests of connections it accepted just before (app/serve.py): without it, a restart
# reset one of them now and then.
APP_SHUTDOWN_ACCEPT_GRACE_SECONDS = 0.3
# The listen backlog of the app's socket (spark-app.socket's Backlog=): connections that
# arrive while the service restarts wait here, so it must hold a restart's worth of them.
APP_LISTEN_BACKLOG = 4096
# Arrays/objects open at once in a JSON body (orders are flat, CSP reports nest 3 deep);
# checked on the raw bytes before parsing, since Python's json recurses per level.
MAX_JSON_DEPTH = 8

# --- the load balancer (HAProxy on the lb hosts, deploys/haproxy.py) -----------------------
LB_HTTPS_PORT = 443
LB_HTTP_PORT = 80  # redirects to HTTPS only
LB_BACKEND = "app"  # HAProxy's backend of the app hosts; its servers are the hosts' names
# A drain waits this long for an app host's requests in flight to finish (longer than a
# request may take, APP_REQUEST_TIMEOUT_SECONDS), and a ready for HAProxy's check to find it UP.
LB_DRAIN_TIMEOUT_SECONDS = 15.0
LB_READY_TIMEOUT_SECONDS = 30.0
# HAProxy's /readyz check of each app host: every LB_CHECK_INTER_MS, DOWN after LB_CHECK_FALL
# failures, UP after LB_CHECK_RISE successes.
LB_CHECK_INTER_MS = 1000
LB_CHECK_FALL = 2
LB_CHECK_RISE = 2
# HSTS that HAProxy adds over HTTPS when the response has none (the app sends its own).
LB_HSTS_MAX_AGE_SECONDS = 63072000
