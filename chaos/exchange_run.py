"""Scenarios 3 and 6 as one row of the chaos table: orders placed on a stand-in Binance
(chaos.fake_binance) through the fault proxy by the real Binance client, while the exchange
rate-limits (429, then a 418 ban) and then vanishes (black hole: the breaker opens).

The caller behaves as the app's order router would: on RateLimited or CircuitOpen it waits
the error's `retry_after` and places the same order again with the same idempotency key; on
ExchangeUnavailable or OrderStatusUnknown it backs off briefly and does the same. Lost: an
order the client was told is placed that the exchange does not have; duplicate: one
idempotency key placed twice. The detailed expectations are tests/chaos/test_exchange.py.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from app.exchanges.binance import BinanceClient, client_order_id
from app.exchanges.circuit import CircuitBreaker, State
from app.exchanges.credentials import Secret
from app.exchanges.errors import CircuitOpen, ExchangeError, RateLimited
from chaos.api import ChaosServer
from chaos.client import Toxiproxy
from chaos.fake_binance import FakeBinance
from chaos.load import Tally

ORDERS = 40
TIMEOUT_S = 1.0


async def _place(client: BinanceClient, key: str, tally: Tally) -> None:
    for _attempt in range(200):  # bounded: waits are seconds, the run a minute at most
        start = time.monotonic()
        try:
            order = await client.new_order("BTCUSDT", "BUY", "LIMIT", Decimal("0.001"),
                                           Decimal("65000"), idempotency_key=key)  # fmt: skip
        except (RateLimited, CircuitOpen) as exc:
            tally.record(time.monotonic() - start, 503)  # shed: told to come back later
            await asyncio.sleep(max(exc.retry_after, 0.05))
            continue
        except ExchangeError:
            tally.record(time.monotonic() - start, None)  # unavailable or unknown: retry
            await asyncio.sleep(0.2)
            continue
        tally.record(time.monotonic() - start, 201)
        tally.acked.add(order.client_order_id)
        tally.last_ack_at = time.monotonic()
        tally.ack_times.append(tally.last_ack_at)
        return
    tally.abandoned.add(key)


async def _run(fake: FakeBinance, toxiproxy: Toxiproxy, tally: Tally) -> None:
    proxy = toxiproxy.create("exchange", f"{fake.host}:{fake.port}")
    breaker = CircuitBreaker("binance", failure_threshold=3, cool_down=1.0)
    client = BinanceClient(f"http://{proxy.listen}", api_key=Secret("k"),
                           api_secret=Secret("s"), timeout=TIMEOUT_S, recv_window_ms=1000,
                           breaker=breaker)  # fmt: skip
    healed: list[float] = []

    def heal(toxic: str) -> None:
        proxy.remove(toxic)
        healed.append(time.monotonic())

    states: set[State] = set()

    async def watch() -> None:  # the breaker's state every 20 ms
        while True:
            states.add(breaker.state)
            await asyncio.sleep(0.02)

    watcher = asyncio.ensure_future(watch())
    async with client:
        for n in range(ORDERS):
            if n == 10:
                fake.rate_limit_next(2)
            if n == 20:
                fake.ban_next(1)
            if n == 30:
                toxic = proxy.add("timeout", "downstream", timeout=0)
                healer = asyncio.get_running_loop().call_later(4, heal, toxic)
            await _place(client, f"exchange-chaos-{n}", tally)
    healer.cancel()
    watcher.cancel()
    opened = State.OPEN in states
    tally.notes.append(
        f"exchange answered 429 x{fake.statuses[429]}, 418 x{fake.statuses[418]}; calls "
        f"before Retry-After had passed: {fake.during_backoff}; breaker opened during the "
        f"black hole: {opened}, closed at the end: {breaker.state is State.CLOSED}"
    )
    tally.early_calls = fake.during_backoff
    tally.lost = sum(1 for cid in tally.acked if cid not in fake.orders)
    tally.duplicates = sum(n - 1 for n in fake.placements.values() if n > 1)
    tally.lost += sum(1 for key in tally.abandoned if client_order_id(key) not in fake.orders)
    tally.recovered = (bool(healed) and not tally.abandoned and opened
                       and breaker.state is State.CLOSED)  # fmt: skip
    if tally.recovered:
        tally.recover_s = min(t for t in tally.ack_times if t > healed[0]) - healed[0]


def rate_limits_and_breaker() -> Tally:
    """3 + 6: 429, 418, then a 4 s black hole, under a stream of orders."""
    tally = Tally("3+6 exchange 429/418, breaker")
    with ChaosServer() as server, FakeBinance() as fake:
        toxiproxy = Toxiproxy(server.url)
        try:
            asyncio.run(_run(fake, toxiproxy, tally))
        finally:
            toxiproxy.close()
    return tally
