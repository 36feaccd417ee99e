"""Parameters for the db hosts: PostgreSQL, pgBackRest, pgBouncer (prefixes postgresql_,
pgbackrest_, pgbouncer_). Ports, roles and paths come from sparkops/defaults.py."""

from sparkops import defaults

# --- PostgreSQL --------------------------------------------------------------------------
# Settings on top of those the deploy derives (listen address, WAL archiving, SCRAM):
# {name: value}; strings are quoted for postgresql.conf, booleans become on/off.
postgresql_settings = {
    "max_connections": 200,
    "shared_buffers": "256MB",
    "log_min_duration_statement": "500ms",
    "log_line_prefix": "%m [%p] %q%u@%d ",
}

# pg_hba.conf, one dict per line. "address" is a CIDR or "group:<inventory group>" (each
# host of the group, /32). Only scram-sha-256, plus peer for the local postgres superuser.
postgresql_hba_rules = [
    {"type": "local", "database": "all", "user": "postgres", "method": "peer"},
    # pgBouncer (same host) for the app role, and its auth_query lookup.
    {
        "type": "host",
        "database": defaults.DATABASE_NAME,
        "user": f"{defaults.ROLE_APP},{defaults.ROLE_PGBOUNCER_AUTH}",
        "address": "127.0.0.1/32",
        "method": "scram-sha-256",
    },
    # postgres_exporter (same host).
    {
        "type": "host",
        "database": defaults.DATABASE_NAME,
        "user": defaults.ROLE_MONITORING,
        "address": "127.0.0.1/32",
        "method": "scram-sha-256",
    },
    # Migrations run from the app hosts, direct to PostgreSQL as the owner.
    {
        "type": "host",
        "database": defaults.DATABASE_NAME,
        "user": defaults.ROLE_MIGRATIONS,
        "address": "group:app",
        "method": "scram-sha-256",
    },
]

# --- pgBackRest --------------------------------------------------------------------------
pgbackrest_repo_type = "posix"  # "posix" (a directory on the db host) or "s3"
pgbackrest_repo_path = "/var/lib/pgbackrest"  # for s3: the prefix in the bucket, e.g. "/spark"
# For s3 (see inventories/group_data/production.py for a filled-in example):
# pgbackrest_s3 = {"bucket": "spark-backups", "endpoint": "s3.eu-central-1.amazonaws.com",
#                  "region": "eu-central-1", "wal_noncurrent_days": 14}
pgbackrest_retention_full = 2  # full backups kept (with their WAL)
pgbackrest_retention_diff = 6  # differential backups kept
pgbackrest_io_timeout = 15  # seconds; keeps a dead repository from stalling archive-push
pgbackrest_archive_async = True
pgbackrest_full_schedule = "Sun *-*-* 01:00:00"  # systemd OnCalendar
pgbackrest_diff_schedule = "Mon..Sat *-*-* 01:00:00"

# --- pgBouncer ---------------------------------------------------------------------------
# One entry per database pgBouncer serves; pool_size overrides the default per database.
pgbouncer_databases = [
    {
        "name": defaults.DATABASE_NAME,
        "host": "127.0.0.1",
        "port": defaults.POSTGRES_PORT,
        "dbname": defaults.DATABASE_NAME,
        "pool_size": defaults.PGBOUNCER_DEFAULT_POOL_SIZE,
    },
]
pgbouncer_default_pool_size = defaults.PGBOUNCER_DEFAULT_POOL_SIZE
pgbouncer_max_client_conn = defaults.PGBOUNCER_MAX_CLIENT_CONN
