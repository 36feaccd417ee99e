"""A live monitoring stack on loopback: PostgreSQL (WAL archiving on) + pgBouncer, the
exporters, and a throwaway Prometheus loaded with the generated rule file.

`live` is what the tests read: the Prometheus and the set of scrape jobs that are running.
To bring another component into the check, start it here and add its ScrapeTarget to
`targets` (job names from alerts.config), e.g. the app (TODO, see tests/live/README.md):

    app = AppServer(Settings(database_url=live_stack.app_conninfo(), ...)).start()
    targets.append(ScrapeTarget(config.JOB_APP, f"{app.host}:{app.port}"))
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import pytest

from alerts import build as alert_build
from alerts import config
from sparkops import defaults
from sparkops.ephemeral.prometheus import PostgresExporter, Prometheus, ScrapeTarget
from sparkops.ephemeral.stack import DbStack
from sparkops.generated import REPO_ROOT
from sparkops.wait import wait_until

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


def drive_wal(stack: DbStack, segments: int = 2) -> None:
    """Write and switch WAL segments so the archiver has something to count."""
    assert stack.pg is not None
    with psycopg.connect(stack.pg.superuser_conninfo(stack.dbname), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS livecheck_wal (n int)")
        for _ in range(segments):
            conn.execute("INSERT INTO livecheck_wal SELECT generate_series(1, 1000)")
            conn.execute("SELECT pg_switch_wal()")


@pytest.fixture(scope="package")
def live(live_stack, postgres_exporter):
    targets = [ScrapeTarget(config.JOB_POSTGRES, postgres_exporter.address)]
    prometheus = Prometheus(
        targets=targets, rule_files=[REPO_ROOT / alert_build.RULES_PATH]
    ).start()
    try:
        wait_until(prometheus.targets_healthy, timeout=20, what="every target to be up")
        drive_wal(live_stack)
        yield Live(prometheus, live_stack, {t.job for t in targets})
    finally:
        prometheus.remove()
