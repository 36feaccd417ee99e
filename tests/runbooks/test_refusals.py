"""Bad input and failed preconditions: each stops before any change (the postmaster, the
timeline and the ledger are as before) with exit code 2 and a message saying what is wrong
and what to do. --dry-run prints the plan and changes nothing; a "no" at the prompt changes
nothing."""

from __future__ import annotations

import contextlib
import json
import shutil

import pytest

from sparkops.wait import wait_until
from testkit.proc import chown_to_service_user, make_workdir
from tests.runbooks.conftest import ensure_account, sparkops, state, superuser, write_orders

FUTURE = "2099-01-01T00:00:00Z"


@pytest.fixture
def untouched(backed_db, ledger_app):
    ensure_account(backed_db)
    write_orders(ledger_app, "ledger-1", 2)
    before = state(backed_db)
    yield
    assert state(backed_db) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--time", FUTURE], "is in the future"),
        (["--time", "2020-01-01T00:00:00Z"], "is before the end of the oldest backup"),
        (["--time", "2026-11-29 08:00:00"], "has no time zone"),
        (["--time", "yesterday"], "is not a timestamp"),
        (["--lsn", "16B3748"], "is not an LSN"),
        (["--lsn", "0/1"], "is before the end of the oldest backup"),
        (["--lsn", "FFFF/0"], "is after the end of WAL"),
        (["--restore-point", "no-such-point"], "no restore point named 'no-such-point'"),
        (["--latest", "--stanza", "nosuch"], "stanza 'nosuch'"),
    ],
)
def test_refused_before_any_change(untouched, target_file, tmp_path, args, message):
    run = sparkops("restore", "--target-file", str(target_file), *args, "--yes",
                   "--evidence-dir", str(tmp_path / "ev"))  # fmt: skip
    assert run.exit_code == 2, run.output
    assert message in run.output
    assert "what to do:" in run.output and "nothing was changed" in run.output
    assert not (tmp_path / "ev").exists()  # no evidence folder: nothing was done


def test_unreachable_repository(untouched, backed_db, target_file, tmp_path):
    spec = json.loads(target_file.read_text())
    conf = make_workdir("conf") / "elsewhere.conf"  # readable by the postgres user
    text = backed_db.config.read_text().replace(
        str(backed_db.workdir / "repo"), "/nonexistent/sparkops-repo"
    )
    conf.write_text(text)
    chown_to_service_user(conf)
    spec["pgbackrest_config"] = str(conf)
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(spec))
    run = sparkops("restore", "--target-file", str(moved), "--latest", "--yes")
    assert run.exit_code == 2, run.output
    assert "stanza 'spark'" in run.output and "repository" in run.output
    shutil.rmtree(conf.parent)


def test_unknown_host(tmp_path, monkeypatch):
    (tmp_path / "hosts.json").write_text(json.dumps([{"name": "db", "ip": "10.213.0.10",
        "ssh_user": "root", "ssh_key": "k", "known_hosts": "kh", "groups": ["db"]}]))  # fmt: skip
    monkeypatch.setenv("SPARKOPS_LAB_DIR", str(tmp_path))
    run = sparkops("restore", "--host", "nosuch", "--latest", "--yes")
    assert run.exit_code == 2
    assert "unknown host 'nosuch'" in run.output and "has db" in run.output


def test_no_lab_up(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKOPS_LAB_DIR", str(tmp_path / "none"))
    run = sparkops("restore", "--latest", "--yes")
    assert run.exit_code == 2 and "no lab is up" in run.output


def test_exactly_one_target_kind(target_file):
    run = sparkops("restore", "--target-file", str(target_file), "--latest", "--lsn", "0/1")
    assert run.exit_code == 2 and "exactly one of" in run.output


def test_dry_run_prints_the_plan_and_changes_nothing(untouched, target_file, tmp_path):
    run = sparkops("restore", "--target-file", str(target_file), "--latest", "--dry-run",
                   "--evidence-dir", str(tmp_path / "ev"))  # fmt: skip
    assert run.exit_code == 0, run.output
    for part in ("backup set:", "timeline now:", "data loss:", "pgbackrest restore --delta",
                 "pause pgBouncer", "dry run: nothing was changed"):  # fmt: skip
        assert part in run.output, part
    assert not (tmp_path / "ev").exists()


def test_no_at_the_prompt_changes_nothing(untouched, target_file, tmp_path):
    run = sparkops("restore", "--target-file", str(target_file), "--latest",
                   "--evidence-dir", str(tmp_path / "ev"), input="n\n")  # fmt: skip
    assert run.exit_code == 3, run.output
    assert "not confirmed: nothing was changed" in run.output
    result = json.loads((next((tmp_path / "ev").iterdir()) / "result.json").read_text())
    assert result["outcome"] == "not-confirmed" and result["steps"] == []


def test_restore_point_name_is_checked(untouched, target_file):
    run = sparkops("restore-point", "create", "bad name;", "--target-file", str(target_file))
    assert run.exit_code == 2 and "is not usable" in run.output


def _archived_now(db) -> str:
    """A segment with a transaction in it, switched out and archived; its name."""
    with superuser(db) as conn:
        conn.execute("SELECT txid_current()")
        name = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]

        def archived() -> bool:
            last = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0]
            return bool(last) and last[8:] >= name[8:]

        wait_until(archived, timeout=60, what=f"{name} to be archived")
    return name


@contextlib.contextmanager
def _segment_missing(db, tmp_path):
    """The middle one of three freshly archived segments moved out of the repository (a gap
    after the newest backup) for the block; its name is yielded, and it is put back after."""
    names = [_archived_now(db) for _ in range(3)]
    archive = db.workdir / "repo" / "archive"
    [held] = [p for p in archive.rglob(f"{names[1]}-*") if p.is_file()]
    moved = tmp_path / held.name
    shutil.move(held, moved)
    try:
        yield names[1]
    finally:
        shutil.move(moved, held)


@pytest.mark.parametrize("command", ["restore", "drill"])
def test_a_gap_in_the_archive_is_refused(untouched, backed_db, target_file, tmp_path, command):
    """WAL missing between the newest backup and the archive's end (a repository moved away
    and back): recovery would stop at the gap and lose every later commit without a word."""
    with _segment_missing(backed_db, tmp_path) as missing:
        words = ["--latest"] if command == "restore" else []
        run = sparkops(command, "--target-file", str(target_file), *words, "--yes")
        assert run.exit_code == 2, run.output
        assert "the archive is missing 1 WAL segment(s)" in run.output, run.output
        assert missing[8:] in run.output and "--type=full backup" in run.output
        assert "nothing was changed" in run.output


def test_a_copy_that_stopped_at_a_gap_fails_its_verification(
    untouched, backed_db, target_file, tmp_path, monkeypatch
):
    """Behind the plan's refusal, the verification: with the refusal taken away, the drill's
    copy ends its recovery at the gap, and the check that recovery reached the target fails."""
    from runbooks import pitr

    monkeypatch.setattr(pitr, "refuse_archive_gap", lambda *args: None)
    with _segment_missing(backed_db, tmp_path):
        run = sparkops("drill", "--target-file", str(target_file), "--yes")
        assert run.exit_code == 1, run.output
        assert "FAIL recovery reached the target" in run.output, run.output
        assert "WAL is missing from the archive" in run.output
