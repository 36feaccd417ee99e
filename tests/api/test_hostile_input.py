"""Issue 17's cases, one regression test each, against the real app through pgBouncer.

Each hostile request gets a 4xx that says what was wrong, as ASCII JSON, and writes no row
(orders, positions, idempotency keys and outbox events are counted before and after).
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from sparkops import defaults
from tests.api.test_bad_input import NOTHING, body_with, send
from tests.api.test_orders import ORDER, counts, post
from tests.api.test_security_headers import assert_secure
from tests.conftest import AUTH, create_account

DEEP = "[" * 1000 + "]" * 1000  # 2 KB: Python's json raised RecursionError on it


def refused(r: httpx.Response, status: int, code: str) -> dict:
    """The error body, after checking status, code, a message, ASCII and the headers."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.content.isascii(), r.content[:200]
    body = r.json()
    assert body["error"] == code, body
    assert body["message"]
    assert_secure(r)
    return body


# 1. NUL in a query parameter reached PostgreSQL: psycopg.DataError, 500.
def test_nul_in_a_query_parameter_is_refused_naming_it(app_server, app_conn):
    r = httpx.get(f"{app_server.url}/positions?account_id=%00abc", headers=AUTH)
    body = refused(r, 400, "forbidden_character")
    assert body["field"] == "query parameter account_id"
    assert "NUL" in body["message"]


def test_nul_in_any_query_parameter_of_any_route_is_refused(app_server):
    for path in ("/healthz?x=a%00", f"/orders/{uuid.uuid4()}?%00=1"):
        refused(httpx.get(f"{app_server.url}{path}", headers=AUTH), 400, "forbidden_character")


@pytest.mark.parametrize(
    ("query", "field"),
    [("account_id=fuzz-1%0A", "account_id"), ("account_id=", "account_id"),
     ("account_id=%D9%A1", "account_id"), ("account_id=a&account_id=b", "account_id"),
     ("status=open%0A", "status")],
)  # fmt: skip
def test_positions_query_uses_the_vocabulary(app_server, query, field):
    r = httpx.get(f"{app_server.url}/positions?{query}", headers=AUTH)
    body = refused(r, 400, "invalid_query")
    assert body["field"] == field


# 2. and 3. JSON nested 1,000 deep: RecursionError, 500, on both JSON routes.
def test_deep_json_order_is_refused_before_parsing(app_server, app_conn):
    create_account(app_conn)
    body = refused(send(app_server, '{"account_id": ' + DEEP + "}"), 400, "json_too_deep")
    assert str(defaults.MAX_JSON_DEPTH) in body["message"]
    assert counts(app_conn) == NOTHING


def test_deep_json_csp_report_is_refused_before_parsing(app_server):
    for ctype in ("application/csp-report", "application/reports+json", "application/json"):
        r = httpx.post(f"{app_server.url}/csp-report", content=DEEP,
                       headers={"content-type": ctype})  # fmt: skip
        refused(r, 400, "json_too_deep")


def test_brackets_inside_strings_do_not_count_as_depth(app_server, app_conn):
    create_account(app_conn)
    r = send(app_server, body_with(strategy='[{"' + "[" * 50 + '\\"'))
    body = refused(r, 400, "invalid_field")  # the strategy's spelling, not the depth
    assert body["field"] == "strategy"
    assert counts(app_conn) == NOTHING


# 4. An unknown field named by a lone surrogate: UnicodeEncodeError in the error answer, 500.
def test_lone_surrogate_field_name_is_refused_without_crashing(app_server, app_conn):
    create_account(app_conn)
    body = refused(send(app_server, body_with()[:-1] + ', "\\ud800": 1}'), 400,
                   "forbidden_character")  # fmt: skip
    assert "lone surrogate (U+D800)" in body["message"]
    assert counts(app_conn) == NOTHING


@pytest.mark.parametrize(
    ("raw_value", "field", "what"),
    [('"\\udc00"', "side", "lone surrogate"), ('"acct\\u0000"', "account_id", "NUL"),
     ('["ok", "\\u0000"]', "strategy[1]", "NUL"), ('{"a\\u0000": 1}', "strategy", "NUL")],
)  # fmt: skip
def test_nul_and_surrogates_in_json_are_refused_naming_the_field(
    app_server, app_conn, raw_value, field, what
):
    create_account(app_conn)
    order = json.dumps({k: v for k, v in ORDER.items() if k != field.split("[")[0]})
    body = refused(send(app_server, order[:-1] + f', "{field.split("[")[0]}": {raw_value}}}'),
                   400, "forbidden_character")  # fmt: skip
    assert body["field"] == field and what in body["message"]
    assert counts(app_conn) == NOTHING


def test_unknown_field_names_are_echoed_only_when_they_look_like_names(app_server, app_conn):
    create_account(app_conn)
    raw = body_with(pricee="1")[:-1] + ', "pr\u00efce\u202e": 1, "' + "k" * 5000 + '": 1}'
    body = refused(send(app_server, raw), 400, "unknown_fields")
    assert "pricee" in body["message"]
    assert "2 other name(s)" in body["message"] and "kkkk" not in body["message"]
    assert counts(app_conn) == NOTHING


# 5. Non-ASCII digits passed as money (`\d`): 201, filled at 65000.
@pytest.mark.parametrize(
    "changes",
    [{"quantity": "\u0660.\u0660\u0661", "price": "\u0666\u0665\u0660\u0660\u0660"},
     {"price": "\uff16\uff15\uff10\uff10\uff10"}, {"quantity": "0.0\u0967"},
     {"price": "65000.\u00b9"}],
    ids=["arabic-indic", "full-width", "devanagari", "superscript"],
)  # fmt: skip
def test_non_ascii_digits_are_not_money(app_server, app_conn, changes):
    create_account(app_conn)
    body = refused(send(app_server, body_with(**changes)), 400, "invalid_decimal")
    assert "ASCII digits" in body["message"]
    assert counts(app_conn) == NOTHING


# 6. A trailing newline passed (`$`): 201, and a second position for "s1\n".
def test_trailing_newline_in_money_is_refused(app_server, app_conn):
    create_account(app_conn)
    refused(send(app_server, body_with(price="65000.00\n")), 400, "invalid_decimal")
    assert counts(app_conn) == NOTHING


def test_strategy_with_a_newline_does_not_open_a_second_position(app_server, app_conn):
    create_account(app_conn)
    assert post(app_server, {**ORDER, "strategy": "s1"}).status_code == 201
    before = counts(app_conn)
    body = refused(send(app_server, body_with(strategy="s1\n")), 400, "invalid_field")
    assert body["field"] == "strategy"
    assert counts(app_conn) == before
    assert app_conn.execute("SELECT count(*) FROM positions").fetchone()[0] == 1


def test_account_id_with_a_newline_is_a_400_not_an_unknown_account(app_server, app_conn):
    create_account(app_conn, "fuzz-1")
    body = refused(send(app_server, body_with(account_id="fuzz-1\n")), 400, "invalid_field")
    assert body["field"] == "account_id"
    assert counts(app_conn) == NOTHING


# 7. 405 without Allow (RFC 9110 requires it), on every route the app has.
def test_every_405_carries_allow(app_server):
    routes = app_server.server.config.app.app.app.router.routes  # Security > Ids > Metrics
    assert len(routes) >= 9
    for route in routes:
        path = route.path.replace("{order_id}", str(uuid.uuid4()))
        r = httpx.request("PATCH", f"{app_server.url}{path}")
        refused(r, 405, "method_not_allowed")
        assert r.headers["allow"] == ", ".join(sorted(route.methods)), path


# Found by the fuzzer: a JSON number passed where a string belongs (numbers were kept as a
# str subclass), so {"strategy": 0} opened a position under strategy "0".
@pytest.mark.parametrize(("field", "raw"), [("strategy", "0"), ("account_id", "12345")])
def test_a_json_number_is_not_a_string(app_server, app_conn, field, raw):
    create_account(app_conn)
    create_account(app_conn, "12345")
    order = json.dumps({k: v for k, v in ORDER.items() if k != field})
    body = refused(send(app_server, order[:-1] + f', "{field}": {raw}}}'), 400, "invalid_field")
    assert body["field"] == field
    assert counts(app_conn) == NOTHING


# Found by the fuzzer: a trailing slash got a 307 to a Location built from the Host header.
@pytest.mark.parametrize("path", ["/orders/", "/positions/", "/healthz/"])
def test_trailing_slash_is_not_redirected(app_server, path):
    r = httpx.get(f"{app_server.url}{path}", headers={"host": "evil.example"})
    refused(r, 404, "not_found")
    assert "location" not in r.headers


# 8. A well-typed CSP report with a malformed body: 415 instead of 400.
@pytest.mark.parametrize(
    ("ctype", "raw", "says"),
    [("application/reports+json", "{}", "JSON array of reports"),
     ("application/reports+json", "[]", "csp-violation"),
     ("application/csp-report", "[]", '{"csp-report"'),
     ("application/json", '"x"', "or a JSON array")],
)  # fmt: skip
def test_malformed_csp_report_is_a_400_saying_what_is_wrong(app_server, ctype, raw, says):
    r = httpx.post(f"{app_server.url}/csp-report", content=raw, headers={"content-type": ctype})
    assert says in refused(r, 400, "malformed_report")["message"]


def test_csp_report_of_another_media_type_is_a_415(app_server):
    r = httpx.post(f"{app_server.url}/csp-report", content=b"{oops",
                   headers={"content-type": "text/plain"})  # fmt: skip
    refused(r, 415, "unsupported_media_type")


# 9. A replayed 201 had no Location; two Idempotency-Key headers were reduced to the first.
def test_replayed_201_carries_the_same_location(app_server, app_conn):
    create_account(app_conn)
    key = str(uuid.uuid4())
    first, second = post(app_server, ORDER, key), post(app_server, ORDER, key)
    assert first.status_code == second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["location"] == first.headers["location"]
    assert first.headers["location"] == f"/orders/{first.json()['id']}"


def test_two_idempotency_keys_are_refused(app_server, app_conn):
    create_account(app_conn)
    headers = [
        ("content-type", "application/json"),
        *AUTH.items(),
        ("idempotency-key", str(uuid.uuid4())),
        ("idempotency-key", str(uuid.uuid4())),
    ]
    r = httpx.post(f"{app_server.url}/orders", content=json.dumps(ORDER), headers=headers)
    body = refused(r, 400, "idempotency_key_repeated")
    assert "one Idempotency-Key" in body["message"]
    assert counts(app_conn) == NOTHING


# Found on the way: the same vocabulary for keys and ids.
@pytest.mark.parametrize(
    "key",
    ['"abcdefgh', 'abcdefgh"', "abc\u00e9defgh"],
    ids=["open-quote", "close-quote", "latin-1"],
)
def test_malformed_keys_are_refused(app_server, app_conn, key):
    create_account(app_conn)
    r = httpx.post(f"{app_server.url}/orders", content=json.dumps(ORDER).encode(),
                   headers={**AUTH, "content-type": "application/json",
                            "idempotency-key": key.encode("latin-1")})  # fmt: skip
    refused(r, 400, "idempotency_key_malformed")
    assert counts(app_conn) == NOTHING


@pytest.mark.parametrize(
    "order_id",
    ["\u0660" * 32, "{" + str(uuid.uuid4()) + "}", uuid.uuid4().hex, f"urn:uuid:{uuid.uuid4()}"],
    ids=["arabic-indic", "braces", "no-dashes", "urn"],
)
def test_order_ids_are_plain_uuids(app_server, order_id):
    refused(httpx.get(f"{app_server.url}/orders/{order_id}", headers=AUTH), 400, "invalid_id")
