"""How a restore's recovery ends, on a real PostgreSQL archived by a real pgBackRest.

When the plan knows the server runs hot standby, recovery ends by a promotion request: a
--latest restore runs as a standby that, asked, replays everything archived and opens; a
target pauses there and the request ends the pause. The end-of-recovery checkpoint then
runs in the background instead of before the server opens, and the runbook ends with a
checkpoint of its own, so a backup taken right after the restore works. With the server down
the plan reads the setting from its configuration (`postgres -C`). Without hot standby (a
pause would be a shutdown) or when it cannot be read, recovery ends by itself as PostgreSQL
does by default.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbooks import bouncer, restoring, sites
from runbooks.checklist import StepFailed
from sparkops.wait import wait_until
from testkit.localdb import LocalBackedUpDb
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

PROMOTED = "received promote request"
SELF_ENDED = "checkpoint starting: end-of-recovery immediate wait"


def _log_after(db: LocalBackedUpDb, offset: int) -> str:
    return Path(db.stack.pg.logfile).read_bytes()[offset:].decode(errors="replace")


def _log_size(db: LocalBackedUpDb) -> int:
    return Path(db.stack.pg.logfile).stat().st_size


def _restore(target_file, tmp_path, *target: str):
    run = sparkops("restore", "--target-file", str(target_file), *target, "--yes", "--json",
                   "--evidence-dir", str(tmp_path / "evidence"))  # fmt: skip
    assert run.exit_code == 0, run.output
    return result_json(run)


def _steps(result) -> list[str]:
    return [s["name"] for s in result["steps"]]


def _backup_right_after(db: LocalBackedUpDb) -> None:
    """pgBackRest refuses a backup while pg_control still names the old timeline."""
    result = db.target.pgbackrest("backup", "--type=incr", timeout=300, check=False)
    assert result.ok, result.output()


def test_latest_ends_by_promotion_and_a_backup_can_follow(
    backed_db, ledger_app, target_file, tmp_path
):
    account = ensure_account(backed_db)
    kept = write_orders(ledger_app, account, 3)
    before = snapshot(backed_db)
    offset = _log_size(backed_db)
    result = _restore(target_file, tmp_path, "--latest")
    assert "--type=standby" in result["facts"]["pgbackrest_options"]
    steps = _steps(result)
    assert steps.index(restoring.PROMOTE_STEP) < steps.index(restoring.RECOVERY_STEP)
    assert restoring.CHECKPOINT_STEP in steps
    assert any("pg_promote" in line for line in result["plan"]), result["plan"]
    log = _log_after(backed_db, offset)
    assert PROMOTED in log and SELF_ENDED not in log, log[-3000:]
    # Everything archived was replayed before the promotion took effect.
    assert snapshot(backed_db) == before
    assert existing(backed_db, kept) == set(kept)
    assert backed_db.target.role() == "primary"
    # standby.signal went with the promotion: a restart stays a primary.
    assert not (Path(backed_db.target.data_dir) / "standby.signal").exists()
    _backup_right_after(backed_db)
    assert len(write_orders(ledger_app, account, 1)) == 1


def test_a_time_target_pauses_there_and_the_request_ends_the_pause(
    backed_db, ledger_app, target_file, tmp_path
):
    account = ensure_account(backed_db)
    after_oldest_backup(backed_db)
    kept = write_orders(ledger_app, account, 3)
    before = snapshot(backed_db)
    moment = now_iso()
    lost = write_orders(ledger_app, account, 3)
    offset = _log_size(backed_db)
    result = _restore(target_file, tmp_path, "--time", moment)
    assert "--target-action=pause" in result["facts"]["pgbackrest_options"]
    log = _log_after(backed_db, offset)
    assert PROMOTED in log and SELF_ENDED not in log, log[-3000:]
    assert snapshot(backed_db) == before
    assert existing(backed_db, kept) == set(kept)
    assert existing(backed_db, lost) == set()
    checks = {c["name"]: c["ok"] for c in result["checks"]}
    assert checks["checkpoint on the new timeline (a backup can be taken)"], result["checks"]
    _backup_right_after(backed_db)


def test_with_the_server_down_hot_standby_is_read_from_its_configuration(
    backed_db, ledger_app, target_file, tmp_path
):
    """The disaster case (the primary down): the plan reads the stopped server's hot_standby
    with `postgres -C`, so the restore still ends by a promotion request."""
    account = ensure_account(backed_db)
    kept = write_orders(ledger_app, account, 2)
    before = snapshot(backed_db)
    backed_db.target.service.stop()
    offset = _log_size(backed_db)
    result = _restore(target_file, tmp_path, "--latest")
    assert "--type=standby" in result["facts"]["pgbackrest_options"]
    assert any("pg_promote" in line for line in result["plan"]), result["plan"]
    steps = _steps(result)
    assert steps.index(restoring.PROMOTE_STEP) < steps.index(restoring.RECOVERY_STEP)
    assert restoring.CHECKPOINT_STEP in steps
    log = _log_after(backed_db, offset)
    assert PROMOTED in log and SELF_ENDED not in log, log[-3000:]
    assert snapshot(backed_db) == before
    assert existing(backed_db, kept) == set(kept)
    _backup_right_after(backed_db)


def test_with_the_server_down_and_hot_standby_unreadable_recovery_ends_by_itself(
    backed_db, ledger_app, target_file, tmp_path, monkeypatch
):
    """`postgres -C` fails (a broken configuration, a missing binary): the plan says so and
    keeps the recovery that ends by itself."""
    from runbooks.services import PgCtlService

    account = ensure_account(backed_db)
    write_orders(ledger_app, account, 2)
    before = snapshot(backed_db)
    backed_db.target.service.stop()
    monkeypatch.setattr(PgCtlService, "configured_setting", lambda self, name: None)
    offset = _log_size(backed_db)
    result = _restore(target_file, tmp_path, "--latest")
    assert "--type=default" in result["facts"]["pgbackrest_options"]
    assert any(
        "its hot_standby could not be read from its configuration" in ln for ln in result["plan"]
    ), result["plan"]
    steps = _steps(result)
    assert restoring.PROMOTE_STEP not in steps and restoring.CHECKPOINT_STEP not in steps
    log = _log_after(backed_db, offset)
    assert SELF_ENDED in log and PROMOTED not in log, log[-3000:]
    assert snapshot(backed_db) == before
    checks = {c["name"]: c["ok"] for c in result["checks"]}
    assert checks["checkpoint on the new timeline (a backup can be taken)"], result["checks"]
    _backup_right_after(backed_db)


@pytest.fixture
def no_hot_standby():
    db = LocalBackedUpDb(extra_settings={"hot_standby": "off"}).start()
    try:
        yield db
    finally:
        db.stop()


def test_without_hot_standby_a_target_is_not_paused(no_hot_standby, tmp_path):
    """A pause without hot standby is a shutdown: the plan keeps the self-ending recovery."""
    db = no_hot_standby
    with superuser(db) as conn:
        conn.execute("CREATE TABLE marks (n int)")
        conn.execute("INSERT INTO marks VALUES (1)")
    after_oldest_backup(db)
    moment = now_iso()
    with superuser(db) as conn:
        conn.execute("INSERT INTO marks VALUES (2)")
    target_file = tmp_path / "target.json"
    target_file.write_text(json.dumps(sites.target_file_spec(db.target)))
    offset = _log_size(db)
    result = _restore(target_file, tmp_path, "--time", moment)
    assert "--target-action=promote" in result["facts"]["pgbackrest_options"]
    assert any("hot_standby is off, so it cannot" in ln for ln in result["plan"])
    assert restoring.PROMOTE_STEP not in _steps(result)
    log = _log_after(db, offset)
    assert SELF_ENDED in log and PROMOTED not in log, log[-3000:]
    with superuser(db) as conn:
        assert [r[0] for r in conn.execute("SELECT n FROM marks ORDER BY n")] == [1]


def test_without_hot_standby_in_a_stopped_servers_configuration_recovery_ends_by_itself(
    no_hot_standby, tmp_path
):
    db = no_hot_standby
    with superuser(db) as conn:
        conn.execute("CREATE TABLE marks (n int)")
        conn.execute("INSERT INTO marks VALUES (1)")
    db.target.service.stop()
    target_file = tmp_path / "target.json"
    target_file.write_text(json.dumps(sites.target_file_spec(db.target)))
    result = _restore(target_file, tmp_path, "--latest")
    assert "--type=default" in result["facts"]["pgbackrest_options"]
    assert any(
        "hot_standby is off in the stopped server's configuration, so it cannot" in ln
        for ln in result["plan"]
    ), result["plan"]
    assert restoring.PROMOTE_STEP not in _steps(result)
    with superuser(db) as conn:
        assert [r[0] for r in conn.execute("SELECT n FROM marks ORDER BY n")] == [1]


def test_a_request_lost_on_the_way_is_sent_by_the_cleanup(
    backed_db, ledger_app, target_file, tmp_path, monkeypatch
):
    """The run dies between the start and the request (here: the request's connection is
    lost): the cleanup sends it, so the restored server does not stay read-only."""
    account = ensure_account(backed_db)
    write_orders(ledger_app, account, 2)
    before = snapshot(backed_db)
    real, calls = restoring.request_promotion, []

    def lost_once(dest, timeout):
        calls.append(timeout)
        if len(calls) == 1:
            raise StepFailed("ssh: connection to db lost")
        return real(dest, timeout)

    monkeypatch.setattr(restoring, "request_promotion", lost_once)
    run = sparkops("restore", "--target-file", str(target_file), "--latest", "--yes", "--json",
                   "--evidence-dir", str(tmp_path / "evidence"))  # fmt: skip
    assert run.exit_code == 1, run.output
    result = result_json(run)
    failed = [s["name"] for s in result["steps"] if not s["ok"]]
    assert failed == [restoring.PROMOTE_STEP], result["steps"]
    cleanup = [s for s in result["steps"] if s["name"] == f"{restoring.PROMOTE_STEP} (cleanup)"]
    assert cleanup and cleanup[0]["ok"], result["steps"]
    assert len(calls) == 2
    # Still replaying, or done already (a small backlog): either way, said so.
    said = " ".join(result["state_after"])
    assert "recovery ends by itself" in said or "recovery has ended" in said, said
    if "recovery ends by itself" in said:  # not serving yet: the one command is printed
        assert result["undo"].startswith("sparkops restore"), result
    # Nobody does anything more: the server ends recovery and serves what was archived.
    wait_until(lambda: backed_db.target.role() == "primary", timeout=120, what="a primary")
    assert snapshot(backed_db) == before
    assert not bouncer.is_paused(backed_db.target)
