"""API keys: who may call the API, on which accounts, with which permissions.

A key is `spk_` and 43 base64url characters: 256 bits from `secrets`. Only its SHA-256 is
stored. A keyed or slow hash (HMAC with a pepper, bcrypt, argon2) protects secrets a person
chose, which are guessable; a 256-bit random secret cannot be guessed from its hash, and a
plain SHA-256 lets a key be found by an indexed equality in one query, in microseconds.

Clients send `Authorization: Bearer <key>` (RFC 6750) over TLS. What a key may do (its
permissions and rate limit, or that it is unknown or revoked) is kept per process for at
most `ttl` seconds, so a revocation reaches every process within it. Which accounts a key
may use is not cached: every query that touches an account joins `api_key_accounts`, so a
binding takes effect at once and costs no extra round trip.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg_pool import AsyncConnectionPool

from app import dbretry, metrics
from app import vocabulary as vocab
from app.edge import RequestError
from sparkops import defaults

PERMISSIONS = ("read", "trade")
REALM = 'Bearer realm="spark"'


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    permissions: frozenset[str]
    rate_limit: int  # requests per second


@dataclass(frozen=True)
class _Revoked:
    id: str


class AuthError(RequestError):
    """401 (who are you?) or 403 (you may not), with the RFC 6750 challenge."""

    def __init__(self, status: int, code: str, message: str, error: str | None = None):
        super().__init__(status, code, message)
        challenge = REALM if error is None else f'{REALM}, error="{error}"'
        self.headers = {"www-authenticate": challenge}


def new_secret() -> str:
    return defaults.API_KEY_PREFIX + secrets.token_urlsafe(32)


def secret_sha256(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def bearer_token(values: list[str]) -> str:
    """The key in the request's one Authorization header, or an AuthError saying why not."""
    if not values:
        metrics.AUTH_FAILURES.labels("missing").inc()
        raise AuthError(401, "unauthorized",
                        "send your API key as Authorization: Bearer <key>")  # fmt: skip
    if len(values) > 1:
        metrics.AUTH_FAILURES.labels("malformed").inc()
        raise AuthError(401, "invalid_token", "send one Authorization header", "invalid_request")
    scheme, _, token = values[0].strip(" \t").partition(" ")
    if scheme.lower() != "bearer" or not vocab.API_KEY.matches(token.strip(" \t")):
        metrics.AUTH_FAILURES.labels("malformed").inc()
        raise AuthError(
            401, "invalid_token",
            f"the Authorization header must be Bearer and {vocab.API_KEY.spelled}",
            "invalid_token",
        )  # fmt: skip
    return token.strip(" \t")


_FIND = """
SELECT id::text, name, permissions, rate_limit, revoked_at IS NOT NULL AS revoked
FROM api_keys WHERE secret_sha256 = %s
"""


class KeyStore:
    """Finds the key a request carries, with a per-process cache of at most `ttl` seconds."""

    def __init__(self, pool: AsyncConnectionPool, ttl: float,
                 max_entries: int = defaults.API_KEY_CACHE_MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self._pool = pool
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._cache: dict[bytes, tuple[float, ApiKey | _Revoked | None]] = {}
        # One read per key at a time: requests that miss while it runs wait for its answer.
        # Without this, under load (requests queue for a pooled connection longer than the
        # TTL) nearly every request missed and read the key itself.
        self._reading: dict[bytes, asyncio.Future] = {}

    async def authenticate(self, authorization: list[str], permission: str) -> ApiKey:
        digest = secret_sha256(bearer_token(authorization))
        found = await self._find(digest)
        if not isinstance(found, ApiKey):
            metrics.AUTH_FAILURES.labels("revoked" if found else "unknown").inc()
            raise AuthError(401, "invalid_token", "this API key is unknown or revoked",
                            "invalid_token")  # fmt: skip
        if permission not in found.permissions:
            metrics.AUTH_FAILURES.labels("forbidden").inc()
            raise AuthError(
                403, "forbidden", f"this API key does not have the {permission} permission",
                "insufficient_scope",
            )  # fmt: skip
        return found

    async def _find(self, digest: bytes) -> ApiKey | _Revoked | None:
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        reading = self._reading.get(digest)
        if reading is not None:
            try:
                return await asyncio.shield(reading)
            except asyncio.CancelledError:
                if not reading.cancelled():
                    raise  # this request itself was cancelled
            except Exception:  # the other read failed: read for ourselves
                pass
        return await self._read(digest, now)

    async def _read(self, digest: bytes, now: float) -> ApiKey | _Revoked | None:
        reading = asyncio.get_running_loop().create_future()
        self._reading[digest] = reading
        try:
            found = await self._query(digest)
        except asyncio.CancelledError:
            reading.cancel()
            raise
        except BaseException as exc:
            reading.set_exception(exc)
            reading.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            if self._reading.get(digest) is reading:
                del self._reading[digest]
        reading.set_result(found)
        if self._ttl > 0:
            if len(self._cache) >= self._max:
                self._cache.clear()  # a flood of made-up keys must not grow memory
            self._cache[digest] = (now + self._ttl, found)
        return found

    async def _query(self, digest: bytes) -> ApiKey | _Revoked | None:
        async def find(conn) -> tuple | None:
            return await (await conn.execute(_FIND, (digest,))).fetchone()

        # Read again on a fresh connection when the database moved (app.dbretry): a
        # switchover must not turn into 503s at the door.
        row = await dbretry.run(self._pool, find, what="api_key")
        found: ApiKey | _Revoked | None = None
        if row is not None:
            key_id, name, permissions, rate_limit, revoked = row
            found = _Revoked(key_id) if revoked else ApiKey(
                key_id, name, frozenset(permissions), rate_limit
            )  # fmt: skip
        return found


# --- the operator's side (sparkops app keys), synchronous -------------------------------


@dataclass(frozen=True)
class KeyRow:
    id: str
    name: str
    accounts: list[str]
    permissions: list[str]
    rate_limit: int
    created_at: str
    created_by: str
    revoked_at: str | None
    revoked_by: str | None


class KeyRefused(ValueError):
    """The operator asked for something that cannot be done; nothing was changed."""


def create(conn: psycopg.Connection, name: str, accounts: list[str], permissions: list[str],
           rate_limit: int) -> tuple[str, str]:  # fmt: skip
    """A new key bound to `accounts`; returns (key id, secret). The secret is not stored."""
    if not vocab.KEY_NAME.matches(name):
        raise KeyRefused(f"the name must be {vocab.KEY_NAME.spelled}; got {vocab.shown(name)}")
    bad = [p for p in permissions if p not in PERMISSIONS]
    if bad or not permissions:
        raise KeyRefused(f"permissions must be some of {', '.join(PERMISSIONS)}; got {bad}")
    if not accounts:
        raise KeyRefused("bind the key to at least one account (--account)")
    if rate_limit < 1:
        raise KeyRefused(f"the rate limit must be at least 1 request per second; got {rate_limit}")
    secret = new_secret()
    with conn.transaction():
        known = {r[0] for r in conn.execute(
            "SELECT id FROM accounts WHERE id = ANY(%s)", (accounts,))}  # fmt: skip
        missing = sorted(set(accounts) - known)
        if missing:
            raise KeyRefused(f"no such account(s): {', '.join(missing)}; nothing was created")
        key_id = conn.execute(
            "INSERT INTO api_keys (name, secret_sha256, permissions, rate_limit) "
            "VALUES (%s, %s, %s, %s) RETURNING id::text",
            (name, secret_sha256(secret), sorted(set(permissions)), rate_limit),
        ).fetchone()[0]
        for account in sorted(set(accounts)):
            conn.execute(
                "INSERT INTO api_key_accounts (api_key_id, account_id) VALUES (%s, %s)",
                (key_id, account),
            )
    return key_id, secret


def list_keys(conn: psycopg.Connection) -> list[KeyRow]:
    rows = conn.execute(
        "SELECT k.id::text, k.name, coalesce(array_agg(b.account_id ORDER BY b.account_id) "
        "FILTER (WHERE b.account_id IS NOT NULL), '{}'), k.permissions, k.rate_limit, "
        "k.created_at::text, k.created_by, k.revoked_at::text, k.revoked_by "
        "FROM api_keys k LEFT JOIN api_key_accounts b ON b.api_key_id = k.id "
        "GROUP BY k.id ORDER BY k.created_at, k.id"
    ).fetchall()
    return [KeyRow(*row) for row in rows]


def find(conn: psycopg.Connection, key_id: str) -> KeyRow:
    if not vocab.UUID.matches(key_id):
        raise KeyRefused(f"a key id is {vocab.UUID.spelled}; got {vocab.shown(key_id)}")
    for row in list_keys(conn):
        if row.id == key_id.lower():
            return row
    raise KeyRefused(f"no API key {key_id}")


def revoke(conn: psycopg.Connection, key_id: str) -> bool:
    """Revoke a key (kept, never deleted: orders name it). False if it already was."""
    find(conn, key_id)
    return (
        conn.execute(
            "UPDATE api_keys SET revoked_at = now(), revoked_by = current_user "
            "WHERE id = %s AND revoked_at IS NULL",
            (key_id,),
        ).rowcount
        == 1
    )
