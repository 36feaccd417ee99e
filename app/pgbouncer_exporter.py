"""A Prometheus exporter for pgBouncer's pools: SHOW POOLS and SHOW DATABASES on the admin
console, as the stats user, on every scrape.

Why our own: Debian's prometheus-pgbouncer-exporter 1.7 crashes against pgBouncer 1.18
(KeyError 'total_requests': it expects columns that 1.18 renamed), and PyPI's
pgbouncer-exporter 2.1.2 pins a psycopg2 that does not build on Python 3.11. This one reads
columns by name from the cursor description (a column pgBouncer adds or drops is ignored or
reported as absent, never a crash), publishes the names in sparkops/metric_names.py that the
dashboard and the alerts use, and ships in the app's release (psycopg and prometheus_client
are already its dependencies).

    python -m app.pgbouncer_exporter --listen 0.0.0.0:9127   # DSN from PGBOUNCER_EXPORTER_DSN
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import Iterator

import psycopg
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sparkops import defaults, envvars
from sparkops import metric_names as names

DSN_ENV = envvars.PGBOUNCER_EXPORTER_DSN

# SHOW POOLS column -> (metric name, help)
POOL_GAUGES = {
    "cl_active": (names.PGBOUNCER_CLIENT_ACTIVE, "Client connections linked to a server"),
    "cl_waiting": (names.PGBOUNCER_CLIENT_WAITING, "Client connections waiting for a server"),
    "sv_active": (names.PGBOUNCER_SERVER_ACTIVE, "Server connections linked to a client"),
    "sv_idle": (names.PGBOUNCER_SERVER_IDLE, "Server connections idle and ready"),
}


def _rows(conn: psycopg.Connection, command: str) -> list[dict]:
    cur = conn.execute(command, prepare=False)
    columns = [c.name for c in cur.description or []]
    return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


class PgBouncerCollector(Collector):
    def __init__(self, dsn: str, timeout: float = 3.0) -> None:
        self.dsn = dsn
        self.timeout = timeout

    def _fetch(self) -> tuple[list[dict], list[dict]]:
        with psycopg.connect(
            self.dsn, autocommit=True, connect_timeout=max(1, int(self.timeout))
        ) as conn:
            return _rows(conn, "SHOW POOLS"), _rows(conn, "SHOW DATABASES")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(names.PGBOUNCER_UP, "1 when pgBouncer's admin console answered")
        try:
            pools, databases = self._fetch()
        except (psycopg.Error, OSError):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families(pools, databases)


def families(pools: list[dict], databases: list[dict]) -> Iterator[GaugeMetricFamily]:
    """Metric families from SHOW POOLS / SHOW DATABASES rows (column name -> value)."""
    labels = ["database", "user"]
    for column, (metric, help_text) in POOL_GAUGES.items():
        family = GaugeMetricFamily(metric, help_text, labels=labels)
        for row in pools:
            if column in row:
                family.add_metric([row["database"], row["user"]], _number(row[column]))
        yield family
    maxwait = GaugeMetricFamily(
        names.PGBOUNCER_CLIENT_MAXWAIT,
        "Age of the oldest waiting client, seconds",
        labels=labels,
    )
    for row in pools:
        seconds = _number(row.get("maxwait")) + _number(row.get("maxwait_us")) / 1e6
        maxwait.add_metric([row["database"], row["user"]], seconds)
    yield maxwait
    pool_size = GaugeMetricFamily(
        names.PGBOUNCER_POOL_SIZE, "Configured pool size per database", labels=["database"]
    )
    for row in databases:
        if "pool_size" in row:
            pool_size.add_metric([row["name"]], _number(row["pool_size"]))
    yield pool_size


def serve(dsn: str, host: str, port: int) -> tuple[object, threading.Thread]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PgBouncerCollector(dsn))
    return start_http_server(port, addr=host, registry=registry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--listen",
        default=f"127.0.0.1:{defaults.PGBOUNCER_EXPORTER_PORT}",
        help="host:port for /metrics",
    )
    parser.add_argument("--dsn", default=os.environ.get(DSN_ENV), help=f"or env {DSN_ENV}")
    args = parser.parse_args(argv)
    if not args.dsn:
        parser.error(f"no DSN: set {DSN_ENV} or pass --dsn (the stats user on the admin db)")
    host, _, port = args.listen.rpartition(":")
    if not port.isdigit():
        parser.error(f"--listen {args.listen!r} is not host:port")
    server, _thread = serve(args.dsn, host or "0.0.0.0", int(port))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
