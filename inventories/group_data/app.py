"""Parameters for the app hosts (prefix app_). Paths and ports: sparkops/defaults.py."""

from sparkops import defaults

# Extra SPARK_* settings for the app (app/config.py reads them), e.g.
# {"SPARK_DB_POOL_SIZE": "10", "SPARK_RISK_MAX_NOTIONAL": "250000"}.
app_settings = {"SPARK_DB_POOL_SIZE": str(defaults.APP_DB_POOL_SIZE)}

# Seconds a new release has to answer /readyz before spark-app-activate switches back.
app_ready_timeout = 60

# Releases kept on each host for `sparkops rollback` (the current one always stays).
app_releases_kept = defaults.APP_RELEASES_KEPT

# The outbox dispatcher (`sparkops outbox run`): where events go (redis | console | webhook)
# and its SPARK_OUTBOX_* settings, e.g. {"SPARK_OUTBOX_REDIS_URL": "redis://10.0.0.5:6379/0"}.
app_outbox_enabled = True
app_outbox_publisher = "redis"
app_outbox_settings = {}

# app/pgbouncer_exporter.py on the app hosts (scrape job "pgbouncer").
app_pgbouncer_exporter_enabled = True
