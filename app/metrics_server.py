"""The app's /metrics on a port of its own, bound to the host's private address, so the
public port (behind the load balancer) never serves it.

prometheus_client's threaded WSGI server serves the default registry. Before each scrape it
runs the app's readiness check on the app's event loop (the same check /readyz runs), so
`spark_app_ready` is what /readyz would answer at that moment.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, start_wsgi_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from sparkops import defaults

log = logging.getLogger("spark.metrics")


class _RefreshedRegistry(Collector):
    """The default registry, with `refresh` run (on `loop`) before each collection."""

    def __init__(self, loop: asyncio.AbstractEventLoop, refresh: Callable[[], Awaitable]):
        self.loop = loop
        self.refresh = refresh

    def _refreshed(self) -> None:
        future = asyncio.run_coroutine_threadsafe(self.refresh(), self.loop)
        try:
            future.result(timeout=defaults.READY_CHECK_TIMEOUT_SECONDS + 1)
        except Exception:  # the scrape still answers; the gauge keeps its last value
            future.cancel()
            log.exception("could not refresh the readiness gauge before a scrape")

    def collect(self) -> Iterable[Metric]:
        self._refreshed()
        return REGISTRY.collect()

    def restricted_registry(self, names: Iterable[str]):  # `?name[]=...` scrapes
        self._refreshed()
        return REGISTRY.restricted_registry(names)


class MetricsServer:
    def __init__(self, host: str, port: int, refresh: Callable[[], Awaitable]):
        self.host, self.port, self.refresh = host, port, refresh
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve in a thread; an address in use fails the app's start loudly."""
        registry = _RefreshedRegistry(asyncio.get_running_loop(), self.refresh)
        self._server, self._thread = start_wsgi_server(self.port, self.host, registry)
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
