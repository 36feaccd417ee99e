"""What the app expects of BTCTurk's public API v2, as consumer pacts.

The ticker's prices are JSON numbers on BTCTurk; the pact says so (number matchers), and
its examples are written from Decimal digits (see tests.contract.wire). Order-book levels
are decimal strings, matched as strings.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from pact import Pact, match

from app.exchanges import settings
from app.exchanges.btcturk import BtcTurkClient
from app.exchanges.errors import RateLimited, UnknownSymbol
from tests.contract.wire import body_text, decimal_string, json_number

JSON = "application/json"


def run(pact: Pact, call):
    async def go(url: str):
        async with BtcTurkClient(url) as client:
            return await call(client)

    with pact.serve(addr="127.0.0.1") as server:
        return asyncio.run(go(str(server.url)))


def envelope(data) -> dict:
    return {"data": data, "success": True, "message": None, "code": 0}


def test_ticker(btcturk_pact):
    ticker = {
        "pair": "BTCUSDT",
        "pairNormalized": "BTC_USDT",
        "timestamp": match.integer(1764403200000),
        "last": json_number("61323"),
        "high": json_number("62420"),
        "low": json_number("60748.5"),
        "bid": json_number("61376.25"),
        "ask": json_number("61464"),
        "open": json_number("61559"),
        "volume": json_number("125.87878261"),
        "average": json_number("61516.04103917"),
        "daily": json_number("-95"),
        "dailyPercent": json_number("-0.38"),
        "denominatorSymbol": "USDT",
        "numeratorSymbol": "BTC",
    }
    (
        btcturk_pact.upon_receiving("a request for the BTCUSDT ticker")
        .given("BTCUSDT is traded")
        .with_request("GET", "/api/v2/ticker")
        .with_query_parameter("pairSymbol", "BTCUSDT")
        .will_respond_with(200)
        .with_body(body_text(envelope(match.each_like(ticker))), content_type=JSON)
    )
    result = run(btcturk_pact, lambda c: c.ticker("BTCUSDT"))
    assert result.pair == "BTCUSDT"
    assert result.volume == Decimal("125.87878261")
    assert result.low == Decimal("60748.5") and result.last == Decimal("61323")


def test_order_book(btcturk_pact):
    level = [decimal_string("33245.00"), decimal_string("2.10695265")]
    (
        btcturk_pact.upon_receiving("a request for the BTCTRY order book, 2 levels")
        .given("BTCTRY has bids and asks")
        .with_request("GET", "/api/v2/orderbook")
        .with_query_parameter("pairSymbol", "BTCTRY")
        .with_query_parameter("limit", "2")
        .will_respond_with(200)
        .with_body(
            body_text(
                envelope(
                    {
                        "timestamp": json_number("1764403200000"),
                        "bids": match.each_like(level),
                        "asks": match.each_like(
                            [decimal_string("33490.00"), decimal_string("0.03681877")]
                        ),
                    }
                )
            ),
            content_type=JSON,
        )
    )
    book = run(btcturk_pact, lambda c: c.order_book("BTCTRY", 2))
    assert book.bids[0] == (Decimal("33245.00"), Decimal("2.10695265"))
    assert book.asks[0] == (Decimal("33490.00"), Decimal("0.03681877"))


def test_unknown_pair(btcturk_pact):
    (
        btcturk_pact.upon_receiving("a request for the ticker of an unknown pair")
        .given("NOPETRY is not a pair")
        .with_request("GET", "/api/v2/ticker")
        .with_query_parameter("pairSymbol", "NOPETRY")
        .will_respond_with(400)
        .with_body(
            {
                "success": False,
                "message": match.string("Pair not found."),
                "code": match.integer(0),
            },
            content_type=JSON,
        )
    )
    with pytest.raises(UnknownSymbol, match="Pair not found"):
        run(btcturk_pact, lambda c: c.ticker("NOPETRY"))


def test_rate_limited_backs_off_without_calling_again(btcturk_pact):
    # BTCTurk's 429 promises no Retry-After: the client backs off its own default, and a
    # second call inside it is refused locally (Pact fails on any request not declared).
    (
        btcturk_pact.upon_receiving("a request for the ticker while rate limited")
        .given("the request limit for this IP is exceeded")
        .with_request("GET", "/api/v2/ticker")
        .with_query_parameter("pairSymbol", "BTCUSDT")
        .will_respond_with(429)
    )

    async def twice(client):
        errors = []
        for _ in range(2):
            try:
                await client.ticker("BTCUSDT")
            except RateLimited as exc:
                errors.append(exc)
        return errors

    first, second = run(btcturk_pact, twice)
    assert first.status == 429
    assert first.retry_after == settings.BTCTURK_DEFAULT_RETRY_AFTER_SECONDS
    assert second.status is None  # refused by the client's gate: never sent
    assert 0 < second.retry_after <= first.retry_after
