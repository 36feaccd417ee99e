"""A stand-in for Binance's spot REST API on loopback, for the exchange chaos scenarios.

Only what the scenarios need: server time, ticker price, new order (deduplicated by
newClientOrderId among open orders, as Binance does: "Duplicate order sent."), order
lookup by origClientOrderId; and Binance's rate limiting as documented: a 429 with
Retry-After, and a 418 (IP ban) for a client that calls again before Retry-After has
passed. Signatures are not checked here (the pacts and unit tests cover signing).

It counts what a scenario asserts on: every request, requests received while the client
was told to wait, orders per client order id.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sparkops.wait import wait_until
from testkit.proc import free_port


@dataclass
class FakeBinance:
    host: str = "127.0.0.1"
    port: int = 0
    requests: int = 0
    during_backoff: int = 0  # requests that came before the Retry-After they were given
    statuses: Counter = field(default_factory=Counter)
    orders: dict[str, dict] = field(default_factory=dict)  # clientOrderId -> order
    placements: Counter = field(default_factory=Counter)  # clientOrderId -> accepted POSTs
    _limit_next: float = 0.0  # answer the next request 429 with this Retry-After
    _ban_next: float = 0.0  # answer the next request 418 with this Retry-After
    _backoff_until: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def rate_limit_next(self, retry_after: int) -> None:
        self._limit_next = retry_after

    def ban_next(self, retry_after: int) -> None:
        self._ban_next = retry_after

    async def _gate(self, request: Request) -> JSONResponse | None:
        now = time.monotonic()
        with self._lock:
            self.requests += 1
            if now < self._backoff_until:
                self.during_backoff += 1
                return self._limited(418, 60, now)  # ignoring a 429: banned
            if self._ban_next:
                seconds, self._ban_next = self._ban_next, 0.0
                return self._limited(418, seconds, now)
            if self._limit_next:
                seconds, self._limit_next = self._limit_next, 0.0
                return self._limited(429, seconds, now)
        return None

    def _limited(self, status: int, seconds: float, now: float) -> JSONResponse:
        self._backoff_until = now + seconds
        self.statuses[status] += 1
        return JSONResponse(
            {"code": -1003, "msg": "Too many requests."},
            status_code=status,
            headers={"retry-after": str(int(seconds))},
        )

    def app(self) -> Starlette:
        async def server_time(request: Request):
            return await self._gate(request) or self._ok({"serverTime": int(time.time() * 1000)})

        async def ticker(request: Request):
            symbol = request.query_params.get("symbol", "")
            return await self._gate(request) or self._ok({"symbol": symbol, "price": "65000.00"})

        async def new_order(request: Request):
            if (limited := await self._gate(request)) is not None:
                return limited
            q = request.query_params
            cid = q["newClientOrderId"]
            with self._lock:
                if cid in self.orders:  # open (never filled here): Binance refuses the id
                    return self._error(400, -2010, "Duplicate order sent.")
                self.placements[cid] += 1
                self.orders[cid] = {
                    "symbol": q["symbol"], "orderId": len(self.orders) + 1,
                    "clientOrderId": cid, "side": q["side"], "type": q["type"],
                    "status": "NEW", "price": q.get("price", "0"), "origQty": q["quantity"],
                    "executedQty": "0",
                }  # fmt: skip
                return self._ok(self.orders[cid])

        async def get_order(request: Request):
            if (limited := await self._gate(request)) is not None:
                return limited
            order = self.orders.get(request.query_params["origClientOrderId"])
            if order is None:
                return self._error(400, -2013, "Order does not exist.")
            return self._ok(order)

        return Starlette(
            routes=[
                Route("/api/v3/time", server_time),
                Route("/api/v3/ticker/price", ticker),
                Route("/api/v3/order", new_order, methods=["POST"]),
                Route("/api/v3/order", get_order, methods=["GET"]),
            ]
        )

    def _ok(self, body: dict) -> JSONResponse:
        self.statuses[200] += 1
        return JSONResponse(body)

    def _error(self, status: int, code: int, msg: str) -> JSONResponse:
        self.statuses[status] += 1
        return JSONResponse({"code": code, "msg": msg}, status_code=status)

    def start(self) -> FakeBinance:
        self.port = self.port or free_port(self.host)
        config = uvicorn.Config(self.app(), host=self.host, port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_until(lambda: self._server.started, timeout=20, what="the fake Binance to start")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> FakeBinance:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
