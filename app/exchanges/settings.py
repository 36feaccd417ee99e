"""Exchange-client settings, declared once: base URLs, timeouts, limits, secret names.

The clients, the deploy (which writes the secret files and environment) and the tests read
these names. Values that vary by environment are constructor arguments defaulting to these.
"""

from __future__ import annotations

from sparkops import envvars

# --- exchange names (also the `exchange` label value of every exchange metric) ------------
BINANCE = "binance"
BTCTURK = "btcturk"

BINANCE_BASE_URL = "https://api.binance.com"
BTCTURK_BASE_URL = "https://api.btcturk.com"

# --- timeouts and breaker ----------------------------------------------------------------
# Connect fast (a dead route should fail over to the breaker quickly); reads may take longer
# because order placement waits on the matching engine.
CONNECT_TIMEOUT_SECONDS = 2.0
READ_TIMEOUT_SECONDS = 5.0
CIRCUIT_FAILURE_THRESHOLD = 5  # consecutive failures that open the circuit
CIRCUIT_COOL_DOWN_SECONDS = 30.0  # open -> half-open after this long

# --- rate limits -------------------------------------------------------------------------
BINANCE_WEIGHT_LIMIT_PER_MINUTE = 1200
WEIGHT_SLOW_DOWN_FRACTION = 0.8  # above this share of the limit, the client spaces requests
WEIGHT_WINDOW_SECONDS = 60.0
# When a 429/418 carries no Retry-After, refuse calls this long (Binance always sends one;
# the fallback is here so a proxy that strips it cannot make us hammer the API).
DEFAULT_RETRY_AFTER_SECONDS = 60.0
# BTCTurk's limits are per 100 ms and its docs promise no Retry-After: back off briefly.
BTCTURK_DEFAULT_RETRY_AFTER_SECONDS = 5.0

# --- Binance signed requests -------------------------------------------------------------
BINANCE_RECV_WINDOW_MS = 5000
# Binance accepts newClientOrderId matching ^[a-zA-Z0-9-_]{1,36}$.
CLIENT_ORDER_ID_PREFIX = "spk-"
CLIENT_ORDER_ID_HASH_CHARS = 32  # hex characters of SHA-256: 128 bits, 36 characters in all

# --- BTCTurk -----------------------------------------------------------------------------
BTCTURK_ORDER_BOOK_MAX_LIMIT = 1000

# --- secrets: environment variables (value) or *_FILE variables (path outside the repo) ---
BINANCE_API_KEY_ENV = envvars.BINANCE_API_KEY
BINANCE_API_SECRET_ENV = envvars.BINANCE_API_SECRET
