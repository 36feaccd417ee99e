"""PITR end to end on a real PostgreSQL archived by a real pgBackRest: a ledger of orders
written through the app, a moment recorded, more orders and a dropped table, then a restore
to that moment by time, by LSN and by restore point. Every order committed before the target
is back with the same checksum; none after it exists; the app keeps working through
pgBouncer, which the restore paused and resumed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import psycopg
import pytest

from testkit.proc import make_workdir
from tests.runbooks.conftest import (
    after_oldest_backup,
    ensure_account,
    existing,
    now_iso,
    result_json,
    snapshot,
    sparkops,
    superuser,
    write_orders,
)


def _disaster(db, server, account):
    """More orders after the target, then someone drops a table."""
    later = write_orders(server, account, 6)
    owner = db.stack.owner_conninfo()
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute("DROP TABLE trading_halts")
    return later


def _assert_restored(db, server, account, run, before, kept, lost, tmp_path):
    assert run.exit_code == 0, run.output
    result = result_json(run)
    assert result["outcome"] == "done", result["message"]
    # The restore's own checks report the values the ledger had at the target.
    assert result["facts"]["check_values"] == before
    assert snapshot(db) == before
    assert existing(db, kept) == set(kept)
    assert existing(db, lost) == set()
    with superuser(db) as conn:
        assert conn.execute("SELECT to_regclass('trading_halts')").fetchone()[0] is not None
    assert result["facts"]["timeline_after"] > result["facts"]["timeline_before"]
    # Recovery's settings did not stay behind in production's configuration files: an old
    # target there would apply again the day this server is made a standby.
    with superuser(db) as conn:
        left = conn.execute(
            "SELECT name, setting FROM pg_file_settings "
            "WHERE name = 'restore_command' OR name LIKE 'recovery_target%'"
        ).fetchall()
        assert left == []  # (the running value of a target stays until a restart: inert)
    # The evidence folder holds what the issue lists.
    evidence = tmp_path / "evidence"
    folder = next(evidence.iterdir())
    for name in ("plan.txt", "summary.md", "lsn.json", "pgbackrest-info.json",
                 "pgbackrest-info.txt", "verification.json", "result.json"):  # fmt: skip
        assert (folder / name).is_file(), name
    logs = sorted(p.name for p in (folder / "steps").iterdir())
    assert any("restore-pgbackrest-restore" in n for n in logs), logs
    assert (
        "pgbackrest" in (folder / "steps" / next(n for n in logs if "restore-pgb" in n)).read_text()
    )
    # The app's pooled connections went through the pause: it still takes orders.
    assert len(write_orders(server, account, 1)) == 1


def test_restore_to_time(backed_db, ledger_app, target_file, tmp_path):
    account = ensure_account(backed_db)
    after_oldest_backup(backed_db)
    kept = write_orders(ledger_app, account, 8)
    before = snapshot(backed_db)
    moment = now_iso()
    lost = _disaster(backed_db, ledger_app, account)
    run = sparkops("restore", "--target-file", str(target_file), "--time", moment, "--yes",
                   "--json", "--evidence-dir", str(tmp_path / "evidence"))  # fmt: skip
    _assert_restored(backed_db, ledger_app, account, run, before, kept, lost, tmp_path)


def test_restore_to_lsn(backed_db, ledger_app, target_file, tmp_path):
    account = ensure_account(backed_db)
    kept = write_orders(ledger_app, account, 8)
    before = snapshot(backed_db)
    with superuser(backed_db) as conn:
        # Insert position: with synchronous_commit off the write position can trail a commit.
        lsn = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
    lost = _disaster(backed_db, ledger_app, account)
    run = sparkops("restore", "--target-file", str(target_file), "--lsn", lsn, "--yes",
                   "--json", "--evidence-dir", str(tmp_path / "evidence"))  # fmt: skip
    _assert_restored(backed_db, ledger_app, account, run, before, kept, lost, tmp_path)


def test_restore_to_restore_point(backed_db, ledger_app, target_file, tmp_path):
    account = ensure_account(backed_db)
    kept = write_orders(ledger_app, account, 8)
    before = snapshot(backed_db)
    created = sparkops(
        "restore-point",
        "create",
        "before-migration-0011",
        "--target-file",
        str(target_file),
        "--json",
        "--evidence-dir",
        str(tmp_path / "rp"),
    )
    assert created.exit_code == 0, created.output
    assert result_json(created)["facts"]["lsn"].count("/") == 1
    lost = _disaster(backed_db, ledger_app, account)
    run = sparkops("restore", "--target-file", str(target_file), "--restore-point",
                   "before-migration-0011", "--yes", "--json",
                   "--evidence-dir", str(tmp_path / "evidence"))  # fmt: skip
    _assert_restored(backed_db, ledger_app, account, run, before, kept, lost, tmp_path)


@pytest.mark.parametrize("kind", ["latest"])
def test_restore_onto_a_copy_leaves_production_alone(backed_db, ledger_app, target_file,
                                                      tmp_path, kind):  # fmt: skip
    account = ensure_account(backed_db)
    write_orders(ledger_app, account, 4)
    before = snapshot(backed_db)
    pid = backed_db.stack.pg.pid()
    copy_dir = make_workdir("copy") / "data"
    run = sparkops("restore", "--target-file", str(target_file), f"--{kind}", "--to-data-dir",
                   str(copy_dir), "--to-port", "0", "--yes", "--json",
                   "--evidence-dir", str(tmp_path / "evidence"))  # fmt: skip
    try:
        assert run.exit_code == 0, run.output
        result = result_json(run)
        # The copy has everything committed before the restore; production did not restart.
        assert result["facts"]["check_values"] == before
        assert backed_db.stack.pg.pid() == pid and snapshot(backed_db) == before
        assert "--archive-mode=off" in result["facts"]["pgbackrest_options"]
        # The copy fetches WAL without the live cluster's archive lock and spool: pgBackRest
        # carried the option into the copy's restore_command.
        owner = "postgres" if os.geteuid() == 0 else None
        auto = subprocess.run(["cat", f"{copy_dir}/postgresql.auto.conf"], capture_output=True,
                              text=True, check=True, user=owner)  # fmt: skip
        [command] = [
            line for line in auto.stdout.splitlines() if line.startswith("restore_command")
        ]
        assert "--archive-async=n" in command and "archive-get" in command
        # It ends saying where the copy runs and the one command that removes it, which
        # removes what the run made and nothing beside it.
        undo = result["undo"]
        assert f"to remove it: {undo}" in run.output, run.output
        assert "kept: the copy's PostgreSQL: running, port" in run.output
        assert subprocess.run(["sh", "-c", undo], timeout=120).returncode == 0
        assert sorted(os.listdir(copy_dir.parent)) == []
    finally:
        from runbooks.executor import LocalExecutor
        from runbooks.services import PgCtlService

        PgCtlService(LocalExecutor(), str(copy_dir), str(copy_dir) + ".log").stop()
        shutil.rmtree(copy_dir.parent, ignore_errors=True)


def test_a_failed_restore_says_so_resumes_pgbouncer_and_can_be_run_again(
    backed_db, ledger_app, target_file, tmp_path
):
    account = ensure_account(backed_db)
    write_orders(ledger_app, account, 2)
    before = snapshot(backed_db)
    # A timeline that does not exist: PostgreSQL refuses to start from the restored files.
    failed = sparkops("restore", "--target-file", str(target_file), "--latest",
                      "--target-timeline", "99", "--yes", "--json",
                      "--evidence-dir", str(tmp_path / "failed"))  # fmt: skip
    assert failed.exit_code == 1, failed.output
    assert "FAILED" in failed.output and "STATE LEFT:" in failed.output
    result = result_json(failed)
    assert result["outcome"] == "failed"
    assert [s["name"] for s in result["steps"] if not s["ok"]] == ["Start PostgreSQL"]
    assert result["steps"][-1]["name"] == "Resume pgBouncer (cleanup)"
    assert result["steps"][-1]["ok"]
    assert "pgBouncer on local: not paused" in result["state_after"][0]
    assert "partly or fully restored, now down" in result["state_after"][1]
    # The one command that finishes the job is the same command, printed last.
    assert result["undo"].startswith("sparkops restore --target-file")
    assert failed.stderr.rstrip().splitlines()[-1].startswith("TO UNDO: sparkops restore")
    paused = {row[0]: row for row in backed_db.stack.bouncer.admin("SHOW DATABASES")}
    assert paused["spark"][-2] == 0  # SHOW DATABASES: ..., paused, disabled
    folder = next((tmp_path / "failed").iterdir())
    assert json.loads((folder / "lsn.json").read_text())["lsn_sealed"]
    # The same restore without the bad option puts everything back.
    again = sparkops("restore", "--target-file", str(target_file), "--latest", "--yes",
                     "--json", "--evidence-dir", str(tmp_path / "again"))  # fmt: skip
    assert again.exit_code == 0, again.output
    assert snapshot(backed_db) == before
    assert len(write_orders(ledger_app, account, 1)) == 1
