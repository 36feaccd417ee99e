"""`sparkops validate` against a lab with one thing broken: pgBouncer stopped, the position
unique index dropped, a security header stripped by a front end, the WAL archive failing.
The matching check fails with a message that says what is wrong, the checks that do not
depend on the broken part still pass, and the run exits 1 with every file written. Each test
puts the lab back as it found it.

The restore drill and the money suite (which touch nothing broken here) are left out to keep
each run short; tests/lab/test_deploy_e2e.py runs them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from signoff import validate
from sparkops import defaults, layout
from sparkops.wait import wait_until
from testkit.header_proxy import HeaderStrippingProxy
from tests.lab.stack import by_group, on_host, psql, ready

pytestmark = [pytest.mark.lab, pytest.mark.slow]

SKIPPED = ("restore drill", "money suite coverage")


def _validate(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    sparkops = str(Path(sys.executable).parent / "sparkops")
    skips = [a for name in SKIPPED for a in ("--skip", name)]
    argv = [sparkops, "validate", "--evidence-dir", str(tmp_path), *skips, *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    (folder,) = tmp_path.glob("*-validate")
    final = (folder / "final_summary.txt").read_text()
    assert (folder / "validation_summary.md").is_file() and (folder / "report.html").is_file()
    verdicts = {}
    for line in final.splitlines()[1:]:
        word, rest = line.split(" ", 1)
        name, message = rest.split(": ", 1)
        verdicts[name] = f"{word}: {message}"
    ran = {name for name, _ in validate.CHECKS} - set(SKIPPED)
    assert set(verdicts) == ran, final  # every check ran, broken part or not
    print(final)
    return r, verdicts


def _passed(verdicts: dict[str, str], names: tuple[str, ...]) -> None:
    for name in names:
        assert verdicts[name].startswith("PASS"), (name, verdicts[name])


def test_pgbouncer_stopped_fails_the_pgbouncer_check(deployed, tmp_path):
    db, app = by_group(deployed["hosts"], "db"), by_group(deployed["hosts"], "app")
    on_host(db, f"systemctl stop {layout.PGBOUNCER_SERVICE}")
    try:
        r, verdicts = _validate(tmp_path)
    finally:
        on_host(db, f"systemctl start {layout.PGBOUNCER_SERVICE}")
        wait_until(lambda: ready(app), timeout=60, what="the app ready again")
    assert r.returncode == 1
    assert verdicts["pgBouncer pools and stats"].startswith("FAIL"), verdicts
    said = verdicts["pgBouncer pools and stats"]
    assert said.startswith("FAIL: pgBouncer's admin console on db does not answer SHOW POOLS"), said
    assert f"is {layout.PGBOUNCER_SERVICE} running?" in said and "Connection refused" in said, said
    # The app reaches PostgreSQL through pgBouncer: no key can be made, and it says why.
    assert verdicts["idempotency sequence"].startswith("FAIL: could not make an API key"), verdicts
    _passed(verdicts, ("position unique index", "pgbackrest check and info",
                       "WAL switch archived", "alert rules loaded"))  # fmt: skip


def test_the_unique_index_dropped_fails_the_index_check(deployed, tmp_path):
    db = by_group(deployed["hosts"], "db")
    index = validate.POSITION_INDEX
    definition = psql(db, f"SELECT pg_get_indexdef('{index}'::regclass)").strip()
    assert definition.startswith("CREATE UNIQUE INDEX"), definition
    psql(db, f"DROP INDEX {index}")
    try:
        r, verdicts = _validate(tmp_path)
    finally:
        psql(db, definition)
    assert r.returncode == 1
    assert verdicts["position unique index"] == (
        f"FAIL: index {index} is missing: one open position is not enforced"
    )
    _passed(verdicts, tuple(n for n in verdicts if n != "position unique index"))


def test_a_stripped_header_fails_the_header_check(deployed, tmp_path):
    app = by_group(deployed["hosts"], "app")
    upstream = f"http://{app['ip']}:{defaults.APP_PORT}"
    with HeaderStrippingProxy(upstream, {"x-frame-options"}) as proxy:
        assert "x-frame-options" not in httpx.get(f"{proxy.url}/healthz").headers
        r, verdicts = _validate(tmp_path, "--app-url", proxy.url)
        assert proxy.requests > 3  # the header and idempotency checks went through it
    assert r.returncode == 1
    assert verdicts["security headers"].startswith("FAIL"), verdicts
    assert "X-Frame-Options" in verdicts["security headers"], verdicts["security headers"]
    _passed(verdicts, tuple(n for n in verdicts if n != "security headers"))


def test_a_failing_archive_fails_the_archive_checks(deployed, tmp_path):
    db = by_group(deployed["hosts"], "db")
    psql(db, "ALTER SYSTEM SET archive_command = '/bin/false'")
    psql(db, "SELECT pg_reload_conf()")
    try:
        # Not the default 90 s: the archiver fails on its first try and keeps failing.
        r, verdicts = _validate(tmp_path, "--archive-deadline", "15")
    finally:
        psql(db, "ALTER SYSTEM RESET archive_command")
        psql(db, "SELECT pg_reload_conf()")
        # The archiver retries what failed: wait until it has caught up.
        wait_until(
            lambda: psql(db, "SELECT last_archived_wal >= pg_walfile_name(pg_current_wal_lsn()) "
                             "OR last_failed_time < last_archived_time FROM pg_stat_archiver"
                         ).strip() == "t",
            timeout=120, what="the archive to catch up",
        )  # fmt: skip
    assert r.returncode == 1
    wal = verdicts["WAL switch archived"]
    assert wal.startswith("FAIL: segment ") and "not archived within 15s" in wal, wal
    assert "the archiver failed" in wal and "see archive_command" in wal, wal
    assert "archive_command '/bin/false'" in verdicts["pgbackrest check and info"], verdicts
    _passed(verdicts, ("position unique index", "idempotency sequence",
                       "pgBouncer pools and stats", "security headers", "alert rules loaded",
                       "dashboard queries"))  # fmt: skip
