"""The WAL budget check as the deploy renders it, run as postgres against a real PostgreSQL
archived by a real pgBackRest: within the budget nothing is asked; past it the request file
(which the path unit turns into an incremental backup) is written once per minimum interval;
after the incremental backup the WAL counts from it; a dry run and a failing server change
nothing; the backup-time metric publishes the check's figures."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploys import pgbackrest
from runbooks.executor import LocalExecutor
from sparkops import layout, metric_names
from sparkops.localhost import make_workdir, service_user
from sparkops.wait import wait_until
from testkit.localdb import LocalBackedUpDb

MIB = 1 << 20
PYTHON = "/usr/bin/python3"  # the script's interpreter on a db host (Debian's)


@pytest.fixture(scope="module")
def db():
    with LocalBackedUpDb() as backed:
        yield backed


@pytest.fixture
def check(db, tmp_path):
    """Run the rendered check (the deploy's settings, a 1 MiB budget unless told otherwise);
    its request and figures files in a directory of the service user's."""
    place = make_workdir("wal-budget")
    request, figures = place / "request", place / "figures.json"

    def render(budget: str, port: int | None, floor: str | None) -> str:
        settings = {**pgbackrest.wal_budget(pgbackrest.DEFAULTS), "budget": budget}
        if floor:
            settings["budget_min"] = floor
        script = place / f"wal-budget-{budget}-{port}-{floor}"
        script.write_text(pgbackrest.wal_budget_script(
            settings,
            psql_argv=(f"{layout.POSTGRES_BINDIR}/psql", "-h", db.target.socket_dir, "-p",
                       str(port or db.target.port), "-d", "postgres"),
            request_file=str(request), figures_file=str(figures),
        ))  # fmt: skip
        script.chmod(0o755)
        return str(script)

    def run(*args: str, budget: str = "1MiB", port: int | None = None, floor: str | None = None):
        return LocalExecutor().run(
            [PYTHON, render(budget, port, floor), *args],
            user=service_user(),
            env={"PGBACKREST_CONFIG": str(db.config), "PATH": os.environ["PATH"]},
            check=False,
            timeout=120,
        )

    run.request, run.figures, run.place, run.render = request, figures, place, render
    yield run


def write_wal(db: LocalBackedUpDb, mib: int) -> None:
    """About `mib` MiB of WAL (a table of that many MiB, logged)."""
    db.target.psql(
        (
            "DROP TABLE IF EXISTS wal_filler",
            "CREATE TABLE wal_filler AS SELECT g, repeat('x', 1000) AS pad "
            f"FROM generate_series(1, {mib * 1000}) AS g",
        ),
        dbname="postgres",
    )


def test_right_after_a_backup_nothing_is_asked(db, check):
    db.backup("incr")
    done = check(budget="64MiB")
    assert done.ok, done.stderr
    assert "within the budget of 64 MiB" in done.stdout, done.stdout
    assert not check.request.exists()
    figures = json.loads(check.figures.read_text())
    assert figures["due"] is False and figures["budget"] == 64 * MIB
    assert 0 <= figures["wal"] < 64 * MIB


def test_past_the_budget_it_asks_once_per_interval_then_counts_from_the_new_backup(db, check):
    write_wal(db, 4)
    first = check("--min-interval", "0")
    assert first.ok, first.stderr
    assert "over the budget of 1 MiB: asking for an incremental backup" in first.stdout
    asked = check.request.read_text()
    assert "over the budget" in asked
    stamp = check.request.stat().st_mtime_ns
    assert json.loads(check.figures.read_text())["due"] is True

    again = check("--min-interval", "300")
    assert again.ok, again.stderr
    assert "the last request was 0 s ago: the next request in" in again.stdout, again.stdout
    assert check.request.stat().st_mtime_ns == stamp  # not asked twice

    db.backup("incr")  # what the path unit starts
    label = json.loads(db.target.pgbackrest("info", "--output=json").stdout)[0]["backup"][-1]
    # The backup's end switched to a new segment: the rest of the old one counts (LSNs).
    after = check("--min-interval", "0", budget="17MiB")
    assert after.ok, after.stderr
    figures = json.loads(check.figures.read_text())
    assert figures["newest"] == label["label"] and figures["due"] is False, after.stdout
    assert figures["wal"] <= 16 * MIB + MIB


def _budget_mib(stdout: str) -> int:
    found = re.search(r"the budget of (\d+) MiB", stdout)
    assert found, stdout
    return int(found.group(1))


def test_a_share_of_the_databases_size_above_its_floor(db, check):
    size = int(db.target.psql("SELECT sum(pg_database_size(oid)) FROM pg_database",
                              dbname="postgres"))  # fmt: skip
    half = check("--dry-run", budget="50%", floor="1MiB")
    assert half.ok, half.stderr
    # Within a MiB: autovacuum may grow the database between the two reads.
    assert abs(_budget_mib(half.stdout) - size / 2 / MIB) <= 1, (half.stdout, size)
    floored = check("--dry-run", budget="50%", floor=f"{2 * size}B")
    assert abs(_budget_mib(floored.stdout) - 2 * size / MIB) <= 1, (floored.stdout, size)


def test_while_a_backup_runs_it_waits_for_it(db, check):
    """A start would fail on pgBackRest's lock, and the running backup bounds the WAL: a real
    backup is started and frozen (SIGSTOP, its lock held) while the check runs."""
    write_wal(db, 40)  # enough data that the backup lasts well past its lock
    backup = subprocess.Popen(
        ["pgbackrest", "--stanza=" + db.stanza, "--type=full", "backup"],
        env={**os.environ, "PGBACKREST_CONFIG": str(db.config)},
        user=service_user(), group=service_user(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: _lock_held(db), timeout=60, what="the backup to hold its lock")
        os.killpg(backup.pid, signal.SIGSTOP)  # frozen, the lock still held
        try:
            held = check("--min-interval", "0")
        finally:
            os.killpg(backup.pid, signal.SIGCONT)
    finally:
        assert backup.wait(timeout=300) == 0
    assert held.ok, held.stderr
    assert "over the budget" in held.stdout and "a backup is running" in held.stdout, held.stdout
    assert not check.request.exists()
    assert "within the budget" in check("--min-interval", "0", budget="64MiB").stdout


def _lock_held(db: LocalBackedUpDb) -> bool:
    info = json.loads(db.target.pgbackrest("info", "--output=json").stdout)[0]
    return info["status"]["lock"]["backup"]["held"]


def test_a_dry_run_says_what_it_would_do_and_writes_nothing(db, check):
    write_wal(db, 2)
    done = check("--dry-run", "--min-interval", "0")
    assert done.ok, done.stderr
    assert done.stdout.startswith("pgbackrest-wal-budget (dry run): ")
    assert "asking for an incremental backup" in done.stdout
    assert not check.request.exists() and not check.figures.exists()


def test_a_server_it_cannot_reach_fails_the_check_and_asks_nothing(db, check):
    done = check("--min-interval", "0", port=1)
    assert done.returncode == 1
    assert "failed" in done.stderr and "nothing was asked for" in done.stderr, done.stderr
    assert not check.request.exists() and not check.figures.exists()


def test_a_repository_it_cannot_read_fails_the_check_and_asks_nothing(db, check):
    """A backup asked for would fail as well: the check says what pgBackRest said."""
    empty = check.place / "empty-repo"  # a repository without the stanza
    empty.mkdir()
    wrong = check.place / "other.conf"
    wrong.write_text(re.sub(r"(?m)^repo1-path=.*$", f"repo1-path={empty}", db.config.read_text()))
    wrong.chmod(0o644)
    done = LocalExecutor().run(
        [PYTHON, check.render("1MiB", None, None), "--min-interval", "0"],
        user=service_user(),
        env={"PGBACKREST_CONFIG": str(wrong), "PATH": os.environ["PATH"]},
        check=False,
    )
    assert done.returncode == 1, done.stdout
    assert "pgbackrest info: stanza spark:" in done.stderr and "nothing was asked for" in (
        done.stderr
    ), done.stderr
    assert not check.request.exists() and not check.figures.exists()


def test_a_budget_it_cannot_read_is_refused_before_anything(db, check):
    done = check("--budget", "lots")
    assert done.returncode == 2
    assert "is not a size: write it as 512MiB, 2GiB or a byte count" in done.stderr
    assert not check.request.exists() and not check.figures.exists()


def metric_runner(check, tmp_path: Path, pgbackrest_config: str):
    """Run the backup-time metric script (as the units install it) on the check's figures,
    with pgBackRest's configuration `pgbackrest_config`; read what it published."""
    script = tmp_path / "backup-metric"
    script.write_text(pgbackrest.backup_metric_script(
        user=service_user() or "postgres", textfile_dir=str(tmp_path / "textfile"),
        source_file=str(tmp_path / "no-source"), budget_file=str(check.figures),
    ))  # fmt: skip
    env = {**os.environ, "PGBACKREST_CONFIG": pgbackrest_config}

    def run(*args: str):
        return LocalExecutor().run([sys.executable, str(script), *args], env=env, check=False)

    def published() -> dict:
        text = (tmp_path / "textfile" / "pgbackrest.prom").read_text()
        return {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}

    run.published = published
    return run


def test_the_backup_time_metric_publishes_the_checks_figures(db, check, tmp_path):
    db.backup("incr")
    assert check(budget="64MiB").ok
    metric = metric_runner(check, tmp_path, str(db.config))
    done = metric()
    assert done.ok, done.stderr
    samples = metric.published()
    figures = json.loads(check.figures.read_text())
    assert samples[metric_names.PGBACKREST_WAL_BUDGET].value == 64 * MIB
    assert samples[metric_names.PGBACKREST_WAL_SINCE_BACKUP].value == figures["wal"]
    assert samples[metric_names.PGBACKREST_WAL_SINCE_BACKUP].labels == {"stanza": db.stanza}


def test_after_a_check_the_metric_takes_the_backup_time_from_its_figures(db, check, tmp_path):
    """One repository listing per check: run after the check (--after-check) the metric
    publishes the newest backup's time the check read, without asking pgBackRest again
    (here it could not: its configuration points nowhere); run after a backup it asks."""
    db.backup("incr")
    assert check(budget="64MiB").ok
    newest = max(
        b["timestamp"]["stop"]
        for b in json.loads(db.target.pgbackrest("info", "--output=json").stdout)[0]["backup"]
    )
    assert json.loads(check.figures.read_text())["newest_backup_stop"] == newest
    metric = metric_runner(check, tmp_path, str(tmp_path / "missing.conf"))
    done = metric("--after-check")
    assert done.ok, done.stderr
    samples = metric.published()
    assert samples[metric_names.PGBACKREST_LAST_BACKUP_TIMESTAMP].value == newest
    assert samples[metric_names.PGBACKREST_WAL_BUDGET].value == 64 * MIB
    after_backup = metric()
    assert not after_backup.ok and "pgbackrest info failed" in after_backup.stderr
