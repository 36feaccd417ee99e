"""The API as an OpenAPI 3.1 document, written from the README for the fuzzer.

Issue 11 adds the app's own OpenAPI document; until then the fuzzer (test_fuzz.py) reads
this one: the operations, their parameters and bodies, and the statuses each may answer.
Patterns are the app's own (app.vocabulary), so a value the schema calls valid is one the
app accepts.
"""

from __future__ import annotations

from app import vocabulary as vocab
from app.instruments import DEFAULT_INSTRUMENTS


def _pattern(term: vocab.Term) -> str:
    return f"^(?:{term.pattern.pattern})$"


_ERROR = {"description": "error", "content": {"application/json": {"schema": {
    "type": "object", "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"},
                   "field": {"type": "string"}},
}}}}  # fmt: skip

# Routes that touch data need an API key (`Authorization: Bearer spk_...`): 401 without a
# valid one, 403 without the permission, 429 over the key's rate limit.
_BEARER = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
_AUTH_ERRORS = {s: _ERROR for s in ("401", "403", "429")}

ORDER = {
    "type": "object",
    "required": ["account_id", "symbol", "side", "quantity", "price"],
    "additionalProperties": False,
    "properties": {
        "account_id": {"type": "string", "pattern": _pattern(vocab.ACCOUNT_ID)},
        "symbol": {"type": "string", "enum": sorted(DEFAULT_INSTRUMENTS)},
        "side": {"type": "string", "enum": ["buy", "sell"]},
        "quantity": {"type": "string", "pattern": _pattern(vocab.DECIMAL)},
        "price": {"type": "string", "pattern": _pattern(vocab.DECIMAL)},
        # null: a manual position, as the app writes it back in its answers.
        "strategy": {"type": ["string", "null"], "pattern": _pattern(vocab.STRATEGY)},
        "liquidity": {"type": "string", "enum": ["maker", "taker"]},
    },
}

CSP_LEGACY = {
    "type": "object", "required": ["csp-report"],
    "properties": {"csp-report": {"type": "object", "properties": {
        "violated-directive": {"type": "string"}, "effective-directive": {"type": "string"},
        "blocked-uri": {"type": "string"},
    }}},
}  # fmt: skip
CSP_REPORTING_API = {
    "type": "array", "maxItems": 100,
    "items": {"type": "object", "required": ["type", "body"], "properties": {
        "type": {"type": "string", "enum": ["csp-violation"]},
        "body": {"type": "object", "properties": {"effectiveDirective": {"type": "string"}}},
    }},
}  # fmt: skip

SCHEMA = {
    "openapi": "3.1.0",
    "info": {"title": "Spark trading app", "version": "test"},
    "components": {"securitySchemes": _BEARER},
    "paths": {
        "/orders": {"post": {
            "operationId": "placeOrder",
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": True,
                            "schema": {"type": "string",
                                       "pattern": _pattern(vocab.IDEMPOTENCY_KEY)}}],
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": ORDER}}},
            "security": [{"bearerAuth": []}],
            "responses": {"201": {"description": "filled"}, **_AUTH_ERRORS, **{
                s: _ERROR for s in ("400", "409", "413", "415", "422")}},
        }},
        "/orders/{order_id}": {"get": {
            "operationId": "getOrder",
            "parameters": [{"name": "order_id", "in": "path", "required": True,
                            "schema": {"type": "string", "format": "uuid"}}],
            "security": [{"bearerAuth": []}],
            "responses": {"200": {"description": "the order"}, "400": _ERROR, "404": _ERROR,
                          **_AUTH_ERRORS},
        }},
        "/positions": {"get": {
            "operationId": "listPositions",
            "parameters": [
                {"name": "account_id", "in": "query", "required": True,
                 "schema": {"type": "string", "pattern": _pattern(vocab.ACCOUNT_ID)}},
                {"name": "status", "in": "query",
                 "schema": {"type": "string", "enum": ["open", "closed", "all"]}},
                {"name": "limit", "in": "query",
                 "schema": {"type": "string", "pattern": _pattern(vocab.PAGE_LIMIT)}},
                {"name": "cursor", "in": "query",
                 "schema": {"type": "string", "pattern": _pattern(vocab.CURSOR)}},
            ],
            "security": [{"bearerAuth": []}],
            "responses": {"200": {"description": "a page of positions"}, "400": _ERROR,
                          "404": _ERROR, **_AUTH_ERRORS},
        }},
        "/csp-report": {"post": {
            "operationId": "reportCspViolation",
            "requestBody": {"required": True, "content": {
                "application/csp-report": {"schema": CSP_LEGACY},
                "application/reports+json": {"schema": CSP_REPORTING_API},
                "application/json": {"schema": {"oneOf": [CSP_LEGACY, CSP_REPORTING_API]}},
            }},
            "responses": {"204": {"description": "counted"}, **{
                s: _ERROR for s in ("400", "413", "415")}},
        }},
    },
}  # fmt: skip


def statuses(path: str, method: str) -> set[int]:
    """The statuses `method` on `path` (a template) may answer: a method the document does
    not list for the path is a 405 (HEAD goes with GET)."""
    operations = SCHEMA["paths"][path]
    method = "get" if method == "HEAD" else method.lower()
    if method not in operations:
        return {405}
    return {int(status) for status in operations[method]["responses"]}
