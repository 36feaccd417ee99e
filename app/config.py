"""The app's settings, read once from the environment at start.

Every variable has the `SPARK_` prefix. Only the database URL is required; a bad value stops
the app at start with the variable's name, not at the first order.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from app.instruments import DEFAULT_INSTRUMENTS, Instrument
from sparkops import defaults, envvars


class ConfigError(ValueError):
    """A setting is missing or malformed."""


@dataclass(frozen=True)
class RiskLimits:
    max_notional: Decimal = Decimal("250000")  # per order, quote currency
    max_position: Decimal = Decimal("10")  # absolute base quantity per (account, symbol, strategy)
    price_band: Decimal = Decimal("0.05")  # allowed deviation from the reference price


@dataclass(frozen=True)
class Settings:
    database_url: str
    release_id: str = "dev"
    db_pool_size: int = defaults.APP_DB_POOL_SIZE
    risk: RiskLimits = field(default_factory=RiskLimits)
    instruments: dict[str, Instrument] = field(default_factory=lambda: dict(DEFAULT_INSTRUMENTS))
    db_timeout_s: float = 5.0  # wait for a pooled connection at most this long, then 503
    request_timeout_s: float = defaults.APP_REQUEST_TIMEOUT_SECONDS  # all of it, then 503
    # An order whose connection was lost is run again for at most this long (app.dbretry).
    db_retry_s: float = defaults.APP_DB_RETRY_SECONDS
    max_body_bytes: int = defaults.MAX_REQUEST_BODY_BYTES
    idempotency_in_flight_timeout_s: int = defaults.IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS
    hsts_max_age: int = 63072000  # two years, as the HSTS preload list asks
    # How long a process trusts what it read about an API key (0: read it on every request).
    api_key_cache_ttl_s: float = defaults.API_KEY_CACHE_TTL_SECONDS
    # Requests per second per client address (app.ratelimit).
    client_rate_limit: int = defaults.CLIENT_RATE_LIMIT
    # /metrics on a port of its own (app.metrics_server), on the host's private address
    # (the deploy sets it); 0 serves no metrics (several workers on one host, a benchmark).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = defaults.APP_METRICS_PORT

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        url = env.get(envvars.DATABASE_URL, "").strip()
        if not url:
            raise ConfigError(
                f"{envvars.DATABASE_URL} is not set: point it at pgBouncer, e.g. "
                "'host=127.0.0.1 port=6432 dbname=spark user=spark_app password=...'"
            )
        risk = RiskLimits(
            max_notional=_decimal(env, envvars.RISK_MAX_NOTIONAL, RiskLimits.max_notional),
            max_position=_decimal(env, envvars.RISK_MAX_POSITION, RiskLimits.max_position),
            price_band=_decimal(env, envvars.RISK_PRICE_BAND, RiskLimits.price_band),
        )
        instruments = dict(DEFAULT_INSTRUMENTS)
        for symbol, price in _reference_prices(env.get(envvars.REFERENCE_PRICES, "")).items():
            if symbol not in instruments:
                raise ConfigError(f"{envvars.REFERENCE_PRICES} names unknown symbol {symbol!r}")
            instruments[symbol] = dataclasses.replace(instruments[symbol], reference_price=price)
        return cls(
            database_url=url,
            release_id=env.get(envvars.RELEASE_ID, "dev"),
            db_pool_size=_int(env, envvars.DB_POOL_SIZE, defaults.APP_DB_POOL_SIZE),
            risk=risk,
            instruments=instruments,
            api_key_cache_ttl_s=_cache_ttl(env, envvars.API_KEY_CACHE_TTL_SECONDS),
            client_rate_limit=_int(env, envvars.CLIENT_RATE_LIMIT, defaults.CLIENT_RATE_LIMIT),
            metrics_host=env.get(envvars.METRICS_HOST, "127.0.0.1").strip() or "127.0.0.1",
            metrics_port=_port(env, envvars.METRICS_PORT, defaults.APP_METRICS_PORT),
            request_timeout_s=_budget(env, envvars.REQUEST_TIMEOUT_SECONDS),
        )


def _decimal(env: dict[str, str], name: str, default: Decimal) -> Decimal:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ConfigError(f"{name}={raw!r} is not a decimal number") from None
    if not value.is_finite() or value <= 0:
        raise ConfigError(f"{name}={raw!r} must be a positive decimal number")
    return value


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive")
    return value


def _port(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    if not raw.strip().isdigit() or int(raw) > 65535:
        raise ConfigError(f"{name}={raw!r} must be a port number (0 turns it off)")
    return int(raw)


def _budget(env: dict[str, str], name: str) -> float:
    """The request budget in seconds: long enough for a pooled connection and a query,
    short enough that a client is answered before it gives up (at most two minutes)."""
    raw = env.get(name)
    if raw is None:
        return defaults.APP_REQUEST_TIMEOUT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if not 0.5 <= value <= 120:
        raise ConfigError(f"{name}={raw!r} must be from 0.5 to 120 (seconds)")
    return value


def _cache_ttl(env: dict[str, str], name: str) -> float:
    raw = env.get(name)
    if raw is None:
        return defaults.API_KEY_CACHE_TTL_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if not 0 <= value <= 1:  # a revoked key must stop working within a second
        raise ConfigError(f"{name}={raw!r} must be from 0 to 1 (seconds)")
    return value


def _reference_prices(raw: str) -> dict[str, Decimal]:
    prices = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        symbol, sep, price = item.partition("=")
        if not sep:
            raise ConfigError(f"{envvars.REFERENCE_PRICES} item {item!r} is not SYMBOL=PRICE")
        name = f"{envvars.REFERENCE_PRICES}[{symbol.strip()}]"
        prices[symbol.strip()] = _decimal({name: price.strip()}, name, Decimal(0))
    return prices
