"""Strict parsing: floats, missing fields, HTML pages and invalid JSON are refused by name."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.exchanges import parsing
from app.exchanges.errors import MalformedResponse

ORDER = {
    "symbol": "BTCUSDT",
    "orderId": 28,
    "clientOrderId": "spk-0123456789abcdef0123456789abcdef",
    "side": "BUY",
    "type": "LIMIT",
    "status": "NEW",
    "price": "67000.01000000",
    "origQty": "0.00100000",
    "executedQty": "0.00000000",
}


def load(text: str, *, decimals: bool = False, content_type: str = "application/json"):
    return parsing.load_json("binance", text, content_type, decimals=decimals)


def test_decimal_strings_parse_exactly():
    order = parsing.parse_order("binance", ORDER)
    assert order.price == Decimal("67000.01000000")
    assert order.orig_qty == Decimal("0.001")
    assert isinstance(order.executed_qty, Decimal)


@pytest.mark.parametrize("raw", ["67000.01", "67000", "true", '["1"]', "{}"])
def test_non_string_money_is_refused_naming_the_field(raw):
    body = load('{"symbol": "BTCUSDT", "price": ' + raw + "}")
    with pytest.raises(MalformedResponse, match="'price' must be a decimal string"):
        parsing.parse_ticker_price("binance", body)


@pytest.mark.parametrize("value", ["1e5", "", " 1", "+1", "NaN", "1,5"])
def test_malformed_decimal_strings_are_refused(value):
    with pytest.raises(MalformedResponse, match="'price'"):
        parsing.parse_ticker_price("binance", {"symbol": "BTCUSDT", "price": value})


@pytest.mark.parametrize("missing", ["price", "origQty", "clientOrderId", "orderId"])
def test_missing_fields_are_named(missing):
    body = {k: v for k, v in ORDER.items() if k != missing}
    with pytest.raises(MalformedResponse, match=f"missing field '{missing}'"):
        parsing.parse_order("binance", body)


def test_null_counts_as_missing():
    with pytest.raises(MalformedResponse, match="missing field 'price'"):
        parsing.parse_ticker_price("binance", {"symbol": "BTCUSDT", "price": None})


@pytest.mark.parametrize(
    ("text", "content_type"),
    [
        ("<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "text/html"),
        ("<html><title>Cloudflare</title></html>", "application/json"),
        ('{"looks": "like json"}', "text/html; charset=utf-8"),
    ],
)
def test_html_pages_are_refused(text, content_type):
    with pytest.raises(MalformedResponse, match="HTML page"):
        load(text, content_type=content_type)


@pytest.mark.parametrize("text", ["", "{", '{"price": "1"', "nope", "{'price': '1'}"])
def test_invalid_json_is_refused(text):
    with pytest.raises(MalformedResponse, match="invalid JSON"):
        load(text)


def test_btcturk_numbers_decode_without_float():
    body = load(
        '{"pair": "BTCTRY", "timestamp": 1570024156166, "last": 47500, "bid": 47472.1,'
        ' "ask": 0.1000000000000000055511151231257827, "high": 48710, "low": 47000,'
        ' "volume": 304.41}',
        decimals=True,
    )
    ticker = parsing.parse_pair_ticker("btcturk", body)
    assert ticker.last == Decimal(47500)
    assert ticker.volume == Decimal("304.41")  # exact digits, not 304.41000000000002501
    assert ticker.ask == Decimal("0.1000000000000000055511151231257827")
    assert all(isinstance(v, Decimal) for v in (ticker.bid, ticker.high, ticker.low, ticker.volume))


def test_number_field_refuses_a_float_that_slipped_through():
    with pytest.raises(MalformedResponse, match="as a float"):
        parsing.number_field("btcturk", {"last": 47500.5}, "last")


def test_order_book_levels_must_be_string_pairs():
    book = parsing.parse_order_book(
        "btcturk",
        load(
            '{"timestamp": 1543836448605.0, "bids": [["33245.00", "2.10695265"]],'
            ' "asks": [["33490.00", "0.03681877"]]}',
            decimals=True,
        ),
    )
    assert book.timestamp == 1543836448605
    assert book.bids == ((Decimal("33245.00"), Decimal("2.10695265")),)
    with pytest.raises(MalformedResponse, match=r"asks\[0\]\.quantity"):
        parsing.parse_order_book(
            "btcturk",
            load('{"timestamp": 1, "bids": [], "asks": [["1.0", 2.5]]}', decimals=True),
        )
    with pytest.raises(MalformedResponse, match=r"bids\[0\] must be a \[price, quantity\]"):
        parsing.parse_order_book("btcturk", {"timestamp": 1, "bids": [["1"]], "asks": []})


def test_account_balances():
    account = parsing.parse_account(
        "binance",
        {
            "canTrade": True,
            "updateTime": 123456789,
            "balances": [{"asset": "BTC", "free": "4723846.89208129", "locked": "0.00000000"}],
        },
    )
    assert account.balances[0].free == Decimal("4723846.89208129")
    with pytest.raises(MalformedResponse, match=r"balances\[0\] must be an object"):
        parsing.parse_account("binance", {"canTrade": True, "updateTime": 1, "balances": ["x"]})


@given(st.decimals(allow_nan=False, allow_infinity=False, places=8, min_value=0, max_value=10**12))
def test_any_plain_decimal_string_parses_exactly(value):
    text = format(value, "f")
    assert parsing.parse_ticker_price("binance", {"symbol": "X", "price": text}).price == value


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_any_json_number_is_refused_in_a_binance_money_field(value):
    body = load('{"symbol": "X", "price": ' + json.dumps(value) + "}")
    with pytest.raises(MalformedResponse, match="'price' must be a decimal string"):
        parsing.parse_ticker_price("binance", body)
