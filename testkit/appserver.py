"""The trading app served by a real uvicorn on loopback, in a background thread."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

import uvicorn

from app.config import Settings
from app.main import create_app
from sparkops import defaults
from sparkops.wait import wait_until
from testkit.proc import free_port


@dataclass
class AppServer:
    settings: Settings
    host: str = "127.0.0.1"
    port: int = 0
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def metrics_address(self) -> str:
        """host:port of the app's /metrics, a port of its own (the public one answers 404)."""
        return f"{self.settings.metrics_host}:{self.settings.metrics_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics_address}/metrics"

    def start(self, timeout: float = 20.0) -> AppServer:
        self.port = self.port or free_port(self.host)
        if self.settings.metrics_port:  # a free one: several servers run side by side
            self.settings = dataclasses.replace(
                self.settings, metrics_host=self.host, metrics_port=free_port(self.host)
            )
        config = uvicorn.Config(
            create_app(self.settings),
            host=self.host,
            port=self.port,
            log_level="warning",
            lifespan="on",
            backlog=4096,
            timeout_graceful_shutdown=5,
            timeout_keep_alive=defaults.APP_KEEP_ALIVE_SECONDS,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=timeout, what="uvicorn to start")
        return self

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=15)
            self.server = None
            self.thread = None

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
