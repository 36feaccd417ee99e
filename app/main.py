"""The trading app's HTTP API (ASGI, served by uvicorn).

`create_app()` reads settings from the environment; tests pass `Settings` directly.
Run: `uvicorn --factory app.main:create_app` or `sparkops app serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from app import apikeys, csp_reports, dbretry, idempotency, metrics, openapi, orders, ratelimit
from app import vocabulary as vocab
from app.config import Settings
from app.edge import EdgeGuard, RequestError, error_response, media_type, read_body
from app.http_metrics import HttpMetrics
from app.metrics_server import MetricsServer
from app.readiness import PUBLIC_REASON as PUBLIC_NOT_READY
from app.readiness import Readiness
from app.request_ids import RequestIds
from app.security import SecurityHeaders
from app.validation import format_decimal, parse_idempotency_key, parse_order, parse_uuid
from app.vocabulary import shown
from sparkops import defaults

log = logging.getLogger("spark.app")

# On every 503 for an unreachable database: requests and /readyz alike.
RETRY_AFTER_DB_UNAVAILABLE = {"retry-after": str(defaults.DB_UNAVAILABLE_RETRY_AFTER_SECONDS)}


def require_json(request: Request) -> None:
    if media_type(request) != "application/json":
        raise RequestError(
            415, "unsupported_media_type", "send the body as Content-Type: application/json"
        )


def create_app(settings: Settings | None = None) -> SecurityHeaders:
    settings = settings or Settings.from_env()
    dbretry.reconnect_sooner()
    pool = AsyncConnectionPool(
        settings.database_url,
        min_size=min(2, settings.db_pool_size),
        max_size=settings.db_pool_size,
        # pgBouncer 1.18 in transaction mode: no server-side prepared statements.
        kwargs={"prepare_threshold": None, "autocommit": True},
        open=False,
        name="spark-app",
        timeout=settings.db_timeout_s,
    )
    metrics.APP_BUILD_INFO.labels(settings.release_id).set(1)
    readiness = Readiness(pool)
    keys = apikeys.KeyStore(pool, settings.api_key_cache_ttl_s)

    async def authenticate(request: Request, permission: str) -> apikeys.ApiKey:
        try:
            return await keys.authenticate(request.headers.getlist("authorization"), permission)
        except apikeys.AuthError as exc:
            log.info("refused %s %s from %s: %s (request %s)", request.method,
                     request.url.path, _client_addr(request), exc.code,
                     request.scope["state"]["request_id"])  # fmt: skip
            # A refused key still counts against its address: guessing keys is throttled.
            async with pool.connection() as conn:
                client = ratelimit.client_of(_client_addr(request))
                if not await ratelimit.hit_client(conn, client, settings.client_rate_limit):
                    raise ratelimit.refused("client_addr") from None
            raise

    def budget(request: Request, api_key: apikeys.ApiKey) -> ratelimit.Budget:
        return ratelimit.Budget(api_key.id, api_key.rate_limit,
                                ratelimit.client_of(_client_addr(request)),
                                settings.client_rate_limit)  # fmt: skip

    async def post_order(request: Request) -> Response:
        try:
            api_key = await authenticate(request, "trade")
        except RequestError as exc:
            return error_response(exc)
        try:
            client_key = parse_idempotency_key(request.headers.getlist("idempotency-key"))
        except RequestError as exc:
            metrics.IDEMPOTENCY_OUTCOMES.labels("invalid_key").inc()
            return error_response(exc)
        try:
            require_json(request)
            order = parse_order(
                await read_body(request, settings.max_body_bytes), settings.instruments
            )
        except RequestError as exc:
            return error_response(exc)
        # Idempotency keys are scoped to the API key that sent them (the same string from
        # two API keys is two requests): the stored key is "<api key id>/<client's key>".
        key = f"{api_key.id}/{client_key}"
        audit = orders.Audit(api_key.id, _client_addr(request),
                             request.scope["state"]["request_id"])  # fmt: skip
        fingerprint = idempotency.request_hash("POST", "/orders", order.fingerprint_fields())

        async def place(conn) -> orders.Response | idempotency.Claim | Response:
            try:
                return await orders.claim_and_place(
                    conn, settings, order, key, fingerprint, audit, budget(request, api_key)
                )
            except orders.KeyTakenOver:
                claim = await idempotency.claim(
                    conn, key, fingerprint, settings.idempotency_in_flight_timeout_s
                )
                return Response(claim.body, status_code=claim.status or 409,
                                media_type="application/json",
                                headers=orders.stored_headers(claim))  # fmt: skip
            except RequestError as exc:  # the key was given back (orders.claim_and_place)
                return error_response(exc)

        async def give_back_key(conn) -> None:
            # The lost connection may have left this request's key in flight (claimed, the
            # order not committed): give it back, or the run again would answer 409. A key
            # that completed (the order did commit) stays, and the run again replays it.
            await idempotency.release(conn, key)

        placed = await dbretry.run(
            pool, place, before_retry=give_back_key, seconds=settings.db_retry_s, what="order"
        )
        if isinstance(placed, Response):
            return placed
        if not isinstance(placed, orders.Response):
            return _claim_answer(placed)
        result = placed
        headers = {"location": result.location} if result.location else {}
        log.info("order %s: %s account=%s api_key=%s client=%s request=%s", result.status,
                 result.location or "-", order.account_id, audit.api_key_id,
                 audit.client_addr, audit.request_id)  # fmt: skip
        return Response(
            result.body, status_code=result.status, media_type="application/json",
            headers=headers,
        )  # fmt: skip

    def _claim_answer(claim: idempotency.Claim) -> Response:
        """The answer of a request whose key was not claimed (app.idempotency)."""
        if claim.outcome == "rate_limited":
            return error_response(ratelimit.refused(claim.limit))
        if claim.outcome == "replayed":
            return Response(
                claim.body,
                status_code=claim.status,
                media_type="application/json",
                headers={"idempotent-replayed": "true", **orders.stored_headers(claim)},
            )
        if claim.outcome == "payload_mismatch":
            return error_response(
                RequestError(
                    422,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with a different request body; "
                    "use a new key for a new order",
                )
            )
        if claim.outcome == "in_flight":
            return error_response(
                RequestError(
                    409,
                    "idempotency_key_in_flight",
                    "a request with this Idempotency-Key is still being processed; "
                    "retry after the Retry-After delay",
                ),
                headers={"retry-after": str(defaults.IDEMPOTENCY_RETRY_AFTER_SECONDS)},
            )
        raise AssertionError(f"unexpected claim outcome {claim.outcome}")

    async def get_order(request: Request) -> Response:
        try:
            api_key = await authenticate(request, "read")
            order_id = parse_uuid(request.path_params["order_id"], "order id")
        except RequestError as exc:
            return error_response(exc)

        async def read(conn) -> Response | dict | None:
            if passed := await ratelimit.hit(conn, budget(request, api_key)):
                return error_response(ratelimit.refused(passed))
            cur = conn.cursor(row_factory=dict_row)
            return await (await cur.execute(_ORDER_OF_KEY, (api_key.id, order_id))).fetchone()

        row = await dbretry.run(pool, read, seconds=settings.db_retry_s, what="read")
        if isinstance(row, Response):
            return row
        if row is None:  # another key's order answers as one that does not exist
            return error_response(RequestError(404, "not_found", f"no order {order_id}"))
        return JSONResponse(_order_json(row))

    async def list_positions(request: Request) -> Response:
        try:
            api_key = await authenticate(request, "read")
            account_id = _query_param(request, "account_id", vocab.ACCOUNT_ID)
            status = _query_param(request, "status", vocab.POSITION_STATUS) or "open"
            limit = int(_query_param(request, "limit", vocab.PAGE_LIMIT)
                        or defaults.PAGE_SIZE_DEFAULT)  # fmt: skip
            if limit > defaults.PAGE_SIZE_MAX:
                raise RequestError(400, "invalid_query",
                                   f"limit must be at most {defaults.PAGE_SIZE_MAX}; got {limit}",
                                   field="limit")  # fmt: skip
            cursor = int(_query_param(request, "cursor", vocab.CURSOR) or 0)
            if account_id is None:
                raise RequestError(400, "invalid_query", "give account_id: the account whose "
                                   "positions to list", field="account_id")  # fmt: skip
        except RequestError as exc:
            return error_response(exc)
        params = {"key": api_key.id, "account_id": account_id, "status": status,
                  "after": cursor, "limit": limit + 1}  # fmt: skip

        async def read(conn) -> Response | list:
            if passed := await ratelimit.hit(conn, budget(request, api_key)):
                return error_response(ratelimit.refused(passed))
            cur = conn.cursor(row_factory=dict_row)
            return await (await cur.execute(_POSITIONS_OF_KEY, params)).fetchall()

        rows = await dbretry.run(pool, read, seconds=settings.db_retry_s, what="read")
        if isinstance(rows, Response):
            return rows
        if not rows:  # the key is not bound to this account: as if it did not exist
            return error_response(RequestError(404, "not_found", f"no account {account_id}"))
        rows = [r for r in rows if r["id"] is not None]
        page, more = rows[:limit], len(rows) > limit
        return JSONResponse({"positions": [_position_json(r) for r in page],
                             "next_cursor": str(page[-1]["id"]) if more else None})  # fmt: skip

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "release": settings.release_id})

    async def readyz(request: Request) -> Response:
        if await readiness.check():  # the reason is in the log, not in a public answer
            return JSONResponse(
                {"status": "unavailable", "reason": PUBLIC_NOT_READY},
                status_code=503,
                headers=RETRY_AFTER_DB_UNAVAILABLE,
            )
        return JSONResponse({"status": "ready", "release": settings.release_id})

    async def version(request: Request) -> Response:
        return JSONResponse({"release": settings.release_id})

    async def csp_report(request: Request) -> Response:
        try:
            body = await read_body(request, settings.max_body_bytes)
            directives = csp_reports.parse(request.headers.get("content-type", ""), body)
        except RequestError as exc:
            return error_response(exc)
        for directive in directives:
            metrics.CSP_REPORTS.labels(directive).inc()
        return Response(status_code=204)

    openapi_text = openapi.render()  # the document committed as docs/openapi.json

    async def openapi_document(request: Request) -> Response:
        return Response(openapi_text, media_type="application/json")

    async def index(request: Request) -> Response:
        nonce = request.scope["state"]["csp_nonce"]
        return HTMLResponse(_INDEX.format(nonce=nonce, release=settings.release_id))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Open without waiting: the app must start (and answer /readyz with 503) while
        # the database is still down.
        await pool.open(wait=False)
        # /metrics on its own port; each scrape first runs the readiness check, so the
        # readiness gauge is what /readyz would answer now.
        metrics_server = None
        if settings.metrics_port:
            metrics_server = MetricsServer(settings.metrics_host, settings.metrics_port,
                                           readiness.check)  # fmt: skip
        try:
            if metrics_server is not None:
                metrics_server.start()
            yield
        finally:
            if metrics_server is not None:
                metrics_server.stop()
            await pool.close()

    routes = [
        Route("/", index),
        Route("/orders", within_budget(post_order, settings), methods=["POST"]),
        Route("/orders/{order_id}", within_budget(get_order, settings), methods=["GET"]),
        Route("/positions", within_budget(list_positions, settings), methods=["GET"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/version", version),
        Route("/csp-report", csp_report, methods=["POST"]),
        Route(openapi.PATH, openapi_document),
    ]
    starlette = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            404: _not_found,
            405: _not_allowed,
            500: _server_error,
            psycopg.OperationalError: _database_unavailable,
            PoolTimeout: _database_unavailable,
        },
    )
    # No 307 from /positions/ to /positions: for an API it only adds a round trip (to a
    # POST-only route, for /orders/), and Starlette builds the Location from the Host header.
    starlette.router.redirect_slashes = False
    starlette.state.pool = pool
    return SecurityHeaders(
        RequestIds(HttpMetrics(EdgeGuard(starlette), starlette.router)), settings.hsts_max_age
    )


def within_budget(
    handler: Callable[[Request], Awaitable[Response]], settings: Settings
) -> Callable[[Request], Awaitable[Response]]:
    """The handler, answered 503 + Retry-After once it has run `settings.request_timeout_s`.

    The handler runs as a task of its own and is cancelled behind the answer: psycopg then
    cancels the query on the server and, if that gets no reply (a black hole), closes the
    connection; that takes up to ten more seconds, which the client no longer waits for.
    An order cut off so is either committed whole or not at all; the client's retry with the
    same Idempotency-Key replays it, or places it once the key's in-flight timeout passes.
    """

    async def guarded(request: Request) -> Response:
        task = asyncio.ensure_future(handler(request))
        try:
            return await asyncio.wait_for(asyncio.shield(task), settings.request_timeout_s)
        except TimeoutError:
            task.cancel()
            task.add_done_callback(_retrieve)
            log.warning("over budget on %s %s after %gs: answered 503 (request %s)",
                        request.method, request.url.path, settings.request_timeout_s,
                        request.scope["state"]["request_id"])  # fmt: skip
            return JSONResponse(
                {"error": "database_unavailable",
                 "message": f"no answer from the database within {settings.request_timeout_s:g}s;"
                            " retry later (orders: with the same Idempotency-Key)"},
                status_code=503,
                headers=RETRY_AFTER_DB_UNAVAILABLE,
            )  # fmt: skip
        except asyncio.CancelledError:
            task.cancel()  # the client went away: so does the work
            raise

    return guarded


def _retrieve(task: asyncio.Task) -> None:
    """Consume a cut-off handler's outcome, so asyncio does not report it as never retrieved."""
    if not task.cancelled() and task.exception() is not None:
        log.info("cut-off request ended with %r", task.exception())


# An order or a page of positions only through a key bound to its account.
_ORDER_OF_KEY = """
SELECT o.* FROM orders o
JOIN api_key_accounts b ON b.account_id = o.account_id AND b.api_key_id = %s::uuid
WHERE o.id = %s
"""
# One row with NULLs when the account is the key's but the page is empty; none when it is not.
_POSITIONS_OF_KEY = """
SELECT p.* FROM api_key_accounts b
LEFT JOIN LATERAL (
    SELECT * FROM positions
    WHERE account_id = b.account_id AND id > %(after)s
      AND (%(status)s = 'all' OR status = %(status)s)
    ORDER BY id LIMIT %(limit)s
) AS p ON true
WHERE b.api_key_id = %(key)s::uuid AND b.account_id = %(account_id)s
"""


def _client_addr(request: Request) -> str | None:
    """The client's address as uvicorn saw it (behind HAProxy: from X-Forwarded-For, which
    uvicorn takes only from the proxies in --forwarded-allow-ips)."""
    if request.client is None:
        return None
    try:
        return str(ipaddress.ip_address(request.client.host))
    except ValueError:
        return None


def _query_param(request: Request, name: str, term: vocab.Term) -> str | None:
    """An optional query parameter, given at most once and matching `term`."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise RequestError(
            400, "invalid_query", f"give {name} at most once; got {len(values)}", field=name
        )
    if values and not term.matches(values[0]):
        raise RequestError(
            400, "invalid_query", f"{name} must be {term.spelled}; got {shown(values[0])}",
            field=name,
        )  # fmt: skip
    return values[0] if values else None


async def _not_found(request: Request, exc) -> Response:
    return error_response(RequestError(404, "not_found", f"no route {shown(request.url.path)}"))


async def _not_allowed(request: Request, exc) -> Response:
    # RFC 9110: a 405 lists the methods the resource does support. Starlette's Route puts
    # them in the exception's Allow header (a set: sorted here so the answer is stable).
    allowed = sorted(m.strip() for m in (exc.headers or {}).get("Allow", "").split(",") if m)
    return error_response(
        RequestError(
            405, "method_not_allowed",
            f"{request.method} is not allowed here; allowed: {', '.join(allowed)}",
        ),
        headers={"allow": ", ".join(allowed)},
    )  # fmt: skip


async def _database_unavailable(request: Request, exc) -> Response:
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"error": "database_unavailable",
         "message": "the database is unreachable through pgBouncer; retry later"},
        status_code=503,
        headers=RETRY_AFTER_DB_UNAVAILABLE,
    )  # fmt: skip


async def _server_error(request: Request, exc) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"error": "internal", "message": "internal error; the request may be retried"}, 500
    )


def _order_json(row: dict) -> dict:
    return {
        "id": str(row["id"]),
        "account_id": row["account_id"],
        "symbol": row["symbol"],
        "side": row["side"],
        "strategy": row["strategy"],
        "quantity": format_decimal(row["quantity"]),
        "price": format_decimal(row["price"]),
        "notional": format_decimal(row["notional"]),
        "commission": format_decimal(row["commission"]),
        "liquidity": row["liquidity"],
        "status": row["status"],
        "created_at": row["created_at"].isoformat(),
    }


def _position_json(row: dict) -> dict:
    return {
        "id": row["id"],
        "account_id": row["account_id"],
        "symbol": row["symbol"],
        "strategy": row["strategy"],
        "quantity": format_decimal(row["quantity"]),
        "avg_entry_price": format_decimal(row["avg_entry_price"]),
        "realized_pnl": format_decimal(row["realized_pnl"]),
        "status": row["status"],
        "opened_at": row["opened_at"].isoformat(),
        "closed_at": row["closed_at"].isoformat() if row["closed_at"] else None,
    }


_INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Spark trading app</title>
<style nonce="{nonce}">body{{font-family:sans-serif;margin:2em}}</style></head>
<body><h1>Spark trading app</h1><p>Release <code>{release}</code>.
See <a href="/healthz">/healthz</a>, <a href="/readyz">/readyz</a>,
<a href="/version">/version</a>, <a href="/openapi.json">/openapi.json</a>.</p>
<script nonce="{nonce}">document.title += " (" + location.host + ")";</script>
</body></html>
"""
