"""A live monitoring stack on loopback: PostgreSQL (WAL archiving on) + pgBouncer, the app
(real uvicorn), the outbox dispatcher (`sparkops outbox run`, its own /metrics),
postgres_exporter, our pgBouncer exporter (app.pgbouncer_exporter) and a throwaway
Prometheus loaded with the generated rule file; traffic is driven through the app before
the tests look.

`live` is what the tests read: the Prometheus and the set of scrape jobs that are running.
To bring another component into the check, start it here and add its ScrapeTarget to
`targets` (job names from alerts.config). node_exporter publishes textfile metrics written
here the way the backup job and the restore drill write them on the db hosts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from alerts import build as alert_build
from alerts import config
from app import pgbouncer_exporter as pgbouncer_exporter_module
from app.config import Settings
from app.outbox import settings as outbox_settings
from signoff import livecheck
from sparkops import defaults
from sparkops import metric_names as m
from sparkops.artefacts import REPO_ROOT
from sparkops.wait import DeadlineExceeded, wait_until
from testkit.appserver import AppServer
from testkit.postgres import conninfo
from testkit.proc import free_port, stop_process
from testkit.prometheus import (
    NodeExporter,
    PostgresExporter,
    Prometheus,
    ScrapeTarget,
)
from testkit.stack import DbStack
from tests.live import traffic

# WAL archiving as the PostgreSQL deploy sets it up, with an archive_command that always
# succeeds: the check is about the archiver's statistics, not about pgBackRest.
ARCHIVING = {
    "archive_mode": "on",
    "archive_command": "/bin/true",
    "archive_timeout": str(defaults.ARCHIVE_TIMEOUT_SECONDS),
    "wal_level": "replica",
}


@dataclass
class Live:
    prometheus: Prometheus
    stack: DbStack
    jobs: set[str]
    traffic: dict[str, int]


@pytest.fixture(scope="package")
def live_stack():
    stack = DbStack(pg_settings=ARCHIVING).start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="package")
def postgres_exporter(live_stack):
    assert live_stack.pg is not None
    exporter = PostgresExporter(
        cluster=live_stack.pg,
        user=defaults.ROLE_MONITORING,
        password=live_stack.passwords.monitoring,
        dbname=live_stack.dbname,
    ).start()
    try:
        yield exporter
    finally:
        exporter.stop()


@pytest.fixture(scope="package")
def live_app(live_stack):
    server = AppServer(Settings(database_url=live_stack.app_conninfo(), release_id="livecheck"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def outbox_dispatcher(live_stack):
    """`sparkops outbox run` as a child process, console publisher, /metrics on loopback."""
    port = free_port()
    env = dict(os.environ, **{outbox_settings.ENV_DATABASE_URL: live_stack.app_conninfo()})
    sparkops = str(Path(sys.executable).parent / "sparkops")
    proc = subprocess.Popen(
        [sparkops, "outbox", "run", "--publisher", "console", "--metrics-host", "127.0.0.1",
         "--metrics-port", str(port), "--stats-interval", "1", "--poll-interval", "0.2",
         "--log-level", "WARNING"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        wait_until(
            lambda: proc.poll() is None and httpx.get(f"http://{address}/metrics").is_success,
            timeout=20,
            what="the outbox dispatcher's /metrics",
        )
        yield address
    finally:
        stop_process(proc)


@pytest.fixture(scope="package")
def pgbouncer_exporter(live_stack):
    """app.pgbouncer_exporter as a child process, reading pgBouncer as its stats user."""
    bouncer = live_stack.bouncer
    dsn = conninfo(bouncer.host, bouncer.port, bouncer.stats_user, bouncer.stats_password,
                   defaults.PGBOUNCER_ADMIN_DB)  # fmt: skip
    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, **{pgbouncer_exporter_module.DSN_ENV: dsn})
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.pgbouncer_exporter", "--listen", address],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(
            lambda: (
                proc.poll() is None
                and m.PGBOUNCER_UP + " 1.0" in httpx.get(f"http://{address}/metrics").text
            ),
            timeout=20,
            what="the pgBouncer exporter to reach pgBouncer",
        )
        yield address
    finally:
        stop_process(proc)


def write_textfile(directory: Path, name: str, samples: dict[str, float]) -> None:
    """Atomically, as node_exporter's textfile collector expects (temporary file, rename)."""
    body = "".join(f"{metric} {value}\n" for metric, value in samples.items())
    tmp = directory / f".{name}.tmp"
    tmp.write_text(body)
    tmp.replace(directory / name)


@pytest.fixture(scope="package")
def node_exporter(tmp_path_factory):
    textfiles = tmp_path_factory.mktemp("textfile")
    now = time.time()
    stanza = f'{{stanza="{defaults.PGBACKREST_STANZA}"}}'
    write_textfile(textfiles, "pgbackrest.prom", {
        m.PGBACKREST_LAST_BACKUP_TIMESTAMP + stanza: now - 3600,
        m.PGBACKREST_BACKUP_FELL_BACK + stanza: 0,
        # The WAL budget check's figures (published by the same script), within the budget.
        m.PGBACKREST_WAL_SINCE_BACKUP + stanza: 100 << 20,
        m.PGBACKREST_WAL_BUDGET + stanza: 1 << 30,
    })  # fmt: skip
    write_textfile(
        textfiles,
        "restore_drill.prom",
        {
            m.RESTORE_DRILL_LAST_SUCCESS: 1,
            m.RESTORE_DRILL_LAST_RUN_TIMESTAMP: now - 600,
            m.RESTORE_DRILL_DURATION: 42.5,
        },
    )
    exporter = NodeExporter(textfiles).start()
    try:
        yield exporter.address
    finally:
        exporter.stop()


def drive_wal(stack: DbStack, segments: int = 2) -> None:
    """Write and switch WAL segments so the archiver has something to count."""
    assert stack.pg is not None
    with psycopg.connect(stack.pg.superuser_conninfo(stack.dbname), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS livecheck_wal (n int)")
        for _ in range(segments):
            conn.execute("INSERT INTO livecheck_wal SELECT generate_series(1, 1000)")
            conn.execute("SELECT pg_switch_wal()")


@pytest.fixture(scope="package")
def live(
    live_stack, postgres_exporter, pgbouncer_exporter, node_exporter, live_app, outbox_dispatcher
):
    targets = [
        ScrapeTarget(config.JOB_NODE, node_exporter),
        ScrapeTarget(config.JOB_POSTGRES, postgres_exporter.address),
        ScrapeTarget(config.JOB_PGBOUNCER, pgbouncer_exporter),
        ScrapeTarget(config.JOB_APP, live_app.metrics_address),
        ScrapeTarget(config.JOB_OUTBOX, outbox_dispatcher),
    ]
    prometheus = Prometheus(
        targets=targets, rule_files=[REPO_ROOT / alert_build.RULES_PATH]
    ).start()
    try:
        wait_until(prometheus.targets_healthy, timeout=20, what="every target to be up")
        drive_wal(live_stack)
        seen = traffic.drive(live_app.url, live_stack.app_conninfo())
        jobs = {t.job for t in targets}
        # Rates need two scrapes after the traffic: wait until the required series exist.
        try:
            wait_until(
                lambda: not livecheck.failures(livecheck.run(prometheus.url), jobs),
                timeout=30,
                what="every required query to return series",
            )
        except DeadlineExceeded:
            table = livecheck.format_table(livecheck.run(prometheus.url))
            pytest.fail(f"required queries without series (jobs {sorted(jobs)}):\n{table}")
        yield Live(prometheus, live_stack, jobs, seen)
    finally:
        prometheus.remove()
