"""One dispatcher process: pool, publisher, /metrics, signals; what `sparkops outbox run`
and the systemd unit start."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from prometheus_client import start_http_server

from app.outbox.dispatcher import Dispatcher
from app.outbox.publishers import Publisher
from app.outbox.settings import DispatcherSettings
from app.outbox.store import OutboxStore, app_pool

log = logging.getLogger(__name__)

DB_CONNECT_TIMEOUT_SECONDS = 30.0


def default_owner() -> str:
    """Unique per process: without `--name`, a successor never takes over a lease early."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def serve(
    database_url: str,
    publisher: Publisher,
    config: DispatcherSettings,
    *,
    name: str | None = None,
    metrics_host: str = "0.0.0.0",
    metrics_port: int = 0,
) -> None:
    """Run until SIGTERM or SIGINT; return once the current batch is settled."""
    owner = name or default_owner()
    # Handlers first: a SIGTERM while the pool is still connecting ends the run cleanly too.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if metrics_port:
        start_http_server(metrics_port, addr=metrics_host)
        log.info("metrics on http://%s:%d/metrics", metrics_host, metrics_port)
    # A connection for each claim loop and one for the gauges and the purge.
    pool = app_pool(database_url, max_size=config.workers + 1)
    try:
        await pool.open(wait=True, timeout=DB_CONNECT_TIMEOUT_SECONDS)
    except BaseException:
        await pool.close()
        raise
    try:
        dispatcher = Dispatcher(
            OutboxStore(pool),
            publisher,
            owner,
            config,
            # A name is a promise that one process at a time runs under it (a systemd
            # unit): whatever it holds at start was left by a predecessor that died.
            recover_own_leases=name is not None,
            stop=stop,
        )
        log.info("outbox dispatcher %s publishing to %s", owner, publisher.name)
        await dispatcher.run()
        log.info("outbox dispatcher %s stopped cleanly", owner)
    finally:
        await publisher.aclose()
        await pool.close()
