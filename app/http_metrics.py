"""Request duration by route template, method and status.

The route label is the template (`/orders/{order_id}`), never the raw path, so label
cardinality stays bounded; unmatched paths share the label "unmatched".
"""

from __future__ import annotations

import time

from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics


class HttpMetrics:
    def __init__(self, app: ASGIApp, router: Router):
        self.app = app
        self.router = router

    def route_of(self, scope: Scope) -> str:
        for route in self.router.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return getattr(route, "path", "unmatched")
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics.HTTP_REQUESTS_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, capture)
        finally:
            metrics.HTTP_REQUESTS_IN_FLIGHT.dec()
            metrics.HTTP_REQUEST_DURATION.labels(
                self.route_of(scope), scope["method"], str(status)
            ).observe(time.perf_counter() - start)
