"""The restore's waits for a restored server (runbooks.dbsteps), against a real PostgreSQL:
a poll is one command while the server answers (one SSH round trip on a host), and a server
that has stopped ends the wait at once, not at its deadline."""

from __future__ import annotations

import time

import pytest

from runbooks import dbsteps
from runbooks.checklist import StepFailed


@pytest.fixture
def commands(backed_db):
    seen: list[str] = []
    recorders = backed_db.target.executor.recorders
    recorders.append(lambda result: seen.append(result.shown))
    yield seen
    recorders.pop()


def test_a_server_out_of_recovery_is_seen_by_one_query(backed_db, commands):
    dbsteps.wait_for_promotion(backed_db.target, timeout=30)
    assert len(commands) == 1 and "pg_is_in_recovery" in commands[0], commands


def test_a_promotion_request_to_a_server_out_of_recovery_is_one_query(backed_db, commands):
    assert dbsteps.request_promotion(backed_db.target, timeout=30) is False
    assert len(commands) == 1 and "pg_promote" in commands[0], commands


@pytest.mark.parametrize("wait", [dbsteps.wait_for_promotion, dbsteps.request_promotion])
def test_a_server_that_stopped_ends_the_wait_at_once(backed_db, commands, wait):
    service = backed_db.target.service
    service.stop()
    commands.clear()
    try:
        started = time.monotonic()
        with pytest.raises(StepFailed, match="PostgreSQL stopped during recovery"):
            wait(backed_db.target, timeout=120)
        assert time.monotonic() - started < 30
        # The failed query, then the question that told "stopped" from "still starting".
        assert len(commands) >= 2 and "psql" in commands[0], commands
    finally:
        service.start()
