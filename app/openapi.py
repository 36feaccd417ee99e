"""The API's OpenAPI 3.1 document: served at /openapi.json and committed as
docs/openapi.json (`sparkops check-generated` fails when the two differ).

Built from the app's own declarations: patterns from app.vocabulary (so a value the document
calls valid is one the app accepts), symbols from app.instruments, limits and Retry-After
delays from sparkops.defaults. Every operation lists every status it may answer, with its
body and headers; a status not listed here is a bug (tests/api/test_openapi.py checks real
answers against it, and the fuzz runs check every answer).
"""

from __future__ import annotations

import json

from app import vocabulary as vocab
from app.instruments import DEFAULT_INSTRUMENTS
from sparkops import defaults
from sparkops.metric_names import RATE_LIMITS

API_VERSION = "1"
PATH = "/openapi.json"


def pattern(term: vocab.Term) -> str:
    return f"^(?:{term.pattern.pattern})$"


def _ref(name: str, kind: str = "schemas") -> dict:
    return {"$ref": f"#/components/{kind}/{name}"}


_DECIMAL = {"type": "string", "pattern": pattern(vocab.DECIMAL)}
_SIGNED = {"type": "string", "pattern": f"^(?:{vocab.SIGNED_DECIMAL.pattern})$"}
_TIME = {"type": "string", "format": "date-time"}

SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "description": "a stable code, e.g. invalid_field"},
            "message": {"type": "string", "description": "for a person; ASCII"},
            "field": {"type": "string", "description": "the field or parameter at fault"},
            "rule": {"type": "string", "description": "the risk rule (risk_blocked)"},
        },
    },
    "OrderRequest": {
        "type": "object",
        "required": ["account_id", "symbol", "side", "quantity", "price"],
        "additionalProperties": False,
        "properties": {
            "account_id": {"type": "string", "pattern": pattern(vocab.ACCOUNT_ID)},
            "symbol": {"type": "string", "enum": sorted(DEFAULT_INSTRUMENTS)},
            "side": {"type": "string", "enum": ["buy", "sell"]},
            "quantity": _DECIMAL,
            "price": _DECIMAL,
            # null: a manual position, as the app writes it back in its answers.
            "strategy": {"type": ["string", "null"], "pattern": pattern(vocab.STRATEGY)},
            "liquidity": {"type": "string", "enum": ["maker", "taker"]},
        },
    },
    "Order": {
        "type": "object",
        "required": ["id", "account_id", "symbol", "side", "strategy", "quantity", "price",
                     "notional", "commission", "liquidity", "status", "created_at"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "account_id": {"type": "string"},
            "symbol": {"type": "string"},
            "side": {"type": "string", "enum": ["buy", "sell"]},
            "strategy": {"type": ["string", "null"]},
            "quantity": _SIGNED, "price": _SIGNED, "notional": _SIGNED, "commission": _SIGNED,
            "liquidity": {"type": "string", "enum": ["maker", "taker"]},
            "status": {"type": "string", "enum": ["filled"]},
            "created_at": _TIME,
            "position": {
                "type": "object",
                "required": ["id", "quantity", "avg_entry_price", "realized_pnl", "status"],
                "properties": {
                    "id": {"type": "integer"}, "quantity": _SIGNED,
                    "avg_entry_price": _SIGNED, "realized_pnl": _SIGNED,
                    "status": {"type": "string", "enum": ["open", "closed"]},
                },
            },
        },
    },
    "Position": {
        "type": "object",
        "required": ["id", "account_id", "symbol", "strategy", "quantity", "avg_entry_price",
                     "realized_pnl", "status", "opened_at", "closed_at"],
        "properties": {
            "id": {"type": "integer"},
            "account_id": {"type": "string"},
            "symbol": {"type": "string"},
            "strategy": {"type": ["string", "null"]},
            "quantity": _SIGNED, "avg_entry_price": _SIGNED, "realized_pnl": _SIGNED,
            "status": {"type": "string", "enum": ["open", "closed"]},
            "opened_at": _TIME,
            "closed_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "PositionsPage": {
        "type": "object",
        "required": ["positions", "next_cursor"],
        "properties": {
            "positions": {"type": "array", "items": _ref("Position"),
                          "maxItems": defaults.PAGE_SIZE_MAX},
            "next_cursor": {"type": ["string", "null"], "pattern": pattern(vocab.CURSOR),
                            "description": "give it as `cursor` for the next page; null: last"},
        },
    },
    # What browsers send, read leniently (app.csp_reports): only the directive is kept, a
    # directive of another type counts as "other", and other report types in a batch are
    # skipped.
    "CspLegacyReport": {
        "type": "object", "required": ["csp-report"],
        "properties": {"csp-report": {
            "type": "object",
            "description": "effective-directive or violated-directive names the directive",
        }},
    },
    "CspReports": {
        "type": "array", "minItems": 1,
        "description": "Reporting API reports; only the first 100 are read, and at least "
                       "one of them must be a csp-violation",
        "contains": {"type": "object", "required": ["type"],
                     "properties": {"type": {"const": "csp-violation"}}},
    },
    "Health": {
        "type": "object", "required": ["status", "release"],
        "properties": {"status": {"type": "string", "enum": ["ok"]},
                       "release": {"type": "string"}},
    },
    "Ready": {
        "type": "object", "required": ["status", "release"],
        "properties": {"status": {"type": "string", "enum": ["ready"]},
                       "release": {"type": "string"}},
    },
    "NotReady": {
        "type": "object", "required": ["status", "reason"],
        "properties": {"status": {"type": "string", "enum": ["unavailable"]},
                       "reason": {"type": "string", "enum": ["not ready"],
                                  "description": "generic: the detail is in the app's log"}},
    },
    "Version": {
        "type": "object", "required": ["release"], "properties": {"release": {"type": "string"}},
    },
}  # fmt: skip


def _header(description: str, schema: dict, required: bool = True) -> dict:
    return {"description": description, "required": required, "schema": schema}


_SECONDS = {"type": "string", "pattern": "^[0-9]+$"}
HEADERS = {
    "X-Request-ID": _header("this request's id, also in the app's log and on its order",
                            {"type": "string", "pattern": "^[0-9a-f]{32}$"}),
    "Retry-After": _header("seconds to wait before retrying", _SECONDS),
    "WWW-Authenticate": _header("the RFC 6750 challenge: Bearer realm=\"spark\"",
                                {"type": "string", "pattern": "^Bearer realm=\"spark\""}),
    "Location": _header("the new order", {"type": "string", "pattern": "^/orders/"}),
    "Idempotent-Replayed": _header(
        "true when this is the stored answer of an earlier request with the same key",
        {"type": "string", "enum": ["true"]}, required=False),
}  # fmt: skip


def _headers(*names: str) -> dict:
    return {name: _ref(name, "headers") for name in ("X-Request-ID", *names)}


def _json(description: str, schema: dict, *headers: str) -> dict:
    return {"description": description, "headers": _headers(*headers),
            "content": {"application/json": {"schema": schema}}}  # fmt: skip


def _error(description: str, *headers: str) -> dict:
    return _json(description, _ref("Error"), *headers)


_RATE = ", ".join(RATE_LIMITS)
RESPONSES = {
    "BadRequest": _error("the request is malformed: a header, a query parameter, the body or "
                         "a field (`field` names it); nothing was done"),
    "Unauthorized": _error("no valid API key (missing, malformed, unknown or revoked)",
                           "WWW-Authenticate"),
    "Forbidden": _error("the key lacks the permission (`read` or `trade`)", "WWW-Authenticate"),
    "NotFound": _error("no such resource, or not one of the key's accounts (the same answer)"),
    "InFlight": _error("a request with this Idempotency-Key is still running",
                       "Retry-After"),
    "TooLarge": _error(f"the body is over {defaults.MAX_REQUEST_BODY_BYTES} bytes"),
    "UnsupportedMediaType": _error("the body's Content-Type is not one the route reads"),
    "RateLimited": _error(f"over a rate limit ({_RATE}: requests per second, counted over "
                          "every app process); nothing was done", "Retry-After"),
    "Unavailable": _error("the database is unreachable through pgBouncer; retry later",
                          "Retry-After"),
}  # fmt: skip


def _responses(**by_status) -> dict:
    return {str(status): value for status, value in by_status.items()}


_DATA_ERRORS = {
    "400": _ref("BadRequest", "responses"), "401": _ref("Unauthorized", "responses"),
    "403": _ref("Forbidden", "responses"), "429": _ref("RateLimited", "responses"),
    "503": _ref("Unavailable", "responses"),
}  # fmt: skip
_BAD = {"400": _ref("BadRequest", "responses")}
_BEARER = [{"bearerAuth": []}]


def _query(name: str, schema: dict, description: str, required: bool = False) -> dict:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}  # fmt: skip


PATHS = {
    "/orders": {"post": {
        "operationId": "placeOrder",
        "summary": "Place an order (a key with `trade`), filled at the given price",
        "security": _BEARER,
        "parameters": [{
            "name": "Idempotency-Key", "in": "header", "required": True,
            "schema": {"type": "string", "pattern": pattern(vocab.IDEMPOTENCY_KEY)},
            "description": vocab.IDEMPOTENCY_KEY.spelled + "; scoped to the API key; kept "
                           f"{defaults.IDEMPOTENCY_KEY_TTL_HOURS} h",
        }],
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": _ref("OrderRequest")}}},
        "responses": {
            "201": _json("filled (or the stored answer of the same key and body)",
                         _ref("Order"), "Location", "Idempotent-Replayed"),
            **_DATA_ERRORS,
            "409": _ref("InFlight", "responses"),
            "413": _ref("TooLarge", "responses"),
            "415": _ref("UnsupportedMediaType", "responses"),
            "422": _error("refused: unknown account, a risk rule (`rule`), or this "
                          "Idempotency-Key used with another body", "Idempotent-Replayed"),
        },
    }},
    "/orders/{order_id}": {"get": {
        "operationId": "getOrder",
        "summary": "One order of the key's accounts (a key with `read`)",
        "security": _BEARER,
        "parameters": [{"name": "order_id", "in": "path", "required": True,
                        "schema": {"type": "string", "format": "uuid",
                                   "pattern": pattern(vocab.UUID)}}],
        "responses": {"200": _json("the order", _ref("Order")), **_DATA_ERRORS,
                      "404": _ref("NotFound", "responses")},
    }},
    "/positions": {"get": {
        "operationId": "listPositions",
        "summary": "A page of one account's positions (a key with `read`)",
        "security": _BEARER,
        "parameters": [
            _query("account_id", {"type": "string", "pattern": pattern(vocab.ACCOUNT_ID)},
                   "the account: one of the key's", required=True),
            _query("status", {"type": "string", "enum": ["open", "closed", "all"]},
                   "default open"),
            _query("limit", {"type": "string", "pattern": pattern(vocab.PAGE_LIMIT)},
                   f"1-{defaults.PAGE_SIZE_MAX}, default {defaults.PAGE_SIZE_DEFAULT}"),
            _query("cursor", {"type": "string", "pattern": pattern(vocab.CURSOR)},
                   "next_cursor of the previous page"),
        ],
        "responses": {"200": _json("a page", _ref("PositionsPage")), **_DATA_ERRORS,
                      "404": _ref("NotFound", "responses")},
    }},
    "/csp-report": {"post": {
        "operationId": "reportCspViolation",
        "summary": "Content-Security-Policy violation reports from browsers (counted)",
        "requestBody": {"required": True, "content": {
            "application/csp-report": {"schema": _ref("CspLegacyReport")},
            "application/reports+json": {"schema": _ref("CspReports")},
            "application/json": {"schema": {"anyOf": [_ref("CspLegacyReport"),
                                                      _ref("CspReports")]}},
        }},
        "responses": {"204": {"description": "counted", "headers": _headers()}, **_BAD,
                      "413": _ref("TooLarge", "responses"),
                      "415": _ref("UnsupportedMediaType", "responses")},
    }},
    "/healthz": {"get": {
        "operationId": "health", "summary": "The process is alive",
        "responses": {"200": _json("alive", _ref("Health")), **_BAD},
    }},
    "/readyz": {"get": {
        "operationId": "ready",
        "summary": "Ready to serve: the database answers through pgBouncer in time",
        "responses": {"200": _json("ready", _ref("Ready")), **_BAD,
                      "503": _json("not ready (why: in the app's log)", _ref("NotReady"),
                                   "Retry-After")},
    }},
    "/version": {"get": {
        "operationId": "version", "summary": "The running release",
        "responses": {"200": _json("the release", _ref("Version")), **_BAD},
    }},
    "/": {"get": {
        "operationId": "index", "summary": "A page naming the release",
        "responses": {"200": {"description": "HTML", "headers": _headers(),
                              "content": {"text/html": {"schema": {"type": "string"}}}},
                      **_BAD},
    }},
    PATH: {"get": {
        "operationId": "openapi", "summary": "This document",
        "responses": {"200": _json("the OpenAPI document", {"type": "object"}), **_BAD},
    }},
}  # fmt: skip

DESCRIPTION = f"""The Spark trading app's HTTP API.

Routes that touch data need an API key: `Authorization: Bearer spk_...` (made with
`sparkops app keys create`). Every answer carries `X-Request-ID` and the security headers
(CSP, HSTS, ...); every error is JSON `{{"error": code, "message": text}}`. A method a path
does not list answers 405 with `Allow`; a path not listed answers 404. Rate limits: per API
key (its own, default {defaults.API_KEY_DEFAULT_RATE_LIMIT}/s) and per client address
(default {defaults.CLIENT_RATE_LIMIT}/s), 429 with `Retry-After`. Money is a decimal
string, never a JSON number. Metrics are not served here (a private port)."""


def document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Spark trading app", "version": API_VERSION,
                 "description": DESCRIPTION},
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "description": vocab.API_KEY.spelled}},
            "schemas": SCHEMAS,
            "headers": HEADERS,
            "responses": RESPONSES,
        },
        "paths": PATHS,
    }  # fmt: skip


def render() -> str:
    """The document as committed: sorted keys, fixed indent, so diffs are meaningful."""
    return json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=True) + "\n"
