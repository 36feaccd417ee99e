"""Exchange faults (issue 13, scenarios 3 and 6): the real Binance client against a stand-in
Binance (chaos.fake_binance) behind the fault proxy.

3. Rate limiting: after a 429 with Retry-After the client sends nothing until it has passed,
   so it is never banned; a 418 is honoured the same way; neither opens the breaker (the
   exchange answered: back-off is the rate gate's business, app.exchanges.base); both are
   counted. An order refused with 429 is not placed; retried with its idempotency key after
   the back-off it is placed once, and a repeat returns the same order.
6. Circuit breaker: consecutive transport failures open it (gauge 2) and calls are refused
   without touching the network; after the cool-down it is half-open (gauge 1), a failed
   trial opens it again, a successful one closes it (gauge 0).
Plus: a black-holed exchange fails within the read timeout, and an order whose answer is
lost on the way back is settled by lookup and placed once, not twice.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY

from app.exchanges.binance import BinanceClient, client_order_id
from app.exchanges.circuit import CircuitBreaker, State
from app.exchanges.credentials import Secret
from app.exchanges.errors import CircuitOpen, ExchangeUnavailable, IpBanned, RateLimited
from chaos.api import ChaosServer
from chaos.client import Toxiproxy
from chaos.exchange_run import rate_limits_and_breaker
from chaos.fake_binance import FakeBinance
from chaos.report import render
from sparkops import metric_names

pytestmark = pytest.mark.chaos

TIMEOUT_S = 1.0
THRESHOLD = 3
COOL_DOWN_S = 1.0


@pytest.fixture(scope="module")
def toxiproxy():
    with ChaosServer() as server:
        client = Toxiproxy(server.url)
        yield client
        client.close()


@pytest.fixture
def binance(toxiproxy):
    with FakeBinance() as fake:
        proxy = toxiproxy.create("binance", f"{fake.host}:{fake.port}")
        try:
            yield fake, proxy
        finally:
            proxy.delete()


def client_for(proxy) -> BinanceClient:
    return BinanceClient(
        f"http://{proxy.listen}",
        api_key=Secret("key"),
        api_secret=Secret("secret"),
        timeout=TIMEOUT_S,
        recv_window_ms=1000,
        breaker=CircuitBreaker("binance", failure_threshold=THRESHOLD, cool_down=COOL_DOWN_S),
    )


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, {"exchange": "binance", **labels}) or 0.0


async def until_accepted(call, seconds: float):
    """Call every 50 ms until the client's gate lets a call through; (result, refusals)."""
    refused = 0
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await call(), refused
        except (RateLimited, CircuitOpen):
            refused += 1
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def half_open(breaker: CircuitBreaker) -> None:
    """Poll until the cool-down has turned the open circuit half-open (bounded)."""
    deadline = time.monotonic() + COOL_DOWN_S + 2
    # The state is worked out from the clock at each read: read it once per turn, or the
    # cool-down can end between the loop's read and the assertion's.
    while (state := breaker.state) is not State.HALF_OPEN:
        assert state is State.OPEN and time.monotonic() < deadline, breaker
        await asyncio.sleep(0.02)


def test_429_the_client_waits_as_told_and_is_never_banned(binance):
    fake, proxy = binance
    limited_before = sample(metric_names.EXCHANGE_RATE_LIMITED, status="429")

    async def go():
        async with client_for(proxy) as client:
            fake.rate_limit_next(2)
            start = time.monotonic()
            with pytest.raises(RateLimited) as first:
                await client.ticker_price("BTCUSDT")
            price, refused = await until_accepted(lambda: client.ticker_price("BTCUSDT"), 5)
            return first.value, time.monotonic() - start, price, refused, client.breaker.state

    first, waited, price, refused, state = asyncio.run(go())
    assert first.status == 429 and first.retry_after == 2
    assert waited >= 2 and refused > 10  # ~40 calls refused by the client itself
    assert price.price == Decimal("65000.00")
    assert fake.during_backoff == 0 and fake.statuses[418] == 0  # never called early
    assert state is State.CLOSED
    assert sample(metric_names.EXCHANGE_RATE_LIMITED, status="429") == limited_before + 1


def test_418_ban_is_honoured_too(binance):
    fake, proxy = binance

    async def go():
        async with client_for(proxy) as client:
            fake.ban_next(1)
            with pytest.raises(IpBanned) as banned:
                await client.ticker_price("BTCUSDT")
            opened = client.breaker.state
            _, refused = await until_accepted(lambda: client.ticker_price("BTCUSDT"), 5)
            return banned.value, opened, refused, client.breaker.state

    banned, opened, refused, state = asyncio.run(go())
    assert banned.status == 418 and banned.retry_after == 1
    assert opened is State.OPEN  # a ban opens the breaker (its gauge: the exchange is down)
    assert refused > 5 and fake.during_backoff == 0
    assert state is State.CLOSED  # the first call after the ban was the trial, and passed


def test_an_order_refused_with_429_is_placed_once_after_the_back_off(binance):
    fake, proxy = binance
    key = "chaos-order-429"
    cid = client_order_id(key)

    async def go():
        async with client_for(proxy) as client:
            await client.sync_time()
            fake.rate_limit_next(1)

            def place():
                return client.new_order("BTCUSDT", "BUY", "LIMIT", Decimal("0.001"),
                                        Decimal("65000"), idempotency_key=key)  # fmt: skip

            with pytest.raises(RateLimited):
                await place()
            assert fake.placements[cid] == 0  # refused: nothing placed
            order, _ = await until_accepted(place, 5)
            again = await place()  # the client repeats the call: the same order comes back
            return order, again

    order, again = asyncio.run(go())
    assert order.client_order_id == cid == again.client_order_id
    assert order.order_id == again.order_id
    assert fake.placements[cid] == 1


def test_an_order_whose_answer_is_lost_is_settled_by_lookup_and_placed_once(binance):
    fake, proxy = binance
    key = "chaos-order-lost-answer"
    cid = client_order_id(key)

    async def go():
        async with client_for(proxy) as client:
            await client.sync_time()
            # The request lands; its answer never comes back (the connection is cut).
            toxic = proxy.add("limit_data", "downstream", bytes=0)
            order = client.new_order(
                "BTCUSDT", "BUY", "LIMIT", Decimal("0.001"), Decimal("65000"), idempotency_key=key
            )
            task = asyncio.ensure_future(order)
            for _ in range(200):  # up to 2 s
                if fake.placements[cid] or task.done():
                    break
                await asyncio.sleep(0.01)
            proxy.remove(toxic)  # healed before the lookup (after the 1 s recvWindow)
            return await task

    order = asyncio.run(go())
    assert order.client_order_id == cid
    assert fake.placements[cid] == 1  # looked up, not placed again
    assert fake.requests == 3  # server time, the order (answer lost), the lookup


def test_a_black_holed_exchange_fails_within_the_timeout(binance):
    _, proxy = binance

    async def go():
        async with client_for(proxy) as client:
            await client.ticker_price("BTCUSDT")
            with proxy.toxic("timeout", streams=("upstream", "downstream"), timeout=0):
                start = time.monotonic()
                with pytest.raises(ExchangeUnavailable):
                    await client.ticker_price("BTCUSDT")
                return time.monotonic() - start

    seconds = asyncio.run(go())
    assert TIMEOUT_S * 0.9 <= seconds < TIMEOUT_S + 1


def test_breaker_opens_half_opens_and_closes_and_its_state_is_a_metric(binance):
    fake, proxy = binance
    gauge = metric_names.EXCHANGE_CIRCUIT_STATE

    async def go():
        async with client_for(proxy) as client:
            await client.ticker_price("BTCUSDT")
            assert sample(gauge) == State.CLOSED
            toxic = proxy.add("reset_peer", "downstream", timeout=0)
            for _ in range(THRESHOLD):
                with pytest.raises(ExchangeUnavailable):
                    await client.ticker_price("BTCUSDT")
            assert client.breaker.state is State.OPEN and sample(gauge) == State.OPEN
            seen = fake.requests
            with pytest.raises(CircuitOpen):
                await client.ticker_price("BTCUSDT")
            assert fake.requests == seen  # refused without touching the network
            await half_open(client.breaker)
            assert sample(gauge) == State.HALF_OPEN
            with pytest.raises(ExchangeUnavailable):  # the trial fails: open again
                await client.ticker_price("BTCUSDT")
            assert client.breaker.state is State.OPEN
            proxy.remove(toxic)
            await half_open(client.breaker)
            price = await client.ticker_price("BTCUSDT")  # the trial succeeds
            return price, client.breaker.state, sample(gauge)

    price, state, value = asyncio.run(go())
    assert price.symbol == "BTCUSDT"
    assert state is State.CLOSED and value == State.CLOSED


def test_orders_through_429_418_and_a_black_hole_are_placed_once_each():
    tally = rate_limits_and_breaker()
    print("\n" + render([tally]))
    assert tally.lost == 0 and tally.duplicates == 0 and not tally.abandoned
    assert tally.early_calls == 0  # never called before Retry-After had passed
    assert tally.recovered  # the breaker opened in the black hole and closed after it
    assert tally.max_latency_s < 2 * TIMEOUT_S + 1  # the call and its lookup, each bounded
