import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app import csp_reports
from app.config import ConfigError, Settings
from app.instruments import DEFAULT_INSTRUMENTS
from app.validation import (
    RequestError,
    format_decimal,
    parse_idempotency_key,
    parse_order,
)


def order(**changes) -> bytes:
    base = {"account_id": "a1", "symbol": "BTCUSDT", "side": "sell",
            "quantity": "0.5", "price": "64000.10", "strategy": "grid-1"}  # fmt: skip
    base.update(changes)
    return json.dumps(base).encode()


def test_valid_order_parses_to_decimals():
    parsed = parse_order(order(), DEFAULT_INSTRUMENTS)
    assert parsed.price == Decimal("64000.10") and isinstance(parsed.quantity, Decimal)
    assert parsed.liquidity == "taker" and parsed.strategy == "grid-1"


def test_fingerprint_ignores_spelling_of_the_same_amount():
    a = parse_order(order(quantity="0.5"), DEFAULT_INSTRUMENTS).fingerprint_fields()
    b = parse_order(order(quantity="0.50000"), DEFAULT_INSTRUMENTS).fingerprint_fields()
    assert a == b


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_any_json_number_for_money_is_refused(value):
    raw = order().replace(b'"64000.10"', json.dumps(value).encode())
    with pytest.raises(RequestError) as info:
        parse_order(raw, DEFAULT_INSTRUMENTS)
    assert info.value.status == 400


@given(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1e12"), places=2))
def test_formatting_round_trips_without_exponent(value):
    text = format_decimal(value)
    assert "E" not in text and "e" not in text
    assert Decimal(text) == value


@pytest.mark.parametrize(
    ("header", "key"),
    [("abcdefgh", "abcdefgh"), ('"8e03978e-40d5-43e8"', "8e03978e-40d5-43e8"),
     ("  spaced-key-1  ", "spaced-key-1")],
)  # fmt: skip
def test_idempotency_key_forms(header, key):
    assert parse_idempotency_key([header]) == key


def test_csp_unknown_directive_is_bucketed_as_other():
    body = b'{"csp-report": {"violated-directive": "x-made-up"}}'
    assert csp_reports.parse("application/csp-report", body) == ["other"]


def test_settings_name_the_bad_variable():
    with pytest.raises(ConfigError, match="SPARK_DATABASE_URL"):
        Settings.from_env({})
    with pytest.raises(ConfigError, match="SPARK_RISK_MAX_NOTIONAL"):
        Settings.from_env({"SPARK_DATABASE_URL": "x", "SPARK_RISK_MAX_NOTIONAL": "lots"})
    with pytest.raises(ConfigError, match="unknown symbol"):
        Settings.from_env({"SPARK_DATABASE_URL": "x", "SPARK_REFERENCE_PRICES": "DOGE=1"})
    s = Settings.from_env({"SPARK_DATABASE_URL": "x", "SPARK_REFERENCE_PRICES": "BTCUSDT=70000"})
    assert s.instruments["BTCUSDT"].reference_price == Decimal("70000")


def test_formatting_keeps_all_digits_of_wide_values():
    value = Decimal("12345678901234567890.123456789012345678")
    assert format_decimal(value) == "12345678901234567890.123456789012345678"
    assert format_decimal(Decimal("1.500000000000000000")) == "1.5"
    assert format_decimal(Decimal("0E-18")) == "0"
