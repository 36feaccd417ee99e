"""The in-place restore's restore_command against a real pgBackRest: what the async
prefetch holds comes from its spool, anything else from the repository itself, at once.

pgBackRest 2.45's async archive-get can lose the race for its archive lock at a timeline
switch; the get that started it then waited out archive-timeout (60 s) and reported the
segment missing (seen in this suite: "unable to acquire lock on file ...-archive.lock" and a
minute-long "Wait for recovery to end"). Holding that lock here makes every async start
fail the same way, deterministically."""

from __future__ import annotations

import fcntl
import time
from pathlib import Path

import pytest

from runbooks import dbsteps, pitr, wal
from sparkops import defaults
from sparkops.wait import wait_until
from testkit.proc import chown_to_service_user, make_workdir

MISSING_SEGMENT = "0000009900000000000000FE"


def _run(db, command: str, segment: str, dest: Path):
    line = command.replace("%f", segment).replace("%p", str(dest))
    started = time.monotonic()
    result = db.target.executor.run(["sh", "-c", line], user=db.target.os_user, check=False)
    return result, time.monotonic() - started


@pytest.fixture
def segment(backed_db) -> str:
    backed_db.target.clear_archive_get_queue()  # nothing prefetched: the get must fetch it
    return wal.archived_segments(backed_db.target)[-1]


@pytest.fixture
def scratch() -> Path:
    path = make_workdir("restore-command")
    chown_to_service_user(path)
    return path


@pytest.fixture
def archive_lock_held(backed_db):
    """The stanza's archive lock held, as the async process that won the race holds it."""
    lock = backed_db.workdir / "lock" / f"{backed_db.stanza}-archive.lock"
    lock.touch()
    chown_to_service_user(lock)
    with open(lock, "rb+") as handle:

        def taken() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # an earlier test's prefetcher, finishing its queue
                return False
            return True

        wait_until(taken, timeout=30, what="the stanza's archive lock")
        yield
        fcntl.flock(handle, fcntl.LOCK_UN)


def _number(segment: str) -> int:
    """A segment's place in its timeline (16 MB segments: 256 per log file)."""
    return int(segment[8:16], 16) * 256 + int(segment[16:], 16)


def _spool(db) -> Path:
    return db.workdir / "spool" / "archive" / db.stanza / "in"


def test_a_segment_the_prefetch_holds_is_delivered_from_its_spool(backed_db, scratch):
    # Two consecutive segments of the current timeline (the archive may hold other
    # timelines' segments after earlier restores, which no prefetch of this one fetches).
    first, second = (
        dbsteps.archive_live_wal(backed_db.target, timeout=60).split("segment ")[1].rstrip(")")
        for _ in range(2)
    )
    assert (second[:8], _number(second)) == (first[:8], _number(first) + 1), (first, second)
    backed_db.target.clear_archive_get_queue()
    command = pitr.restore_command(backed_db.target)
    result, _ = _run(backed_db, command, first, scratch / "RECOVERYXLOG")
    assert result.ok, result.stderr
    # The get of the first segment started the prefetcher, which fetches ahead of replay.
    wait_until(lambda: (_spool(backed_db) / second).exists(), timeout=20, what="the prefetch")
    result, _ = _run(backed_db, command, second, scratch / "RECOVERYXLOG")
    assert result.ok, result.stderr
    assert (scratch / "RECOVERYXLOG").stat().st_size == 16 * 1024 * 1024
    assert not (_spool(backed_db) / second).exists()  # moved out of the spool: delivered from it


def test_a_segment_not_prefetched_yet_comes_from_the_repository(backed_db, segment, scratch):
    command = pitr.restore_command(backed_db.target)
    result, seconds = _run(backed_db, command, segment, scratch / "RECOVERYXLOG")
    assert result.ok, result.stderr
    assert (scratch / "RECOVERYXLOG").stat().st_size == 16 * 1024 * 1024
    # The async get gives up after its short wait; never a "missing" for a segment that
    # exists. (How much sooner than the async polling: bench/restore_schedule.py.)
    assert seconds < defaults.ARCHIVE_TIMEOUT_SECONDS / 6, seconds


def test_a_segment_the_prefetch_cannot_deliver_comes_from_the_repository(
    backed_db, segment, scratch, archive_lock_held
):
    command = pitr.restore_command(backed_db.target)
    result, seconds = _run(backed_db, command, segment, scratch / "RECOVERYXLOG")
    assert result.ok, result.stderr
    assert (scratch / "RECOVERYXLOG").stat().st_size == 16 * 1024 * 1024
    # It fetched the segment itself after the short wait: not after the minute the async get
    # alone would have waited, and never a false "missing".
    assert seconds < defaults.ARCHIVE_TIMEOUT_SECONDS / 6, seconds


def test_a_segment_missing_from_the_archive_is_reported_missing(backed_db, scratch):
    command = pitr.restore_command(backed_db.target)
    result, seconds = _run(backed_db, command, MISSING_SEGMENT, scratch / "RECOVERYXLOG")
    assert result.returncode == 1, (result.returncode, result.stderr)  # "not found" for recovery
    assert not (scratch / "RECOVERYXLOG").exists()
    assert seconds < defaults.ARCHIVE_TIMEOUT_SECONDS / 6, seconds
