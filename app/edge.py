"""The edge of the app: what a request may carry before any route looks at it.

- `RequestError` is a client error; `error_response` renders it as ASCII-only JSON, so no
  value a client sent can make the error answer itself fail to encode.
- `EdgeGuard` (ASGI) refuses NUL bytes and lone surrogates in query parameters and header
  values with a 400 naming the parameter or header, for every route.
- `parse_json` bounds the nesting depth by scanning the raw bytes BEFORE the parser runs
  (Python's json recurses once per level and raises RecursionError near 1,000), keeps JSON
  numbers as their source text, refuses NaN/Infinity and duplicate keys, and refuses NUL
  and lone surrogates in every string and key, naming where they are.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import accumulate
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.vocabulary import CONTENT_LENGTH, forbidden_character, name_for, shown
from sparkops import defaults


class RequestError(ValueError):
    """A client error: the HTTP status, a stable error code and a message for a person."""

    def __init__(self, status: int, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra
        self.headers: dict[str, str] = {}  # sent with the answer (WWW-Authenticate, Retry-After)

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}


def error_response(exc: RequestError, headers: dict[str, str] | None = None) -> Response:
    # ensure_ascii: a lone surrogate that slipped into a message is written as \ud800,
    # where Starlette's JSONResponse (UTF-8) would raise while answering.
    text = json.dumps(exc.body(), ensure_ascii=True, separators=(",", ":"))
    headers = {**exc.headers, **(headers or {})}
    return Response(text, exc.status, headers, media_type="application/json")


# --- query parameters and headers ----------------------------------------------------------


def _query_problem(query_string: bytes) -> RequestError | None:
    # Percent-decoding replaces invalid UTF-8, so no surrogate can come out of a query; NUL
    # can, only from "%00" (a raw 0x00 never gets past uvicorn's parser).
    if b"%00" not in query_string and b"\x00" not in query_string:
        return None
    # Decoded as Starlette decodes it (latin-1, then percent-decoding as UTF-8).
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        for text, where in ((name, "a query parameter name"), (value, None)):
            problem = forbidden_character(text)
            if problem:
                field = where or f"query parameter {name_for(name)}"
                return RequestError(
                    400, "forbidden_character", f"{field} contains {problem}", field=field
                )
    return None


def _header_problem(headers: list[tuple[bytes, bytes]]) -> RequestError | None:
    # uvicorn's parsers already refuse NUL in headers; another ASGI server might not.
    for name, value in headers:
        if b"\x00" in name or b"\x00" in value:
            header = name_for(name.decode("latin-1"))
            return RequestError(
                400, "forbidden_character",
                f"header {header} contains a NUL byte (U+0000)", field=header,
            )  # fmt: skip
    return None


class EdgeGuard:
    """ASGI middleware: refuse forbidden characters in the query string and headers."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = _query_problem(scope.get("query_string", b"")) or _header_problem(
                scope.get("headers", [])
            )
            if problem is not None:
                await error_response(problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)


# --- bodies -------------------------------------------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than `limit` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if CONTENT_LENGTH.matches(declared) and int(declared) > limit:
        raise RequestError(413, "body_too_large", f"body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, "body_too_large", f"body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip(" \t").lower()


@dataclass(frozen=True)
class JsonNumber:
    """A JSON number kept as its source text, so validation can name it and refuse it.

    Not a `str` subclass: a number must never pass where a string belongs (it did:
    {"strategy": 0} opened a position under strategy "0").
    """

    text: str

    def __repr__(self) -> str:
        return self.text


# Strings are cut out before brackets are counted: escape pairs first (so `\"` does not end
# a string), then quote-to-quote runs. Up to JSON's first syntax error this reads strings
# exactly as the parser does; after it the parser stops anyway. Both passes are linear.
_ESCAPE_PAIR = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_DEPTH_STEP = [0] * 256
for _byte in b"[{":
    _DEPTH_STEP[_byte] = 1
for _byte in b"]}":
    _DEPTH_STEP[_byte] = -1


def nesting_depth_exceeds(raw: bytes, limit: int) -> bool:
    """True when `raw` opens more than `limit` arrays/objects at once (strings skipped).

    Linear in len(raw), no recursion and no per-byte Python loop, whatever the bytes are.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    outside_strings = _STRING.sub(b"", _ESCAPE_PAIR.sub(b"", raw))
    depths = accumulate(map(_DEPTH_STEP.__getitem__, outside_strings))
    return max(depths, default=0) > limit


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise RequestError(400, "malformed_json", f"field {shown(key)} appears twice")
        obj[key] = value
    return obj


def _refuse_constant(name: str) -> Any:
    raise RequestError(400, "malformed_json", f"{name} is not valid JSON")


def parse_json(raw: bytes, what: str = "body") -> Any:
    """Any JSON value from `raw`, or a RequestError (400) saying what is wrong with it."""
    if nesting_depth_exceeds(raw, defaults.MAX_JSON_DEPTH):
        raise RequestError(
            400, "json_too_deep",
            f"{what} nests arrays/objects more than {defaults.MAX_JSON_DEPTH} levels deep",
        )  # fmt: skip
    try:
        value = json.loads(
            raw.decode("utf-8"),
            parse_float=JsonNumber,
            parse_int=JsonNumber,
            parse_constant=_refuse_constant,
            object_pairs_hook=_no_duplicates,
        )
    except UnicodeDecodeError:
        raise RequestError(400, "malformed_json", f"{what} is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise RequestError(
            400, "malformed_json", f"{what} is not valid JSON: {exc.msg} at char {exc.pos}"
        ) from None
    if _MAY_HOLD_FORBIDDEN.search(raw):
        _refuse_forbidden_characters(value, what)
    return value


# Valid UTF-8 cannot encode a surrogate, so NUL and lone surrogates reach a parsed string
# only as a raw 0x00 or a \u0000 / \uD800-\uDFFF escape. Bodies without one skip the walk.
_MAY_HOLD_FORBIDDEN = re.compile(rb"\x00|\\u(?:0000|[Dd][89A-Fa-f])")


def _refuse_forbidden_characters(value: Any, what: str) -> None:
    """Walk every string and key (iteratively; depth is bounded anyway)."""
    stack: list[tuple[Any, str]] = [(value, what)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                problem = forbidden_character(key)
                if problem:
                    raise RequestError(
                        400, "forbidden_character",
                        f"a field name in {path} contains {problem}", field=path,
                    )  # fmt: skip
                stack.append((child, name_for(key) if path == what else f"{path}.{name_for(key)}"))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
        elif isinstance(item, str):
            problem = forbidden_character(item)
            if problem:
                raise RequestError(
                    400, "forbidden_character", f"{path} contains {problem}", field=path
                )
