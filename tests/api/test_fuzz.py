"""Property-based fuzzing of the API through a real uvicorn and a real pgBouncer.

Requests are drawn from the OpenAPI document in api_schema.py: valid ones, and hostile
ones (deep nesting, huge and non-ASCII numbers, NUL, lone surrogates, unknown fields,
wrong types, oversized keys and bodies, repeated headers, wrong methods and media types).
Every answer must be a status the document lists for the operation (so never a 5xx), keep
to the document's headers and body for that status (tests/api/openapi_check.py), carry
the security headers and, when it is an error, say what was wrong in ASCII JSON; and each
request must change exactly the rows its answer implies: a rejected request writes none.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import parse_qsl

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.csp_reports import KNOWN_DIRECTIVES
from app.instruments import DEFAULT_INSTRUMENTS
from tests.api.api_schema import ORDER, SCHEMA, statuses
from tests.api.openapi_check import problems
from tests.conftest import AUTH, create_account

EXAMPLES = 1200  # one request each; the test asserts at least MIN_REQUESTS went out
MIN_REQUESTS = 1000
ACCOUNTS = ("fuzz-1", "fuzz-2")
# Replaced by a new uuid4 when sent: Hypothesis repeats drawn values across examples, and a
# repeated key with another body is (rightly) a 422, not the body's own answer.
FRESH = "fresh"
REUSED_KEYS = tuple(f"fuzz-key-{i}" for i in range(4))  # replays and payload mismatches
TABLES = ("orders", "positions", "idempotency_keys", "outbox_events")
ORDER_PROPS = ORDER["properties"]


class Raw(str):
    """JSON text written as it is: numbers the encoder would not write, NaN, Infinity."""


@dataclass
class Call:
    method: str
    template: str  # the document's path
    path: str  # the path sent, query included
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    body: bytes | None = None

    def __repr__(self) -> str:  # failures name the request without pages of "kkk..."
        body = None if self.body is None else self.body[:300]
        return f"Call({self.method} {self.path[:300]!r}, {self.headers!r}, body={body!r})"


def to_json(value, ascii_only: bool) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        items = (f"{to_json(k, ascii_only)}:{to_json(v, ascii_only)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def encode(value, ascii_only: bool) -> bytes:
    # Without ensure_ascii a lone surrogate goes out as its three UTF-8-like bytes: the
    # server must call that "not UTF-8", not crash.
    return to_json(value, ascii_only).encode("utf-8", "surrogatepass")


def percent(text: str) -> str:
    """Every byte %-encoded, so the server, not httpx, decides what the text means."""
    return "".join(f"%{b:02X}" for b in text.encode("utf-8", "surrogatepass"))


# --- values -------------------------------------------------------------------------------

HOSTILE_ALPHABET = ["\x00", "\ud800", "\udfff", "\n", "\r", "\t", " ", "\u0666", "\uff16",
                    "\u0967", "\u00b2", "\u00e9", "\u202e", "\ufeff", '"', "\\", "[", "{",
                    "0", "9", ".", "-", "e", "+", "a", "Z", "\U0001f600"]  # fmt: skip
short_hostile_text = st.text(st.sampled_from(HOSTILE_ALPHABET), max_size=24) | st.text(max_size=24)
# For URLs: long, but within what a client sends (httpx stops at 64 KB).
url_text = short_hostile_text | st.integers(65, 3000).map(lambda n: "k" * n)
hostile_text = short_hostile_text | st.integers(65, 20_000).map(lambda n: "k" * n)  # to a 413
raw_numbers = st.one_of(
    st.from_regex(r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,7})?", fullmatch=True),
    st.integers(4000, 6000).map(lambda n: "9" * n),
    st.sampled_from(["1e999999", "-0", "1E-999999", "NaN", "Infinity", "-Infinity"]),
).map(Raw)
wrong_types = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers()),
)  # fmt: skip
DEPTHS = st.integers(1, 12) | st.integers(900, 9000)  # around the limit, and past recursion
OTHER_DIGITS = ["\u0660", "\uff10", "\u0966", "\U0001d7ce"]  # 0 in four other scripts


def mangled(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A valid value spoiled the ways the issue found: newline, spaces, NUL, other digits."""
    return st.tuples(valid, st.integers(0, 5), st.sampled_from(OTHER_DIGITS)).map(
        lambda t: [
            t[0] + "\n", " " + t[0], t[0] + "\x00", t[0] + "\ud800", t[0] + "\u00a0",
            "".join(chr(ord(t[2]) + int(c)) if c.isdigit() else c for c in t[0]) + "0",
        ][t[1]]
    )  # fmt: skip


def from_schema(prop: dict) -> st.SearchStrategy[str]:
    if "enum" in prop:
        return st.sampled_from(prop["enum"])
    return st.from_regex(prop["pattern"], fullmatch=True)


@st.composite
def plausible_order(draw) -> dict:
    """An order the app should fill or risk-block: near the reference price, on the grid."""
    symbol = draw(st.sampled_from(sorted(DEFAULT_INSTRUMENTS)))
    inst = DEFAULT_INSTRUMENTS[symbol]
    band = inst.reference_price * Decimal(draw(st.integers(-60, 60))) / 1000
    price = (inst.reference_price + band).quantize(inst.tick_size)
    order = {
        "account_id": draw(st.sampled_from(ACCOUNTS)), "symbol": symbol,
        "side": draw(st.sampled_from(["buy", "sell"])),
        "quantity": str(inst.lot_step * draw(st.integers(1, 3000))), "price": str(price),
    }  # fmt: skip
    for name in ("strategy", "liquidity"):
        if draw(st.booleans()):
            order[name] = draw(st.sampled_from(["s1", "grid-2"]) | from_schema(ORDER_PROPS[name]))
    return order


@st.composite
def order_body(draw) -> bytes:
    order = draw(plausible_order())
    ascii_only = draw(st.booleans())
    kind = draw(st.sampled_from(["valid", "schema", "field", "field", "unknown", "missing",
                                 "deep", "bytes", "huge"]))  # fmt: skip
    if kind == "schema":  # anything the schema allows (mostly off the grid or unknown account)
        order = {name: draw(from_schema(prop)) for name, prop in ORDER_PROPS.items()}
    elif kind == "field":
        name = draw(st.sampled_from(sorted(ORDER_PROPS)))
        valid = st.just(order[name]) if name in order else from_schema(ORDER_PROPS[name])
        order[name] = draw(mangled(valid) | hostile_text | raw_numbers | wrong_types)
    elif kind == "unknown":
        order.update(draw(st.dictionaries(hostile_text, wrong_types | hostile_text, min_size=1,
                                          max_size=3)))  # fmt: skip
    elif kind == "missing":
        del order[draw(st.sampled_from(sorted(ORDER["required"])))]
    elif kind == "deep":
        depth = draw(DEPTHS)
        deep = "[" * depth + ("]" * depth if draw(st.booleans()) else "")
        return encode(order, ascii_only)[:-1] + f',"x":{deep}}}'.encode()
    elif kind == "bytes":
        return draw(st.binary(max_size=300))
    elif kind == "huge":  # around the 16 KB limit
        order["pad"] = "x" * draw(st.integers(16_000, 17_000))
    return encode(order, ascii_only)


# What h11 lets a client send in a field value: visible ASCII and obs-text, no DEL.
SENDABLE = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f"),
    min_size=1, max_size=140,
)  # fmt: skip


@st.composite
def key_headers(draw) -> list[tuple[str, bytes]]:
    """Mostly one good key, so the body gets looked at; then replays, bad keys, two, none."""
    choice = draw(st.integers(0, 19))
    if choice <= 13:
        keys = [FRESH]
    elif choice <= 15:
        keys = [draw(st.sampled_from(REUSED_KEYS))]
    elif choice == 16:
        keys = [draw(SENDABLE)]
    elif choice == 17:
        keys = [f'"{draw(st.uuids())}"']
    elif choice == 18:
        keys = [FRESH] * draw(st.integers(2, 3))
    else:
        keys = []
    return [("idempotency-key", key.encode("latin-1")) for key in keys]


@st.composite
def auth_headers(draw) -> list[tuple[str, bytes]]:
    """Mostly the test key, so the request gets further; then none, a made-up key of the
    right shape, another scheme, garbage, and two headers."""
    choice = draw(st.integers(0, 19))
    if choice <= 14:
        values = [AUTH["authorization"]]
    elif choice == 15:
        values = []
    elif choice == 16:
        values = ["Bearer spk_" + draw(st.from_regex(r"[A-Za-z0-9_-]{43}", fullmatch=True))]
    elif choice == 17:
        values = [draw(st.sampled_from(["Basic dXNlcjpwYXNz", "Bearer", "bearer  x", "Token x"]))]
    elif choice == 18:
        values = [draw(SENDABLE)]
    else:
        values = [AUTH["authorization"]] * 2
    return [("authorization", v.encode("latin-1")) for v in values]


CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
                 "text/plain", "application/csp-report", "application/reports+json"]  # fmt: skip


@st.composite
def post_order(draw) -> Call:
    headers = draw(auth_headers()) + draw(key_headers())
    if draw(st.integers(0, 9)) > 0:
        headers.append(("content-type", b"application/json"))
    else:
        headers.append(("content-type", draw(st.sampled_from(CONTENT_TYPES)).encode()))
    return Call("POST", "/orders", "/orders", headers, draw(order_body()))


@st.composite
def get_order(draw, created: list[str]) -> Call:
    choice = draw(st.integers(0, 3))
    if choice == 0 and created:
        order_id = created[draw(st.integers(0, 10_000)) % len(created)]
    elif choice <= 1:
        order_id = str(draw(st.uuids()))
    else:
        order_id = percent(draw(url_text.filter(bool) | mangled(st.uuids().map(str))))
    return Call("GET", "/orders/{order_id}", f"/orders/{order_id}", draw(auth_headers()))


@st.composite
def get_positions(draw) -> Call:
    names = st.sampled_from(["account_id", "account_id", "status", "limit", "cursor"]) | url_text
    values = (st.sampled_from([*ACCOUNTS, "open", "closed", "all", "1", "2", "1000", "1001"])
              | url_text
              | mangled(st.sampled_from(ACCOUNTS)))  # fmt: skip
    pairs = draw(st.lists(st.tuples(names, values), max_size=3))
    query = "&".join(f"{percent(n)}={percent(v)}" for n, v in pairs)
    path = "/positions" + (f"?{query}" if query else "")
    return Call("GET", "/positions", path, draw(auth_headers()))


@st.composite
def csp_report(draw) -> Call:
    directive = draw(st.sampled_from(sorted(KNOWN_DIRECTIVES)) | hostile_text | wrong_types)
    body = draw(st.sampled_from([
        {"csp-report": {"violated-directive": directive, "blocked-uri": "https://x.example"}},
        [{"type": "csp-violation", "body": {"effectiveDirective": directive}}],
        [{"type": directive, "body": directive}], {}, [], directive,
    ]))  # fmt: skip
    ctype = draw(st.sampled_from(["application/csp-report", "application/reports+json",
                                  "application/json", "text/plain"]))  # fmt: skip
    raw = encode(body, draw(st.booleans()))
    if draw(st.integers(0, 5)) == 0:
        depth = draw(DEPTHS)
        raw = ("[" * depth + "]" * depth).encode()
    return Call("POST", "/csp-report", "/csp-report", [("content-type", ctype.encode())], raw)


@st.composite
def wrong_method(draw) -> Call:
    template = draw(st.sampled_from(sorted(SCHEMA["paths"])))
    path = template.replace("{order_id}", str(uuid.uuid4()))
    method = draw(st.sampled_from(["PUT", "PATCH", "DELETE", "GET", "POST"]))
    return Call(method, template, path, draw(auth_headers()))


def calls(created: list[str]) -> st.SearchStrategy[Call]:
    return st.one_of(post_order(), post_order(), post_order(), get_order(created),
                     get_positions(), csp_report(), wrong_method())  # fmt: skip


# --- the run ------------------------------------------------------------------------------


def row_counts(conn) -> dict[str, int]:
    query = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in TABLES)
    return dict(zip(TABLES, conn.execute(query).fetchone(), strict=True))


def expected_writes(call: Call, r: httpx.Response) -> dict[str, set[int]]:
    """Rows each table may gain: only a fresh 201 or a fresh risk block writes anything."""
    none = {t: {0} for t in TABLES}
    if call.template != "/orders" or call.method != "POST" or "idempotent-replayed" in r.headers:
        return none
    if r.status_code == 201:
        return {"orders": {1}, "positions": {0, 1}, "idempotency_keys": {1}, "outbox_events": {1}}
    if r.status_code == 422 and r.json()["error"] == "risk_blocked":
        return {**none, "idempotency_keys": {1}}  # the stored answer a retry replays
    return none


def _matches(prop: dict, value) -> bool:
    if value is None:
        return "null" in prop["type"]
    if not isinstance(value, str):
        return False
    if "enum" in prop:
        return value in prop["enum"]
    return re.fullmatch(prop["pattern"], value) is not None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def order_conforms(call: Call, headers: list[tuple[str, bytes]]) -> bool:
    """Does the request keep to the document? The oracle for "bad values were accepted"."""
    keys = [v for n, v in headers if n == "idempotency-key"]
    key_pattern = SCHEMA["paths"]["/orders"]["post"]["parameters"][0]["schema"]["pattern"]
    if len(keys) != 1 or not re.fullmatch(key_pattern, keys[0].decode("latin-1").strip(" \t")):
        return False
    ctype = dict(headers).get("content-type", b"").decode().split(";")[0].strip().lower()
    if ctype != "application/json":
        return False
    try:  # the test's own reading: Python's json (the test may recurse; the app may not)
        body = json.loads(call.body or b"", parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return False
    return (
        isinstance(body, dict)
        and set(ORDER["required"]) <= set(body) <= set(ORDER_PROPS)
        and all(_matches(ORDER_PROPS[name], value) for name, value in body.items())
    )


def positions_query_conforms(call: Call) -> bool:
    pairs = parse_qsl(call.path.partition("?")[2], keep_blank_values=True)
    params = {p["name"]: p["schema"] for p in SCHEMA["paths"]["/positions"]["get"]["parameters"]}
    given_ = Counter(name for name, _ in pairs)
    required = [p["name"] for p in SCHEMA["paths"]["/positions"]["get"]["parameters"]
                if p.get("required")]  # fmt: skip
    return (
        all(given_[name] == 1 for name in required)
        and all(given_[name] <= 1 for name in params)
        and all(_matches(params[name], value) for name, value in pairs if name in params)
    )


def check(call: Call, headers, r: httpx.Response, before: dict, after: dict) -> None:
    allowed = statuses(call.template, call.method)
    assert r.status_code in allowed, (call, r.status_code, r.text[:300])
    broken = problems(call.template, call.method, r)
    assert not broken, (call, r.status_code, r.text[:300], broken)
    if call.template == "/orders" and call.method == "POST" and r.status_code == 201:
        assert order_conforms(call, headers), ("accepted against the document", call)
    if call.template == "/positions" and call.method == "GET" and r.status_code == 200:
        assert positions_query_conforms(call), ("accepted against the document", call)
    if r.status_code < 300 and SCHEMA["paths"][call.template].get(call.method.lower(), {}).get(
        "security"
    ):
        sent = [v for n, v in headers if n == "authorization"]
        assert sent == [AUTH["authorization"].encode()], ("answered without the key", call)
    assert "content-security-policy" in r.headers and r.headers["x-content-type-options"]
    assert len(r.headers["x-request-id"]) == 32, call
    if r.status_code >= 400:
        assert r.headers["content-type"] == "application/json", call
        assert r.content.isascii(), (call, r.content[:300])
        assert r.json()["error"] and r.json()["message"], call
    if r.status_code == 405:
        assert r.headers.get("allow"), call
    writes = expected_writes(call, r)
    for table in TABLES:
        assert after[table] - before[table] in writes[table], (call, r.status_code, table)


def test_fuzz_the_api_through_pgbouncer(app_server, app_conn, record_property):
    for account in ACCOUNTS:
        create_account(app_conn, account, "1000000000")
    stats: Counter[str] = Counter()
    created: list[str] = []
    started = time.monotonic()
    client = httpx.Client(base_url=app_server.url, timeout=30)

    @settings(max_examples=EXAMPLES, deadline=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example])  # fmt: skip
    @given(call=calls(created))
    def one_request(call: Call) -> None:
        before = row_counts(app_conn)
        headers = [(n, str(uuid.uuid4()).encode() if v == FRESH.encode() else v)
                   for n, v in call.headers]  # fmt: skip
        r = client.request(call.method, call.path, headers=headers, content=call.body)
        after = row_counts(app_conn)
        stats["requests"] += 1
        stats[f"{r.status_code}"] += 1
        stats["5xx"] += r.status_code >= 500
        stats["schema_violations"] += bool(problems(call.template, call.method, r))
        if r.status_code >= 400 and r.headers.get("content-type") == "application/json":
            stats[f"{r.status_code} {r.json().get('error')}"] += 1
        if r.status_code == 201 and "idempotent-replayed" not in r.headers:
            created.append(r.json()["id"])
        check(call, headers, r, before, after)

    try:
        one_request()
    finally:
        client.close()
        seconds = time.monotonic() - started
        by_status = {k: v for k, v in sorted(stats.items()) if k.isdigit()}
        errors = {k: v for k, v in sorted(stats.items()) if " " in k}
        print(f"\nfuzz: {stats['requests']} requests, {stats['5xx']} 5xx, "
              f"{stats['schema_violations']} schema violations, {seconds:.1f} s, "
              f"by status {by_status}\nfuzz errors: {errors}")  # fmt: skip
        record_property("fuzz_requests", stats["requests"])  # in the JUnit XML too
        record_property("fuzz_5xx", stats["5xx"])
        record_property("fuzz_schema_violations", stats["schema_violations"])
    assert stats["5xx"] == 0 and stats["schema_violations"] == 0
    assert stats["requests"] >= MIN_REQUESTS
    assert stats["201"] > 0 and stats["400"] > 0  # the run reached both sides
