"""What the app expects of Binance's spot REST API, as consumer pacts.

Signed requests carry a real HMAC over a real timestamp, so the pacts match `timestamp` and
`signature` by regex; `recvWindow` and the order parameters are exact. Money in responses
is matched as decimal strings, as Binance sends it.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from pact import Pact, match

from app.exchanges.binance import BinanceClient, client_order_id
from app.exchanges.credentials import Secret
from app.exchanges.errors import IpBanned, RateLimited, SignatureError, UnknownSymbol
from tests.contract.wire import (
    CLIENT_ORDER_ID,
    MILLIS,
    SIGNATURE,
    decimal_string,
)

API_KEY = "pact-example-api-key"
API_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
IDEMPOTENCY_KEY = "order-2026-11-29-0001"
CID = client_order_id(IDEMPOTENCY_KEY)
JSON = "application/json"


def run(pact: Pact, call, *, secret: str = API_SECRET):
    """Serve the pact, run `call(client)` against it, return the result.

    Leaving the `serve` block raises MismatchesError if a request did not match or an
    interaction was never exercised.
    """

    async def go(url: str):
        async with BinanceClient(url, Secret(API_KEY), Secret(secret)) as client:
            return await call(client)

    with pact.serve(addr="127.0.0.1") as server:
        return asyncio.run(go(str(server.url)))


def server_time(pact: Pact) -> None:
    (
        pact.upon_receiving("a request for the server time")
        .with_request("GET", "/api/v3/time")
        .will_respond_with(200)
        .with_body({"serverTime": match.integer(1764403200000)}, content_type=JSON)
    )


def signed(interaction, **params):
    """Exact parameters, then the three every SIGNED request carries, key header included."""
    for name, value in params.items():
        interaction = interaction.with_query_parameter(name, value)
    return (
        interaction.with_query_parameter("recvWindow", "5000")
        .with_query_parameter("timestamp", match.regex("1764403200000", regex=MILLIS))
        .with_query_parameter("signature", match.regex("0" * 64, regex=SIGNATURE))
        .with_header("X-MBX-APIKEY", match.string(API_KEY))
    )


def order_body(status: str = "NEW") -> dict:
    return {
        "symbol": "BTCUSDT",
        "orderId": match.integer(28457),
        "orderListId": -1,
        "clientOrderId": match.regex(CID, regex=CLIENT_ORDER_ID),
        "price": decimal_string("67000.10000000"),
        "origQty": decimal_string("0.00100000"),
        "executedQty": decimal_string("0.00000000"),
        "cummulativeQuoteQty": decimal_string("0.00000000"),
        "status": match.string(status),
        "timeInForce": "GTC",
        "type": "LIMIT",
        "side": "BUY",
    }


def error_body(code: int, msg: str) -> dict:
    return {"code": code, "msg": match.string(msg)}


def ticker_request(pact: Pact, description: str, state: str, symbol: str = "BTCUSDT"):
    return (
        pact.upon_receiving(description)
        .given(state)
        .with_request("GET", "/api/v3/ticker/price")
        .with_query_parameter("symbol", symbol)
    )


def test_ticker_price(binance_pact):
    (
        ticker_request(binance_pact, "a request for the BTCUSDT price", "BTCUSDT is traded")
        .will_respond_with(200)
        .with_body(
            {"symbol": "BTCUSDT", "price": decimal_string("67123.45000000")}, content_type=JSON
        )
    )
    price = run(binance_pact, lambda c: c.ticker_price("BTCUSDT"))
    assert price.price == Decimal("67123.45000000")


def test_unknown_symbol(binance_pact):
    (
        ticker_request(
            binance_pact,
            "a request for the price of an unknown symbol",
            "NOPEUSDT is not a symbol",
            symbol="NOPEUSDT",
        )
        .will_respond_with(400)
        .with_body(error_body(-1121, "Invalid symbol."), content_type=JSON)
    )
    with pytest.raises(UnknownSymbol) as failed:
        run(binance_pact, lambda c: c.ticker_price("NOPEUSDT"))
    assert failed.value.code == -1121


def test_rate_limited_with_retry_after(binance_pact):
    (
        ticker_request(
            binance_pact,
            "a request for the price while rate limited",
            "the request weight limit is exceeded",
        )
        .will_respond_with(429)
        .with_header("Retry-After", match.regex("30", regex=r"^\d+$"))
        .with_body(
            error_body(
                -1003, "Too many requests; current limit is 1200 request weight per 1 MINUTE."
            ),
            content_type=JSON,
        )
    )
    with pytest.raises(RateLimited) as limited:
        run(binance_pact, lambda c: c.ticker_price("BTCUSDT"))
    assert not isinstance(limited.value, IpBanned)
    assert limited.value.retry_after == 30


def test_ip_banned_with_retry_after(binance_pact):
    (
        ticker_request(
            binance_pact,
            "a request for the price from a banned IP",
            "the IP is banned after repeated 429s",
        )
        .will_respond_with(418)
        .with_header("Retry-After", match.regex("600", regex=r"^\d+$"))
        .with_body(
            error_body(-1003, "Way too many requests; IP banned until 1764403800000."),
            content_type=JSON,
        )
    )
    with pytest.raises(IpBanned) as banned:
        run(binance_pact, lambda c: c.ticker_price("BTCUSDT"))
    assert banned.value.retry_after == 600


def test_account(binance_pact):
    server_time(binance_pact)
    (
        signed(
            binance_pact.upon_receiving("a signed request for the account")
            .given("an account exists for the API key")
            .with_request("GET", "/api/v3/account")
        )
        .will_respond_with(200)
        .with_body(
            {
                "makerCommission": match.integer(15),
                "takerCommission": match.integer(15),
                "canTrade": match.boolean(True),
                "canWithdraw": match.boolean(True),
                "canDeposit": match.boolean(True),
                "updateTime": match.integer(123456789),
                "accountType": "SPOT",
                "balances": match.each_like(
                    {
                        "asset": match.string("BTC"),
                        "free": decimal_string("4723846.89208129"),
                        "locked": decimal_string("0.00000000"),
                    }
                ),
                "permissions": match.each_like("SPOT"),
            },
            content_type=JSON,
        )
    )
    account = run(binance_pact, lambda c: c.account())
    assert account.can_trade is True
    assert account.balances[0].free == Decimal("4723846.89208129")


def test_signature_error(binance_pact):
    server_time(binance_pact)
    (
        signed(
            binance_pact.upon_receiving("a request for the account with an invalid signature")
            .given("the signature does not match the API key's secret")
            .with_request("GET", "/api/v3/account")
        )
        .will_respond_with(400)
        .with_body(error_body(-1022, "Signature for this request is not valid."), content_type=JSON)
    )
    with pytest.raises(SignatureError) as failed:
        run(binance_pact, lambda c: c.account(), secret="a-wrong-secret")
    assert failed.value.code == -1022


def test_new_order(binance_pact):
    server_time(binance_pact)
    (
        signed(
            binance_pact.upon_receiving("a signed new LIMIT order with a client order id")
            .given("the account can buy 0.001 BTCUSDT at 67000.10")
            .with_request("POST", "/api/v3/order"),
            symbol="BTCUSDT",
            side="BUY",
            type="LIMIT",
            timeInForce="GTC",
            quantity=decimal_string("0.001"),
            price=decimal_string("67000.10"),
            newOrderRespType="RESULT",
            newClientOrderId=match.regex(CID, regex=CLIENT_ORDER_ID),
        )
        .will_respond_with(200)
        .with_body(
            {**order_body(), "transactTime": match.integer(1764403200000)}, content_type=JSON
        )
    )
    order = run(
        binance_pact,
        lambda c: c.new_order(
            "BTCUSDT",
            "BUY",
            "LIMIT",
            Decimal("0.001"),
            Decimal("67000.10"),
            idempotency_key=IDEMPOTENCY_KEY,
        ),
    )
    assert order.client_order_id == CID
    assert order.price == Decimal("67000.10000000") and order.status == "NEW"


def test_order_lookup_by_client_order_id(binance_pact):
    server_time(binance_pact)
    (
        signed(
            binance_pact.upon_receiving("a signed lookup of an order by client order id")
            .given("an order with the client order id exists", clientOrderId=CID)
            .with_request("GET", "/api/v3/order"),
            symbol="BTCUSDT",
            origClientOrderId=match.regex(CID, regex=CLIENT_ORDER_ID),
        )
        .will_respond_with(200)
        .with_body(
            {
                **order_body("FILLED"),
                "executedQty": decimal_string("0.00100000"),
                "time": match.integer(1764403200000),
                "updateTime": match.integer(1764403200000),
                "isWorking": match.boolean(True),
            },
            content_type=JSON,
        )
    )
    order = run(binance_pact, lambda c: c.get_order("BTCUSDT", CID))
    assert order is not None and order.client_order_id == CID
    assert order.executed_qty == Decimal("0.001")


def test_order_lookup_of_an_unknown_client_order_id(binance_pact):
    server_time(binance_pact)
    (
        signed(
            binance_pact.upon_receiving("a signed lookup of an unknown client order id")
            .given("no order has the client order id", clientOrderId=CID)
            .with_request("GET", "/api/v3/order"),
            symbol="BTCUSDT",
            origClientOrderId=match.regex(CID, regex=CLIENT_ORDER_ID),
        )
        .will_respond_with(400)
        .with_body(error_body(-2013, "Order does not exist."), content_type=JSON)
    )
    assert run(binance_pact, lambda c: c.get_order("BTCUSDT", CID)) is None
