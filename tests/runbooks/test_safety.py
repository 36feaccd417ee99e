"""The runbooks never hurt the database they protect (issue 9), on a real PostgreSQL archived
by a real pgBackRest behind a real pgBouncer:

- a drill (or a restore onto a copy) refuses, before anything is made, a scratch directory
  that is, contains or sits inside a data directory (symlinks resolved), another cluster's
  directory, a directory that is not empty, a file, or a port in use; production keeps its
  postmaster, timeline and ledger, and the refused path is as it was;
- a drill into an empty directory given by the operator leaves that directory in place;
- PAUSE is bounded: a client idle in a transaction makes the restore refuse after the wait,
  naming the client, with pgBouncer resumed; with --disconnect-blockers the restore goes on.
"""

from __future__ import annotations

import json
import os
import time

import psycopg
import pytest

from runbooks import bouncer
from sparkops import defaults
from testkit.proc import chown_to_service_user, make_workdir
from tests.runbooks.conftest import ensure_account, result_json, sparkops, state, write_orders


@pytest.fixture
def untouched(backed_db, ledger_app):
    ensure_account(backed_db)
    write_orders(ledger_app, "ledger-1", 2)
    before = state(backed_db)
    yield
    assert state(backed_db) == before
    assert not bouncer.is_paused(backed_db.target)


def _drill(target_file, scratch: str, *extra: str, evidence=None):
    words = ["drill", "--target-file", str(target_file), "--scratch-dir", scratch, "--yes"]
    if "--scratch-port" not in extra:
        words += ["--scratch-port", "0"]
    if evidence:
        words += ["--evidence-dir", str(evidence)]
    return sparkops(*words, *extra)


def _listing(path: str) -> list[str]:
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def _scratch_variants(backed_db, db_stack, tmp_path) -> dict[str, tuple[str, str]]:
    data = str(backed_db.stack.pg.datadir)
    link = tmp_path / "link-to-data"
    link.symlink_to(data)
    full = make_workdir("full")
    (full / "keep-me").write_text("operator's file\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    return {
        # The issue's own typo: the drill pointed at the cluster it protects.
        "the data directory": (data, "is the data directory"),
        "a symlink to it": (str(link), "resolves to"),
        "its parent": (os.path.dirname(data), "contains the data directory"),
        "a directory inside it": (f"{data}/base/scratch", "is inside the data directory"),
        "a trailing-slash spelling": (data + "/", "is the data directory"),
        "another cluster's directory": (str(db_stack.pg.datadir), "is the data directory"),
        "a directory that is not empty": (str(full), "is not empty"),
        "a file": (str(a_file), "is not a directory"),
    }


@pytest.mark.parametrize(
    "variant",
    [
        "the data directory",
        "a symlink to it",
        "its parent",
        "a directory inside it",
        "a trailing-slash spelling",
        "another cluster's directory",
        "a directory that is not empty",
        "a file",
    ],
)
def test_drill_refuses_a_scratch_dir_that_is_not_its_own(
    untouched, backed_db, db_stack, target_file, tmp_path, variant
):
    path, message = _scratch_variants(backed_db, db_stack, tmp_path)[variant]
    before = _listing(path)
    run = _drill(target_file, path, evidence=tmp_path / "ev")
    assert run.exit_code == 2, run.output
    assert "REFUSED" in run.output and message in run.output, run.output
    assert "nothing was changed" in run.output
    assert not (tmp_path / "ev").exists()  # refused in the plan phase: no run began
    assert _listing(path) == before  # the path is exactly as it was


def test_drill_refuses_a_port_in_use(untouched, backed_db, target_file, tmp_path):
    parent = make_workdir("drill-port")
    run = _drill(target_file, f"{parent}/data", "--scratch-port", str(backed_db.stack.pg.port))
    parent.rmdir()  # refused: nothing was made in it
    assert run.exit_code == 2, run.output
    assert f"port {backed_db.stack.pg.port} is in use" in run.output


def test_restore_onto_a_copy_refuses_the_live_data_directory(untouched, backed_db, target_file):
    live = str(backed_db.stack.pg.datadir)
    run = sparkops("restore", "--target-file", str(target_file), "--latest",
                   "--to-data-dir", live, "--to-port", "0", "--yes")  # fmt: skip
    assert run.exit_code == 2, run.output
    assert "--to-data-dir" in run.output and "is the data directory" in run.output


def test_drill_into_an_operators_empty_directory_leaves_the_directory(
    untouched, backed_db, target_file, tmp_path
):
    empty = make_workdir("empty")
    run = _drill(target_file, str(empty), "--json", evidence=tmp_path / "ev")
    assert run.exit_code == 0, run.output
    assert empty.is_dir() and _listing(str(empty)) == []  # emptied, not removed
    assert not os.path.exists(f"{empty}.log")  # the copy's log was this run's: removed
    result = result_json(run)
    assert any("removed" in line for line in result["state_after"]) or result["outcome"] == "done"
    empty.rmdir()


# --- PAUSE, bounded ----------------------------------------------------------------------
@pytest.fixture
def stuck_client(backed_db):
    """An app-role client through pgBouncer that began a transaction and waits."""
    conn = psycopg.connect(
        backed_db.stack.app_conninfo(), prepare_threshold=None, application_name="stuck-client"
    )
    conn.execute("SELECT 1")  # BEGIN implied: idle in transaction, holding a server
    yield conn
    conn.close()


def test_restore_refuses_when_pause_cannot_complete(untouched, stuck_client, target_file, tmp_path):
    started = time.monotonic()
    run = sparkops("restore", "--target-file", str(target_file), "--latest", "--yes",
                   "--pause-wait", "2", "--json",
                   "--evidence-dir", str(tmp_path / "ev"))  # fmt: skip
    seconds = time.monotonic() - started
    assert run.exit_code == 2, run.output
    assert "could not pause spark within 2 s" in run.output
    assert "spark_app (stuck-client)" in run.output and "idle in transaction" in run.output
    assert "--disconnect-blockers" in run.output and "pgBouncer was resumed" in run.output
    result = result_json(run)
    assert result["outcome"] == "refused"
    assert "pgBouncer on local: not paused" in result["state_after"][0]
    assert "PostgreSQL on local: not touched" in result["state_after"][1]
    assert seconds < 20, f"refused after {seconds:.1f} s with a 2 s pause wait"
    # The stuck client is not harmed: it can finish its transaction.
    stuck_client.execute("SELECT 2")
    stuck_client.rollback()


def test_restore_ends_the_blockers_when_asked(backed_db, ledger_app, stuck_client, target_file):
    ensure_account(backed_db)
    run = sparkops("restore", "--target-file", str(target_file), "--latest", "--yes",
                   "--pause-wait", "2", "--disconnect-blockers", "--json")  # fmt: skip
    assert run.exit_code == 0, run.output
    assert "ending 1 transaction(s) in the way" in run.output
    with pytest.raises(psycopg.OperationalError):
        stuck_client.execute("SELECT 2")
    assert not bouncer.is_paused(backed_db.target)
    assert len(write_orders(ledger_app, "ledger-1", 1)) == 1


def test_pgbouncer_resume_command_undoes_a_left_pause(backed_db, target_file, tmp_path):
    backed_db.stack.bouncer.admin("PAUSE spark")
    status = sparkops("pgbouncer", "status", "--target-file", str(target_file))
    assert status.exit_code == 1 and "PAUSED" in status.output
    run = sparkops("pgbouncer", "resume", "--target-file", str(target_file), "--json",
                   "--evidence-dir", str(tmp_path / "ev"))  # fmt: skip
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["facts"]["paused_before"] is True
    assert not bouncer.is_paused(backed_db.target)
    again = sparkops("pgbouncer", "resume", "--target-file", str(target_file))
    assert again.exit_code == 0  # idempotent


@pytest.fixture(autouse=True)
def _scratch_parent_owned(tmp_path):
    chown_to_service_user(tmp_path)


def test_an_idle_client_is_cut_off_and_the_default_pause_completes(
    backed_db, ledger_app, stuck_client, target_file
):
    """The issue's outage: one app-role client idle in a transaction. PostgreSQL ends it at
    the app role's idle-in-transaction bound, inside the default PAUSE wait, and the restore
    goes on; pgBouncer is paused for about that long, never open-ended."""
    ensure_account(backed_db)
    run = sparkops("restore", "--target-file", str(target_file), "--latest", "--yes", "--json")
    assert run.exit_code == 0, run.output
    pause = next(s for s in result_json(run)["steps"] if s["name"] == "Pause pgBouncer")
    assert pause["seconds"] > defaults.APP_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS - 1
    assert pause["seconds"] < bouncer.DEFAULT_PAUSE_WAIT_SECONDS
    with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
        stuck_client.execute("SELECT 2")  # cut off by PostgreSQL, not by the runbook
    assert not bouncer.is_paused(backed_db.target)
    assert len(write_orders(ledger_app, "ledger-1", 1)) == 1
