"""The hosts' layout: every path, unit name and env file a deploy writes and a runbook reads.

The deploys (deploys/), the runbooks (runbooks/), the command line and the templates (which
receive these names through their context, deploys/support.py) all read them from here, so
a runbook can never look for a file where the deploy did not put it. Debian's own layout
(postgresql-common, pgbouncer, pgbackrest) is named here too, because the runbooks act on it.
"""

from __future__ import annotations

from sparkops.defaults import POSTGRES_VERSION

# --- PostgreSQL: Debian's postgresql-common cluster "<version>/main" ---------------------
POSTGRES_BINDIR = f"/usr/lib/postgresql/{POSTGRES_VERSION}/bin"
POSTGRES_CLUSTER = "main"
POSTGRES_DATA_DIR = f"/var/lib/postgresql/{POSTGRES_VERSION}/{POSTGRES_CLUSTER}"
POSTGRES_CONF_DIR = f"/etc/postgresql/{POSTGRES_VERSION}/{POSTGRES_CLUSTER}"
POSTGRES_SERVICE = f"postgresql@{POSTGRES_VERSION}-{POSTGRES_CLUSTER}.service"
POSTGRES_UNIT_DROPIN = f"/etc/systemd/system/{POSTGRES_SERVICE}.d/sparkops.conf"
POSTGRES_LOG_FILE = f"/var/log/postgresql/postgresql-{POSTGRES_VERSION}-{POSTGRES_CLUSTER}.log"
# The Unix socket directory PostgreSQL and pgBouncer share (Debian's default).
SOCKET_DIR = "/var/run/postgresql"
# Scratch clusters beside the real one (same filesystem, owned by postgres): the restore
# drill's copy and `sparkops restore --to-data-dir`'s default.
DRILL_SCRATCH_DIR = f"/var/lib/postgresql/{POSTGRES_VERSION}/drill"
RESTORE_SCRATCH_DIR = f"/var/lib/postgresql/{POSTGRES_VERSION}/restore"

# --- the high-availability cluster: Debian's patroni and etcd-server packages -------------
PATRONI_CONFIG = "/etc/patroni/config.yml"
PATRONI_SERVICE = "patroni.service"
PATRONI_PGPASS = "/var/lib/postgresql/.pgpass.patroni"  # Patroni writes it (replicas, rewind)
# Patroni's REST API key pair (HTTPS; clients verify it against TLS_CA_FILE).
PATRONI_TLS_CERT = "/etc/patroni/sparkops-restapi.crt"
PATRONI_TLS_KEY = "/etc/patroni/sparkops-restapi.key"
# Patroni's on_role_change callback (templates/hacluster/on-role-change.sh.j2) and its log.
PATRONI_ROLE_CHANGE_SCRIPT = "/usr/local/sbin/spark-patroni-role-change"
PATRONI_ROLE_CHANGE_LOG = "/var/log/postgresql/spark-role-change.log"
# PostgreSQL's log while a cluster restore runs it alone, out of Patroni's hands.
CLUSTER_RESTORE_LOG = "/var/log/postgresql/spark-cluster-restore.log"
ETCD_ENV_FILE = "/etc/default/etcd"  # Debian's etcd.service reads it (EnvironmentFile)
ETCD_SERVICE = "etcd.service"
ETCD_DATA_DIR = "/var/lib/etcd/spark"  # not Debian's default: the package's first start
# (a single-member cluster on localhost) must not be the one our members join
# The database route on each app host: a second HAProxy of its own (not haproxy.service,
# which the load balancer tier owns).
DB_ROUTE_CONFIG = "/etc/haproxy/spark-db-route.cfg"
DB_ROUTE_SERVICE = "spark-db-route.service"

# --- pgBouncer ---------------------------------------------------------------------------
PGBOUNCER_SERVICE = "pgbouncer.service"
PGBOUNCER_CONF_DIR = "/etc/pgbouncer"
PGBOUNCER_LOG_FILE = "/var/log/postgresql/pgbouncer.log"

# --- TLS inside (deploys/tls.py uploads what deploys/tlsca.py issues) -------------------
# The environment's CA certificate, on every host: what clients verify servers against
# (`sslrootcert`, pgBouncer's server_tls_ca_file, Prometheus' ca_file).
TLS_CA_FILE = "/etc/ssl/sparkops/ca.crt"
# Server certificates and keys (keys 0600, owned by the server's user).
POSTGRES_TLS_CERT = f"{POSTGRES_CONF_DIR}/sparkops-server.crt"
POSTGRES_TLS_KEY = f"{POSTGRES_CONF_DIR}/sparkops-server.key"
PGBOUNCER_TLS_CERT = f"{PGBOUNCER_CONF_DIR}/sparkops-tls.crt"
PGBOUNCER_TLS_KEY = f"{PGBOUNCER_CONF_DIR}/sparkops-tls.key"
# Prometheus' and Alertmanager's web.config.file (TLS and basic auth) and their key pair.
PROMETHEUS_WEB_CONFIG = "/etc/prometheus/web-config.yml"
ALERTMANAGER_WEB_CONFIG = "/etc/prometheus/alertmanager-web-config.yml"
MONITOR_TLS_CERT = "/etc/prometheus/sparkops-tls.crt"
MONITOR_TLS_KEY = "/etc/prometheus/sparkops-tls.key"
# The basic-auth password Prometheus sends to itself and to Alertmanager (root:prometheus 0640).
MONITOR_WEB_PASSWORD_FILE = "/etc/prometheus/sparkops-web-password"

# --- pgBackRest --------------------------------------------------------------------------
PGBACKREST_CONF = "/etc/pgbackrest/pgbackrest.conf"
# Which repository the archive last went to (deploys/pgbackrest.py).
PGBACKREST_REPO_MARKER = "/etc/pgbackrest/sparkops-repository"
# On a cluster node: the other nodes as pgBackRest hosts (pg2.., through their TLS servers),
# read by the backup only (`--config-include-path`): no other command reaches other nodes.
PGBACKREST_STANDBY_CONF_DIR = "/etc/pgbackrest/standby.d"
# The node's certificate for pgBackRest's TLS server, also its client certificate.
PGBACKREST_TLS_CERT = "/etc/pgbackrest/tls/node.crt"
PGBACKREST_TLS_KEY = "/etc/pgbackrest/tls/node.key"
# What the backup units run on a cluster node: from a replica when one streams.
PGBACKREST_BACKUP_SCRIPT = "/usr/local/sbin/pgbackrest-backup"
# pgBackRest's spool (the async archive's queues); the backup unit may write there.
PGBACKREST_SPOOL_DIR = "/var/spool/pgbackrest"
# Where that script's last successful backup copied the data files from: one word
# (defaults.BACKUP_SOURCE_*), published by the backup-time metric.
PGBACKREST_BACKUP_SOURCE_FILE = f"{PGBACKREST_SPOOL_DIR}/sparkops-last-backup-source"
# The WAL budget check (templates/pgbackrest/wal-budget.py.j2), run by its timer as postgres:
# each write of the request file starts an incremental backup (pgbackrest-backup-due.path);
# the figures file (JSON) is its last verdict, published by the backup-time metric.
PGBACKREST_WAL_BUDGET_SCRIPT = "/usr/local/sbin/pgbackrest-wal-budget"
PGBACKREST_WAL_BUDGET_SERVICE = "pgbackrest-wal-budget.service"
PGBACKREST_WAL_BUDGET_TIMER = "pgbackrest-wal-budget.timer"
PGBACKREST_BACKUP_DUE_PATH = "pgbackrest-backup-due.path"
PGBACKREST_BACKUP_REQUEST_FILE = f"{PGBACKREST_SPOOL_DIR}/sparkops-backup-request"
PGBACKREST_WAL_BUDGET_FILE = f"{PGBACKREST_SPOOL_DIR}/sparkops-wal-budget.json"

# --- node_exporter's textfile collector (Debian's default directory) ---------------------
# The backup job and the restore drill write their .prom files here, atomically.
NODE_EXPORTER_TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
DRILL_METRICS_FILE_NAME = "spark_restore_drill.prom"
DRILL_METRICS_FILE = f"{NODE_EXPORTER_TEXTFILE_DIR}/{DRILL_METRICS_FILE_NAME}"

# --- the app hosts -----------------------------------------------------------------------
APP_USER = "spark"
# The outbox dispatcher and the pgBouncer exporter run as users of their own: none of the
# three reads another's settings (each env file is read by systemd, root, for its unit only).
OUTBOX_USER = "spark-dispatcher"
EXPORTER_USER = "spark-exporter"
APP_ROOT = "/opt/spark-app"
APP_RELEASES_DIR = f"{APP_ROOT}/releases"
APP_CURRENT_LINK = f"{APP_ROOT}/current"
# In each release directory: the release id the units read (SPARK_RELEASE_ID), the schema
# head it was built with, and the marks the activation script and the rollback leave.
RELEASE_ENV_FILE_NAME = "release.env"
# The app's settings: app.env (SPARK_DATABASE_URL through pgBouncer, read by the units),
# migrations.env (the schema owner, direct), the outbox's and the exporter's own.
APP_ETC_DIR = "/etc/spark-app"
APP_ENV_FILE = f"{APP_ETC_DIR}/app.env"
MIGRATIONS_ENV_FILE = f"{APP_ETC_DIR}/migrations.env"
OUTBOX_ENV_FILE = f"{APP_ETC_DIR}/outbox.env"
# Redis' password for the dispatcher, where Redis has one (production): 0640 root:spark.
OUTBOX_REDIS_PASSWORD_FILE = f"{APP_ETC_DIR}/outbox-redis-password"
EXPORTER_ENV_FILE = f"{APP_ETC_DIR}/pgbouncer-exporter.env"
APP_SERVICE = "spark-app.service"
# Owns the app's listening socket (systemd socket activation): it outlives a restart of
# APP_SERVICE, which is started with it as fd 3, so a restart refuses no connection.
APP_SOCKET = "spark-app.socket"
# The transient unit (systemd-run) in which spark-app-activate tries a new release beside
# the live app before switching to it.
APP_PREFLIGHT_UNIT = "spark-app-preflight.service"
OUTBOX_SERVICE = "spark-outbox.service"
EXPORTER_SERVICE = "spark-pgbouncer-exporter.service"
# The app's own unit first: a runbook requires it, the others are optional in the deploy.
APP_SERVICES = (APP_SERVICE, OUTBOX_SERVICE, EXPORTER_SERVICE)

# --- the load balancer hosts (group lb) ---------------------------------------------------
HAPROXY_SERVICE = "haproxy.service"
HAPROXY_CONF = "/etc/haproxy/haproxy.cfg"
# The frontend's certificate chain and key in one file (HAProxy's crt format).
HAPROXY_CERT_FILE = "/etc/haproxy/certs/frontend.pem"
# HAProxy's runtime API (admin level), a unix socket only: never on the network.
HAPROXY_RUNTIME_SOCKET = "/run/haproxy/admin.sock"
# sparkops/lbruntime.py, uploaded: drains and readies an app host on this lb host.
LB_SERVER_TOOL = "/usr/local/sbin/spark-lb-server"
