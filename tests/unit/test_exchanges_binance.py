"""Binance client logic against an in-process fake exchange (httpx.MockTransport).

The fake checks every signature with the real secret, keeps orders by client order id like
Binance (a duplicate id among open orders is refused with -2010), and can be scripted to
fail a placement before or after it lands. That is what "never placed twice" is tested on.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from urllib.parse import parse_qsl

import httpx
import pytest
from prometheus_client import REGISTRY

from app.exchanges.base import ExchangeHttp
from app.exchanges.binance import BinanceClient, client_order_id, sign
from app.exchanges.circuit import CircuitBreaker
from app.exchanges.credentials import Secret
from app.exchanges.errors import (
    CircuitOpen,
    ExchangeError,
    ExchangeUnavailable,
    IpBanned,
    MalformedResponse,
    OrderStatusUnknown,
    RateLimited,
    SignatureError,
    UnknownSymbol,
)
from sparkops import metric_names as names

API_KEY = "fake-api-key-abcdef"
API_SECRET = "fake-secret-0123456789"
START = 1_700_000_040.0
SERVER_AHEAD_MS = 1500  # the fake exchange's clock runs 1.5 s ahead of ours


class Clock:
    def __init__(self) -> None:
        self.now = START
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def reply(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


class FakeBinance:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.orders: dict[str, dict] = {}
        self.requests: list[httpx.Request] = []
        self.post_script: list[str] = []  # per POST: ok, 500, place_then_500, timeout, ...
        self.lookup_script: list[str] = []  # per GET /order: ok, 500, hide
        self.account_script: list[str] = []  # per GET /account: ok, -1021
        self.ticker_replies: list[httpx.Response] = []

    def placed(self) -> int:
        return len(self.orders)

    def posts(self) -> int:
        return sum(1 for r in self.requests if r.method == "POST")

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/api/v3/time":
            return reply(200, {"serverTime": round(self.clock() * 1000) + SERVER_AHEAD_MS})
        if path == "/api/v3/ticker/price":
            if self.ticker_replies:
                return self.ticker_replies.pop(0)
            return reply(200, {"symbol": request.url.params["symbol"], "price": "67000.10"})
        params = self._verified(request)
        if isinstance(params, httpx.Response):
            return params
        if path == "/api/v3/account":
            if self.account_script and self.account_script.pop(0) == "-1021":
                return reply(400, {"code": -1021, "msg": "Timestamp outside of recvWindow."})
            return reply(
                200,
                {
                    "canTrade": True,
                    "updateTime": 1,
                    "balances": [{"asset": "BTC", "free": "1.5", "locked": "0"}],
                },
            )
        if path == "/api/v3/order" and request.method == "POST":
            return self._place(request, params)
        if path == "/api/v3/order":
            action = self.lookup_script.pop(0) if self.lookup_script else "ok"
            if action == "500":
                return reply(500, {"code": -1000, "msg": "An unknown error occured."})
            order = self.orders.get(params["origClientOrderId"])
            if order is None or action == "hide":
                return reply(400, {"code": -2013, "msg": "Order does not exist."})
            return reply(200, order)
        return reply(404, {"code": -1, "msg": "no such path"})

    def _verified(self, request: httpx.Request) -> dict[str, str] | httpx.Response:
        query = request.url.query.decode()
        unsigned, _, signature = query.rpartition("&signature=")
        if request.headers.get("X-MBX-APIKEY") != API_KEY:
            return reply(401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions."})
        if signature != sign(API_SECRET, unsigned):
            return reply(400, {"code": -1022, "msg": "Signature for this request is not valid."})
        params = dict(parse_qsl(unsigned))
        server_now = round(self.clock() * 1000) + SERVER_AHEAD_MS
        if abs(server_now - int(params["timestamp"])) > int(params["recvWindow"]):
            return reply(400, {"code": -1021, "msg": "Timestamp outside of recvWindow."})
        return params

    def _place(self, request: httpx.Request, params: dict[str, str]) -> httpx.Response:
        action = self.post_script.pop(0) if self.post_script else "ok"
        if action == "500":
            return reply(503, {"code": -1007, "msg": "Timeout waiting for response."})
        if action == "timeout":
            raise httpx.ReadTimeout("read timed out", request=request)
        cid = params["newClientOrderId"]
        if cid in self.orders:
            return reply(400, {"code": -2010, "msg": "Duplicate order sent."})
        self.orders[cid] = {
            "symbol": params["symbol"],
            "orderId": len(self.orders) + 1,
            "clientOrderId": cid,
            "side": params["side"],
            "type": params["type"],
            "status": "NEW",
            "price": params.get("price", "0.00000000"),
            "origQty": params["quantity"],
            "executedQty": "0.00000000",
        }
        if action == "place_then_500":
            return reply(500, {"code": -1000, "msg": "An unknown error occured."})
        if action == "place_then_timeout":
            raise httpx.ReadTimeout("read timed out", request=request)
        return reply(200, self.orders[cid])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock) -> FakeBinance:
    return FakeBinance(clock)


def make_client(fake: FakeBinance, clock: Clock, **kwargs) -> BinanceClient:
    kwargs.setdefault(
        "breaker", CircuitBreaker("binance", failure_threshold=3, cool_down=10, clock=clock)
    )
    return BinanceClient(
        "https://binance.test",
        Secret(API_KEY),
        Secret(API_SECRET),
        transport=httpx.MockTransport(fake.handle),
        clock=clock,
        sleep=clock.sleep,
        **kwargs,
    )


def run(coro):
    return asyncio.run(coro)


def place(client: BinanceClient, key: str = "idem-1"):
    return client.new_order(
        "BTCUSDT", "BUY", "LIMIT", Decimal("0.001"), Decimal("67000.10"), idempotency_key=key
    )


# --- reads, signing, time offset ---------------------------------------------------------
def test_ticker_price(fake, clock):
    price = run(make_client(fake, clock).ticker_price("BTCUSDT"))
    assert price.price == Decimal("67000.10")
    assert fake.requests[0].url.params["symbol"] == "BTCUSDT"


def test_account_is_signed_with_key_header_and_server_offset(fake, clock):
    account = run(make_client(fake, clock).account())
    assert account.balances[0].free == Decimal("1.5")
    signed = fake.requests[-1]
    params = dict(parse_qsl(signed.url.query.decode()))
    assert params["recvWindow"] == "5000"
    assert int(params["timestamp"]) == round(START * 1000) + SERVER_AHEAD_MS
    assert [r.url.path for r in fake.requests] == ["/api/v3/time", "/api/v3/account"]


def test_timestamp_error_resyncs_and_retries_once(fake, clock):
    client = make_client(fake, clock)
    run(client.sync_time())
    fake.account_script = ["-1021"]
    run(client.account())
    paths = [r.url.path for r in fake.requests]
    assert paths == ["/api/v3/time", "/api/v3/account", "/api/v3/time", "/api/v3/account"]
    fake.account_script = ["-1021", "-1021"]
    with pytest.raises(ExchangeError) as failed:
        run(client.account())
    assert failed.value.code == -1021


def test_wrong_secret_is_a_signature_error_that_does_not_leak_secrets(fake, clock):
    client = BinanceClient(
        "https://binance.test",
        Secret(API_KEY),
        Secret("not-the-secret-42"),
        transport=httpx.MockTransport(fake.handle),
        clock=clock,
    )
    with pytest.raises(SignatureError) as failed:
        run(client.account())
    assert failed.value.code == -1022
    assert "not-the-secret-42" not in str(failed.value) and API_KEY not in str(failed.value)


def test_signed_call_without_keys_says_what_to_set(fake, clock):
    client = BinanceClient("https://binance.test", transport=httpx.MockTransport(fake.handle))
    with pytest.raises(ValueError, match="SPARK_BINANCE_API_KEY"):
        run(client.account())
    assert fake.requests == []


def test_unknown_symbol(fake, clock):
    fake.ticker_replies = [reply(400, {"code": -1121, "msg": "Invalid symbol."})]
    with pytest.raises(UnknownSymbol):
        run(make_client(fake, clock).ticker_price("NOPEUSDT"))


def test_bad_symbol_is_refused_before_sending(fake, clock):
    with pytest.raises(ValueError, match="upper-case"):
        run(make_client(fake, clock).ticker_price("btc&usdt"))
    assert fake.requests == []


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(200, text="<html>gateway</html>"), MalformedResponse),
        (httpx.Response(200, text="{not json"), MalformedResponse),
        (reply(200, {"symbol": "BTCUSDT", "price": 67000.1}), MalformedResponse),
        (reply(200, {"symbol": "BTCUSDT"}), MalformedResponse),
        (httpx.Response(502, text="<html>bad gateway</html>"), ExchangeUnavailable),
        (reply(403, {"message": "WAF"}), MalformedResponse),
    ],
)
def test_bad_responses_are_typed_errors(fake, clock, response, error):
    fake.ticker_replies = [response]
    with pytest.raises(error):
        run(make_client(fake, clock).ticker_price("BTCUSDT"))


def test_timeouts_and_connection_errors_are_unavailable(clock):
    def handler(request):
        raise httpx.ConnectTimeout("connect timed out", request=request)

    client = BinanceClient("https://binance.test", transport=httpx.MockTransport(handler))
    with pytest.raises(ExchangeUnavailable, match="timed out"):
        run(client.ticker_price("BTCUSDT"))


# --- rate limits -------------------------------------------------------------------------
def test_429_refuses_further_calls_without_the_network_until_retry_after(fake, clock):
    client = make_client(fake, clock)
    fake.ticker_replies = [
        reply(429, {"code": -1003, "msg": "Too many requests."}, {"Retry-After": "30"})
    ]
    with pytest.raises(RateLimited) as limited:
        run(client.ticker_price("BTCUSDT"))
    assert limited.value.retry_after == 30 and limited.value.status == 429
    sent = len(fake.requests)
    clock.now += 20
    with pytest.raises(RateLimited):
        run(client.ticker_price("BTCUSDT"))
    assert len(fake.requests) == sent  # refused locally
    clock.now += 10
    run(client.ticker_price("BTCUSDT"))
    assert len(fake.requests) == sent + 1


def test_418_is_an_ip_ban(fake, clock):
    client = make_client(fake, clock)
    before = REGISTRY.get_sample_value(
        names.EXCHANGE_RATE_LIMITED, {"exchange": "binance", "status": "418"}
    )
    fake.ticker_replies = [reply(418, {"code": -1003, "msg": "IP banned."}, {"Retry-After": "600"})]
    with pytest.raises(IpBanned) as banned:
        run(client.ticker_price("BTCUSDT"))
    assert banned.value.retry_after == 600
    with pytest.raises(IpBanned):
        run(client.account())
    after = REGISTRY.get_sample_value(
        names.EXCHANGE_RATE_LIMITED, {"exchange": "binance", "status": "418"}
    )
    assert after == before + 1
    # The ban opens the breaker for its length: the exchange is unusable, not slow.
    assert client.breaker.state.name == "OPEN"
    clock.now += 599
    assert client.breaker.state.name == "OPEN"
    clock.now += 2
    assert client.breaker.state.name == "HALF_OPEN"


def test_a_429_does_not_open_the_breaker(fake, clock):
    client = make_client(fake, clock)
    fake.ticker_replies = [reply(429, {"code": -1003, "msg": "Too many."}, {"Retry-After": "5"})]
    with pytest.raises(RateLimited):
        run(client.ticker_price("BTCUSDT"))
    assert client.breaker.state.name == "CLOSED"  # it answered; the rate gate waits


def test_used_weight_near_the_limit_slows_the_next_request(fake, clock):
    client = make_client(fake, clock)
    clock.now = START + 30  # 30 s left in the minute window
    fake.ticker_replies = [
        httpx.Response(
            200,
            json={"symbol": "BTCUSDT", "price": "1.0"},
            headers={"X-MBX-USED-WEIGHT-1M": "1140"},  # 3/4 of the way from 960 to 1200
        )
    ]
    run(client.ticker_price("BTCUSDT"))
    assert clock.slept == []
    run(client.ticker_price("BTCUSDT"))
    assert clock.slept == [pytest.approx(22.5)]


# --- circuit breaker ---------------------------------------------------------------------
def test_breaker_opens_after_failures_and_recovers(fake, clock):
    client = make_client(fake, clock)
    fake.ticker_replies = [reply(500, {"code": -1000, "msg": "err"}) for _ in range(3)]
    for _ in range(3):
        with pytest.raises(ExchangeUnavailable):
            run(client.ticker_price("BTCUSDT"))
    sent = len(fake.requests)
    with pytest.raises(CircuitOpen):
        run(client.ticker_price("BTCUSDT"))
    assert len(fake.requests) == sent
    state = {"exchange": "binance"}
    assert REGISTRY.get_sample_value(names.EXCHANGE_CIRCUIT_STATE, state) == 2
    clock.now += 10
    run(client.ticker_price("BTCUSDT"))  # the half-open trial succeeds
    assert REGISTRY.get_sample_value(names.EXCHANGE_CIRCUIT_STATE, state) == 0


def test_exchange_errors_do_not_trip_the_breaker(fake, clock):
    client = make_client(fake, clock)
    fake.ticker_replies = [reply(400, {"code": -1121, "msg": "Invalid symbol."})] * 5
    for _ in range(5):
        with pytest.raises(UnknownSymbol):
            run(client.ticker_price("NOPEUSDT"))
    run(client.ticker_price("BTCUSDT"))


# --- order placement: never twice --------------------------------------------------------
def test_order_placed_once(fake, clock):
    order = run(place(make_client(fake, clock)))
    assert order.client_order_id == client_order_id("idem-1")
    assert order.price == Decimal("67000.10") and order.orig_qty == Decimal("0.001")
    params = dict(parse_qsl(fake.requests[-1].url.query.decode()))
    assert params["newClientOrderId"] == client_order_id("idem-1")
    assert params["quantity"] == "0.001" and params["price"] == "67000.10"
    assert fake.placed() == 1


def test_repeated_call_with_the_same_key_returns_the_same_order(fake, clock):
    client = make_client(fake, clock)
    first = run(place(client))
    second = run(place(client))
    assert second == first and fake.placed() == 1


@pytest.mark.parametrize("failure", ["place_then_500", "place_then_timeout"])
def test_landed_but_unanswered_order_is_found_not_replaced(fake, clock, failure):
    fake.post_script = [failure]
    order = run(place(make_client(fake, clock)))
    assert order.client_order_id == client_order_id("idem-1")
    assert fake.posts() == 1 and fake.placed() == 1
    assert clock.slept == [pytest.approx(5.0)]  # waited out the recvWindow before looking


@pytest.mark.parametrize("failure", ["500", "timeout"])
def test_order_that_did_not_land_is_placed_again_once(fake, clock, failure):
    fake.post_script = [failure]
    order = run(place(make_client(fake, clock)))
    assert order.client_order_id == client_order_id("idem-1")
    assert fake.posts() == 2 and fake.placed() == 1


def test_unknown_twice_raises_order_status_unknown(fake, clock):
    fake.post_script = ["500", "500"]
    client = make_client(fake, clock, breaker=CircuitBreaker("binance", clock=clock))
    with pytest.raises(OrderStatusUnknown) as unknown:
        run(place(client))
    assert unknown.value.client_order_id == client_order_id("idem-1")
    assert fake.posts() == 2 and fake.placed() == 0


def test_second_attempt_landing_is_found_by_the_last_lookup(fake, clock):
    fake.post_script = ["500", "place_then_500"]
    run(place(make_client(fake, clock, breaker=CircuitBreaker("binance", clock=clock))))
    assert fake.posts() == 2 and fake.placed() == 1


def test_failed_lookup_never_places_blindly(fake, clock):
    fake.post_script = ["place_then_500"]
    fake.lookup_script = ["500"]
    with pytest.raises(OrderStatusUnknown, match="lookup failed"):
        run(place(make_client(fake, clock)))
    assert fake.posts() == 1 and fake.placed() == 1


def test_late_landing_is_caught_by_the_exchange_duplicate_check(fake, clock):
    # The lookup misses an order that did land (it showed up late): the retry is refused
    # as a duplicate by the exchange, and the client returns the order it finds then.
    fake.post_script = ["place_then_timeout"]
    fake.lookup_script = ["hide"]
    order = run(place(make_client(fake, clock)))
    assert order.client_order_id == client_order_id("idem-1")
    assert fake.posts() == 2 and fake.placed() == 1


def test_plain_rejection_is_raised_not_retried(fake, clock):
    def handler(request):
        if request.url.path == "/api/v3/time":
            return reply(200, {"serverTime": round(clock() * 1000)})
        body = {"code": -2010, "msg": "Account has insufficient balance for requested action."}
        return reply(400, body)

    client = BinanceClient(
        "https://binance.test",
        Secret(API_KEY),
        Secret(API_SECRET),
        transport=httpx.MockTransport(handler),
        clock=clock,
        sleep=clock.sleep,
    )
    with pytest.raises(ExchangeError, match="insufficient balance"):
        run(place(client))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"side": "HOLD"}, "side"),
        ({"type": "STOP"}, "type"),
        ({"price": None}, "needs a price"),
        ({"quantity": 0.001}, "never a float"),
        ({"quantity": Decimal("-1")}, "positive"),
    ],
)
def test_bad_order_input_is_refused_before_sending(fake, clock, kwargs, message):
    args = {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "LIMIT",
        "quantity": Decimal("0.001"),
        "price": Decimal("1"),
        **kwargs,
    }
    with pytest.raises((ValueError, TypeError), match=message):
        run(make_client(fake, clock).new_order(idempotency_key="k", **args))
    assert fake.requests == []


def test_metrics_count_outcomes(fake, clock):
    labels = {"exchange": "binance", "endpoint": "ticker_price", "outcome": "ok"}
    before = REGISTRY.get_sample_value(names.EXCHANGE_REQUESTS, labels)
    run(make_client(fake, clock).ticker_price("BTCUSDT"))
    assert REGISTRY.get_sample_value(names.EXCHANGE_REQUESTS, labels) == before + 1


def test_request_bodies_are_never_json_floats(fake, clock):
    run(place(make_client(fake, clock)))
    post = next(r for r in fake.requests if r.method == "POST")
    assert post.content == b""  # everything signed travels in the query string
    assert json.dumps(dict(parse_qsl(post.url.query.decode()))).count('"0.001"') == 1


def test_half_open_lets_exactly_one_concurrent_call_through(clock):
    sent: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        await asyncio.sleep(0)  # let the other callers reach the breaker meanwhile
        return reply(200, {"symbol": "BTCUSDT", "price": "1.00"})

    breaker = CircuitBreaker("binance", failure_threshold=1, cool_down=10, clock=clock)
    breaker.before_call()
    breaker.record_failure()
    clock.now += 10
    client = BinanceClient(
        "https://binance.test", breaker=breaker, transport=httpx.MockTransport(handler)
    )

    async def three_at_once():
        return await asyncio.gather(
            *(client.ticker_price("BTCUSDT") for _ in range(3)), return_exceptions=True
        )

    results = run(three_at_once())
    assert len(sent) == 1
    assert sum(isinstance(r, CircuitOpen) for r in results) == 2
    assert breaker.state.name == "CLOSED"


def test_unforeseen_parse_failure_is_malformed_and_frees_the_breaker(fake, clock):
    breaker = CircuitBreaker("binance", failure_threshold=1, cool_down=1, clock=clock)
    http = ExchangeHttp(
        "binance",
        "https://binance.test",
        timeout=1,
        breaker=breaker,
        gate=None,
        error_mapper=lambda status, body: ExchangeError("binance", "x"),
        decimals=False,
        transport=httpx.MockTransport(fake.handle),
    )

    def broken_parser(body):
        raise KeyError("surprise")

    with pytest.raises(MalformedResponse, match="unparseable"):
        run(http.call("ticker_price", "GET", "/api/v3/ticker/price?symbol=X", broken_parser))
    clock.now += 1
    assert run(http.call("ticker_price", "GET", "/api/v3/ticker/price?symbol=X", dict)) == {
        "symbol": "X",
        "price": "67000.10",
    }
