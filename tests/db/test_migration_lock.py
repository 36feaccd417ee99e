"""Schema migrations run once at a time (an advisory lock): two app hosts migrating in one
deploy run one after the other, the second finds the schema at head, and a waiter never
deadlocks with the holder's CREATE INDEX CONCURRENTLY."""

from __future__ import annotations

import threading

import psycopg
import pytest

from app import migrate
from sparkops import defaults
from sparkops.wait import wait_until
from tests.db.test_migrations import fresh_db, index_state  # noqa: F401 - a fixture

HEAD = migrate.head()


def _in_thread(fn, results: dict, name: str) -> threading.Thread:
    def run():
        try:
            results[name] = fn()
        except BaseException as exc:  # reported by the test
            results[name] = exc

    thread = threading.Thread(target=run, name=name)
    thread.start()
    return thread


def _migrate_sessions(watcher: psycopg.Connection) -> int:
    return watcher.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
        "AND datname = current_database()",
        (migrate.APPLICATION_NAME,),
    ).fetchone()[0]


def test_two_concurrent_upgrades_migrate_once_and_the_second_finds_head(fresh_db):  # noqa: F811
    with psycopg.connect(fresh_db, autocommit=True) as setup:
        setup.execute("INSERT INTO accounts (id, name) VALUES ('a1', 'A')")
    # An open write makes the first upgrade's CREATE INDEX CONCURRENTLY wait, so the second
    # upgrade starts while the first holds the lock in the middle of its index build.
    holder = psycopg.connect(fresh_db)
    holder.execute("INSERT INTO positions (account_id, symbol, quantity, avg_entry_price) "
                   "VALUES ('a1', 'ETHUSDT', 1, 1)")  # fmt: skip
    results: dict = {}
    threads = []
    try:
        with psycopg.connect(fresh_db, autocommit=True) as watcher:
            threads.append(_in_thread(lambda: migrate.upgrade(fresh_db), results, "first"))
            wait_until(
                lambda: watcher.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE query ILIKE 'CREATE UNIQUE INDEX%%' "
                    "AND wait_event_type = 'Lock'"
                ).fetchone(),
                timeout=30,
                what="the first upgrade's index build to wait for the open write",
            )
            threads.append(_in_thread(lambda: migrate.upgrade(fresh_db), results, "second"))
            # The first's lock and migration sessions, and the second's lock session.
            wait_until(
                lambda: _migrate_sessions(watcher) >= 3,
                timeout=30,
                what="the second upgrade to wait for the migration lock",
            )
            assert "second" not in results  # it is waiting, not done
    finally:
        holder.commit()
        holder.close()
        for thread in threads:
            thread.join(timeout=60)
    first, second = results["first"], results["second"]
    assert isinstance(first, migrate.Upgraded), first
    assert isinstance(second, migrate.Upgraded), second
    assert (first.before, first.after) == ("0001_initial", HEAD)
    assert (second.before, second.after) == (HEAD, HEAD)
    assert second.waited_seconds > 0
    assert second.describe().startswith(f"schema already at {HEAD} after waiting")
    assert first.describe() == f"schema migrated from 0001_initial to {HEAD}"
    with psycopg.connect(fresh_db) as conn:
        assert index_state(conn) == (True,)
        # No migration session is left behind holding the lock.
        assert _migrate_sessions(conn) == 0


def test_an_upgrade_that_cannot_get_the_lock_names_the_holder_and_changes_nothing(
    fresh_db,  # noqa: F811
):
    with psycopg.connect(fresh_db, autocommit=True, application_name="stuck-migrator") as other:
        other.execute("SELECT pg_advisory_lock(%s)", (defaults.MIGRATION_LOCK_KEY,))
        pid = other.info.backend_pid
        with pytest.raises(migrate.MigrationLockTimeout) as info:
            migrate.upgrade(fresh_db, lock_wait_seconds=1)
    message = str(info.value)
    assert f"pid {pid} (stuck-migrator" in message
    assert "nothing was changed" in message and "pg_terminate_backend" in message
    assert migrate.current(fresh_db) == "0001_initial"
