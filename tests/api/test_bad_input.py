"""Every malformed request gets a clear 4xx JSON error and writes nothing (rows counted)."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from tests.api.test_orders import ORDER, counts
from tests.conftest import AUTH, create_account

NOTHING = {"orders": 0, "outbox_events": 0, "positions": 0, "idempotency_keys": 0}


def send(server, raw: bytes | str, content_type="application/json", key=None):
    return httpx.post(
        f"{server.url}/orders",
        content=raw,
        headers={**AUTH, "content-type": content_type, "idempotency-key": key or str(uuid.uuid4())},
        timeout=10,
    )


def body_with(**changes) -> str:
    order = {**ORDER, **changes}
    return json.dumps({k: v for k, v in order.items() if v is not ...})


CASES = [
    ("malformed JSON", "{not json", 400, "malformed_json"),
    ("JSON array", "[1, 2]", 400, "malformed_json"),
    ("NaN literal", '{"price": NaN}', 400, "malformed_json"),
    ("duplicate field", '{"price": "1.00", "price": "2.00"}', 400, "malformed_json"),
    ("unknown field", body_with(leverage="10"), 400, "unknown_fields"),
    ("float price", body_with(price=65000.5), 400, "money_must_be_string"),
    ("integer quantity", body_with(quantity=1), 400, "money_must_be_string"),
    ("exponent price", body_with(price="6.5e4"), 400, "invalid_decimal"),
    ("exponent as number", '{"account_id": "acct-1", "symbol": "BTCUSDT", "side": "buy", '
     '"quantity": "0.01", "price": 6.5e4}', 400, "money_must_be_string"),
    ("negative quantity", body_with(quantity="-0.01"), 400, "invalid_decimal"),
    ("zero quantity", body_with(quantity="0"), 400, "not_positive"),
    ("zero price", body_with(price="0.00"), 400, "not_positive"),
    ("price with spaces", body_with(price=" 65000.00"), 400, "invalid_decimal"),
    ("price off the tick", body_with(price="65000.005"), 400, "off_step"),
    ("quantity off the lot step", body_with(quantity="0.000015"), 400, "off_step"),
    ("unknown symbol", body_with(symbol="DOGEUSDT"), 400, "unknown_symbol"),
    ("bad side", body_with(side="hold"), 400, "invalid_field"),
    ("missing price", body_with(price=...), 400, "missing_field"),
    ("bad account id", body_with(account_id="x y"), 400, "invalid_field"),
    ("bad liquidity", body_with(liquidity="both"), 400, "invalid_field"),
    ("unknown account", body_with(account_id="nobody"), 422, "unknown_account"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "raw", "status", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_order_is_refused_and_writes_nothing(app_server, app_conn, what, raw, status, code):
    create_account(app_conn)
    r = send(app_server, raw)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"] == code
    assert r.json()["message"]  # says what was wrong
    assert counts(app_conn) == NOTHING


def test_float_message_names_the_field_and_the_fix(app_server, app_conn):
    r = send(app_server, body_with(price=65000.5))
    assert "price must be a decimal string" in r.json()["message"]
    assert r.json()["field"] == "price"


def test_off_tick_message_offers_the_nearest_valid_prices(app_server, app_conn):
    r = send(app_server, body_with(price="65000.005"))
    assert "65000.00 or 65000.01" in r.json()["message"]


def test_oversized_body_gets_413(app_server, app_conn):
    create_account(app_conn)
    raw = body_with(strategy="s")[:-1] + ', "pad": "' + "x" * 20000 + '"}'
    r = send(app_server, raw)
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    assert counts(app_conn) == NOTHING


def test_oversized_chunked_body_without_length_gets_413(app_server, app_conn):
    def chunks():
        yield b'{"pad": "'
        for _ in range(40):
            yield b"x" * 1024
        yield b'"}'

    r = httpx.post(
        f"{app_server.url}/orders",
        content=chunks(),
        headers={**AUTH, "content-type": "application/json", "idempotency-key": str(uuid.uuid4())},
    )
    assert r.status_code == 413
    assert counts(app_conn) == NOTHING


def test_wrong_content_type_gets_415(app_server, app_conn):
    create_account(app_conn)
    r = send(app_server, body_with(), content_type="text/plain")
    assert r.status_code == 415
    assert counts(app_conn) == NOTHING


def test_unknown_account_releases_the_key_for_a_retry(app_server, app_conn):
    key = str(uuid.uuid4())
    assert send(app_server, body_with(), key=key).status_code == 422
    create_account(app_conn)
    assert send(app_server, body_with(), key=key).status_code == 201


@pytest.mark.parametrize(
    ("path", "status"),
    # A fixed unknown id: pytest-xdist's workers must collect the same test names.
    [("/orders/not-a-uuid", 400), ("/orders/00000000-0000-4000-8000-000000000000", 404),
     ("/positions?status=maybe", 400)],
)  # fmt: skip
def test_bad_reads_get_clear_errors(app_server, path, status):
    r = httpx.get(f"{app_server.url}{path}", headers=AUTH)
    assert r.status_code == status and r.json()["message"]
