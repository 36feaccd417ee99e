"""BTCTurk client logic against httpx.MockTransport: envelopes, Decimal numbers, errors."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import pytest

from app.exchanges import settings
from app.exchanges.btcturk import BtcTurkClient
from app.exchanges.errors import (
    ExchangeError,
    ExchangeUnavailable,
    MalformedResponse,
    RateLimited,
    UnknownSymbol,
)

TICKER_TEXT = (
    '{"data":[{"pair":"BTCUSDT","pairNormalized":"BTC_USDT","timestamp":1635656477962,'
    '"last":61323,"high":62420,"low":60748,"bid":61376.5,"ask":61464.25,"open":61559,'
    '"volume":125.87878261,"average":61516.04103917,"daily":-95,"dailyPercent":-0.38,'
    '"denominatorSymbol":"USDT","numeratorSymbol":"BTC","order":2001}],'
    '"success":true,"message":null,"code":0}'
)
BOOK_TEXT = (
    '{"success":true,"message":null,"code":0,"data":{"timestamp":1543836448605.0,'
    '"bids":[["33245.00","2.10695265"],["33209.00","0.001"]],'
    '"asks":[["33490.00","0.03681877"]]}}'
)


def client_for(*responses: httpx.Response, seen: list | None = None) -> BtcTurkClient:
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return queue.pop(0)

    return BtcTurkClient("https://btcturk.test", transport=httpx.MockTransport(handler))


def json_response(text: str, status: int = 200, **kwargs) -> httpx.Response:
    return httpx.Response(status, text=text, headers={"content-type": "application/json"}, **kwargs)


def test_ticker_numbers_become_exact_decimals():
    seen: list[httpx.Request] = []
    ticker = asyncio.run(client_for(json_response(TICKER_TEXT), seen=seen).ticker("BTC_USDT"))
    assert seen[0].url.path == "/api/v2/ticker"
    assert seen[0].url.params["pairSymbol"] == "BTC_USDT"
    assert ticker.pair == "BTCUSDT"
    assert ticker.last == Decimal("61323")
    assert ticker.bid == Decimal("61376.5") and ticker.ask == Decimal("61464.25")
    assert ticker.volume == Decimal("125.87878261")
    assert ticker.timestamp == 1635656477962


def test_order_book_levels_are_decimals():
    seen: list[httpx.Request] = []
    book = asyncio.run(client_for(json_response(BOOK_TEXT), seen=seen).order_book("BTCTRY", 2))
    assert dict(seen[0].url.params) == {"pairSymbol": "BTCTRY", "limit": "2"}
    assert book.bids[0] == (Decimal("33245.00"), Decimal("2.10695265"))
    assert book.asks == ((Decimal("33490.00"), Decimal("0.03681877")),)
    assert book.timestamp == 1543836448605


def test_unknown_pair_is_unknown_symbol():
    body = '{"data":null,"success":false,"message":"Pair not found.","code":1}'
    with pytest.raises(UnknownSymbol, match="Pair not found"):
        asyncio.run(client_for(json_response(body, 400)).ticker("NOPETRY"))


def test_empty_ticker_list_is_unknown_symbol():
    body = '{"data":[],"success":true,"message":null,"code":0}'
    with pytest.raises(UnknownSymbol):
        asyncio.run(client_for(json_response(body)).ticker("NOPETRY"))


@pytest.mark.parametrize(
    ("text", "status", "error", "message"),
    [
        ('{"data":[{"pair":"BTCUSDT"}],"success":true}', 200, MalformedResponse, "missing"),
        ('{"data":[{"pair":"ETHUSDT"}],"success":true}', 200, MalformedResponse, "no entry"),
        ('{"data":{},"success":true}', 200, MalformedResponse, "must be a list"),
        ('{"data":[]}', 200, MalformedResponse, "envelope"),
        ('{"success":false,"message":"maintenance","code":5}', 200, ExchangeError, "mainten"),
        ("<html>error</html>", 200, MalformedResponse, "HTML"),
        ("{oops", 200, MalformedResponse, "invalid JSON"),
        ('{"message":"x"}', 503, ExchangeUnavailable, "server error"),
    ],
)
def test_bad_ticker_responses_are_typed(text, status, error, message):
    with pytest.raises(error, match=message):
        asyncio.run(client_for(json_response(text, status)).ticker("BTCUSDT"))


def test_order_book_refuses_numbers_in_levels():
    text = BOOK_TEXT.replace('"0.001"', "0.001")
    with pytest.raises(MalformedResponse, match=r"bids\[1\]\.quantity"):
        asyncio.run(client_for(json_response(text)).order_book("BTCTRY"))


def test_429_is_rate_limited():
    response = json_response('{"success":false}', 429, extensions={})
    response.headers["Retry-After"] = "2"
    client = client_for(response)
    with pytest.raises(RateLimited) as limited:
        asyncio.run(client.ticker("BTCUSDT"))
    assert limited.value.retry_after == 2
    with pytest.raises(RateLimited):
        asyncio.run(client.ticker("BTCUSDT"))  # the queue is empty: no request was sent


@pytest.mark.parametrize(
    ("pair", "limit", "error"),
    [
        ("btc try", 10, ValueError),
        ("BTCTRY", 0, ValueError),
        ("BTCTRY", 1001, ValueError),
        ("BTCTRY", "5", TypeError),
    ],
)
def test_bad_input_is_refused_before_sending(pair, limit, error):
    seen: list[httpx.Request] = []
    with pytest.raises(error):
        asyncio.run(client_for(seen=seen).order_book(pair, limit))
    assert seen == []


def test_repr_names_the_exchange_only():
    assert repr(BtcTurkClient()) == "BtcTurkClient(base_url='https://api.btcturk.com')"


def test_429_without_retry_after_backs_off_briefly():
    client = client_for(json_response('{"success":false,"message":"slow down","code":0}', 429))
    with pytest.raises(RateLimited) as limited:
        asyncio.run(client.ticker("BTCUSDT"))
    assert limited.value.retry_after == settings.BTCTURK_DEFAULT_RETRY_AFTER_SECONDS
