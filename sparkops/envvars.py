"""Every environment variable the app, the outbox and the units read, named once.

The deploy's env templates receive these names through their context (deploys/support.py),
the app's settings readers (app/config.py, app/outbox/settings.py) and the runbooks'
`python -c` snippets take them from here, so a writer and its reader cannot disagree.
"""

from __future__ import annotations

# The app (app/config.py); app.env and release.env on an app host.
DATABASE_URL = "SPARK_DATABASE_URL"
RELEASE_ID = "SPARK_RELEASE_ID"
DB_POOL_SIZE = "SPARK_DB_POOL_SIZE"
RISK_MAX_NOTIONAL = "SPARK_RISK_MAX_NOTIONAL"
RISK_MAX_POSITION = "SPARK_RISK_MAX_POSITION"
RISK_PRICE_BAND = "SPARK_RISK_PRICE_BAND"
REFERENCE_PRICES = "SPARK_REFERENCE_PRICES"
API_KEY_CACHE_TTL_SECONDS = "SPARK_API_KEY_CACHE_TTL_SECONDS"
CLIENT_RATE_LIMIT = "SPARK_CLIENT_RATE_LIMIT"
# The app's /metrics: its own port, on the host's private address (app.env).
METRICS_HOST = "SPARK_METRICS_HOST"
METRICS_PORT = "SPARK_METRICS_PORT"
# The whole of a database-backed request, then 503 + Retry-After (app/main.py).
REQUEST_TIMEOUT_SECONDS = "SPARK_REQUEST_TIMEOUT_SECONDS"
# The schema owner's connection, direct to PostgreSQL, for migrations only (migrations.env).
MIGRATIONS_URL = "SPARK_MIGRATIONS_URL"

# The outbox dispatcher (app/outbox/settings.py); outbox.env.
OUTBOX_DATABASE_URL = "SPARK_OUTBOX_DATABASE_URL"
OUTBOX_REDIS_URL = "SPARK_OUTBOX_REDIS_URL"
# A file holding Redis' password (requirepass): never in the URL, the argv or group data.
OUTBOX_REDIS_PASSWORD_FILE = "SPARK_OUTBOX_REDIS_PASSWORD_FILE"
OUTBOX_PUBLISHER = "SPARK_OUTBOX_PUBLISHER"
OUTBOX_WEBHOOK_URL = "SPARK_OUTBOX_WEBHOOK_URL"
OUTBOX_WEBHOOK_SECRET = "SPARK_OUTBOX_WEBHOOK_SECRET"
OUTBOX_WEBHOOK_SECRET_FILE = "SPARK_OUTBOX_WEBHOOK_SECRET_FILE"
# Settings the deploy may pass through to the dispatcher start with this.
OUTBOX_PREFIX = "SPARK_OUTBOX_"

# Exchange credentials (app/exchanges/settings.py); each also as <NAME>_FILE.
BINANCE_API_KEY = "SPARK_BINANCE_API_KEY"
BINANCE_API_SECRET = "SPARK_BINANCE_API_SECRET"

# The pgBouncer exporter (app/pgbouncer_exporter.py); pgbouncer-exporter.env.
PGBOUNCER_EXPORTER_DSN = "PGBOUNCER_EXPORTER_DSN"
