"""Chaos scenario 7: the WAL repository goes away (an unmounted share, a store that does not
answer) while the database keeps writing.

Expected: archive_command fails and PostgreSQL keeps the segments (nothing is lost);
`PostgresWalArchiveFailing`'s expression, evaluated by a real Prometheus on a real
postgres_exporter, becomes true; once the repository is back the archive catches up by itself
(a new segment wakes the archiver), `pgbackrest check` passes, and the archive has no gap from
the backup to the newest segment.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from alerts import build as alert_build
from alerts import config as alert_config
from alerts import rules as alert_rules
from runbooks import wal
from sparkops import defaults
from sparkops.artefacts import REPO_ROOT
from sparkops.wait import wait_until
from testkit.localdb import LocalBackedUpDb
from testkit.prometheus import PostgresExporter, Prometheus, ScrapeTarget

pytestmark = pytest.mark.chaos

SEGMENTS_DURING_OUTAGE = 3


def _switch(db: LocalBackedUpDb) -> str:
    """A transaction, then a switch: the segment it closed, by name."""
    with psycopg.connect(db.stack.pg.superuser_conninfo(db.stack.dbname), autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS chaos_wal (n int)")
        c.execute("INSERT INTO chaos_wal SELECT generate_series(1, 100)")
        return c.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]


def _archiver(db: LocalBackedUpDb) -> dict:
    with psycopg.connect(db.stack.pg.superuser_conninfo(), autocommit=True) as c:
        row = c.execute(
            "SELECT archived_count, failed_count, last_archived_wal FROM pg_stat_archiver"
        ).fetchone()
    return {"archived": row[0], "failed": row[1], "last": row[2] or ""}


def test_an_unreachable_repository_alerts_then_catches_up_with_no_gap():
    [alert] = [a for a in alert_rules.ALERTS if a.name == "PostgresWalArchiveFailing"]
    with LocalBackedUpDb() as db:
        exporter = PostgresExporter(
            cluster=db.stack.pg,
            user=defaults.ROLE_MONITORING,
            password=db.stack.passwords.monitoring,
            dbname=db.stack.dbname,
        ).start()
        repo, away = db.workdir / "repo", db.workdir / "repo-away"
        try:
            wait_until(lambda: _archiver(db)["last"], timeout=60, what="a first archived segment")
            before = _archiver(db)
            repo.rename(away)  # the repository is gone
            outage_start = time.monotonic()
            target = ScrapeTarget(alert_config.JOB_POSTGRES, exporter.address)
            rules = [REPO_ROOT / alert_build.RULES_PATH]
            # Prometheus starts with the outage, so its 10-minute window holds no success.
            with Prometheus(targets=[target], rule_files=rules) as prometheus:
                during = [_switch(db) for _ in range(SEGMENTS_DURING_OUTAGE)]
                wait_until(
                    lambda: _archiver(db)["failed"] > before["failed"],
                    timeout=60,
                    what="archive_command to fail",
                )

                def still_writing_and_alerting():
                    # A busy database: more WAL wakes the archiver, which fails again, so
                    # the failure counter rises between scrapes as it does in production.
                    during.append(_switch(db))
                    return prometheus.query(alert.expr)["data"]["result"]

                fired = wait_until(
                    still_writing_and_alerting,
                    timeout=60,
                    interval=1.0,
                    what="PostgresWalArchiveFailing's expression to hold",
                )
                failing = _archiver(db)
                # None of the outage's segments reached the (absent) repository: PostgreSQL
                # holds them. (A push already under way when it went may still have landed.)
                assert failing["last"][8:] < during[0][8:], (failing, during[0])
                outage_seconds = time.monotonic() - outage_start

                away.rename(repo)  # the repository is back
                back = time.monotonic()
                newest = _switch(db)  # new WAL wakes the archiver at once
                wait_until(
                    lambda: _archiver(db)["last"][8:] >= newest[8:],
                    timeout=120,
                    what=f"the archive to catch up to {newest}",
                )
                caught_up_seconds = time.monotonic() - back
            db.target.pgbackrest("check", timeout=120)
            info = wal.read_info(db.target)
            segments = wal.archived_segments(db.target)
            first = info.backups[-1].start_lsn // wal.SEGMENT_BYTES
            assert not wal.archive_gaps(segments, first, wal.segment_number(newest))
            assert all(name in segments for name in [*during, newest])
        finally:
            if away.exists():
                away.rename(repo)
            exporter.stop()
    print(
        f"\nscenario 7: repository away {outage_seconds:.1f} s, "
        f"{failing['failed'] - before['failed']} failed archive attempts, "
        f"{len(during)} segments held by PostgreSQL, alert expression value "
        f"{fired[0]['value'][1]}; back: archive caught up in {caught_up_seconds:.1f} s, "
        "pgbackrest check passed, no gap"
    )
