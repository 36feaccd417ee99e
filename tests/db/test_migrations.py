"""Migrations against a real PostgreSQL: duplicate report, non-blocking index build."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from app import migrate
from sparkops import dbroles, defaults
from sparkops.wait import wait_until
from testkit.postgres import conninfo

INDEX = "positions_one_open_per_account_symbol_strategy"


@pytest.fixture
def fresh_db(db_stack):
    """A new database in the test cluster, set up like production, migrated to 0001."""
    name = f"mig_{uuid.uuid4().hex[:8]}"
    pg = db_stack.pg
    with psycopg.connect(pg.superuser_conninfo(), autocommit=True) as conn:
        conn.execute(dbroles.create_database_sql(name))
    with psycopg.connect(pg.superuser_conninfo(name), autocommit=True) as conn:
        for stmt in dbroles.privilege_statements(name):
            conn.execute(stmt)
    owner = conninfo(pg.host, pg.port, defaults.ROLE_MIGRATIONS,
                     db_stack.passwords.migrations, name)  # fmt: skip
    migrate.upgrade(owner, "0001_initial")
    yield owner
    with psycopg.connect(pg.superuser_conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def add_position(conn, account="a1", symbol="BTCUSDT", strategy=None):
    conn.execute(
        "INSERT INTO positions (account_id, symbol, strategy, quantity, avg_entry_price) "
        "VALUES (%s, %s, %s, 1, 100)",
        (account, symbol, strategy),
    )


def index_state(conn):
    return conn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = %s",
        (INDEX,),
    ).fetchone()


def test_duplicates_are_listed_and_nothing_is_built(fresh_db):
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("INSERT INTO accounts (id, name) VALUES ('a1', 'A'), ('a2', 'B')")
        add_position(conn)  # manual (NULL strategy) twice: a duplicate
        add_position(conn)
        add_position(conn, strategy="grid")  # one per strategy: fine
        add_position(conn, account="a2", strategy="grid")
        add_position(conn, account="a2", strategy="grid")
    with pytest.raises(Exception, match="2 \\(account, symbol, strategy\\) group") as info:
        migrate.upgrade(fresh_db)
    message = str(info.value)
    assert "account=a1 symbol=BTCUSDT strategy=(manual) open=2 ids=[1, 2]" in message
    assert "account=a2 symbol=BTCUSDT strategy=grid open=2 ids=[4, 5]" in message
    assert "Nothing was changed" in message
    with psycopg.connect(fresh_db) as conn:
        assert index_state(conn) is None
    assert migrate.current(fresh_db) == "0001_initial"


def test_index_makes_manual_positions_unique_and_closed_ones_free(fresh_db):
    migrate.upgrade(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("INSERT INTO accounts (id, name) VALUES ('a1', 'A')")
        add_position(conn)
        with pytest.raises(psycopg.errors.UniqueViolation):
            add_position(conn)  # NULL strategy is not distinct
        add_position(conn, strategy="grid")
        conn.execute("UPDATE positions SET status = 'closed', closed_at = now()")
        add_position(conn)  # closed positions do not count
        add_position(conn, strategy="grid")


def test_index_build_does_not_block_writes(fresh_db):
    with psycopg.connect(fresh_db, autocommit=True) as setup:
        setup.execute("INSERT INTO accounts (id, name) VALUES ('a1', 'A')")
    # An open writing transaction makes CREATE INDEX CONCURRENTLY wait for it. A plain
    # CREATE INDEX would queue a SHARE lock here, and every later INSERT behind it.
    holder = psycopg.connect(fresh_db)
    holder.execute("INSERT INTO positions (account_id, symbol, quantity, avg_entry_price) "
                   "VALUES ('a1', 'ETHUSDT', 1, 1)")  # fmt: skip
    errors: list[BaseException] = []

    def run():
        try:
            migrate.upgrade(fresh_db)
        except BaseException as exc:
            errors.append(exc)

    migration = threading.Thread(target=run)
    migration.start()
    try:
        with psycopg.connect(fresh_db, autocommit=True) as watcher:
            wait_until(
                lambda: watcher.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE query ILIKE 'CREATE UNIQUE INDEX%%' "
                    "AND wait_event_type = 'Lock'"
                ).fetchone(),
                timeout=10,
                what="the index build to wait for the open transaction",
            )
            with psycopg.connect(fresh_db, autocommit=True, options="-c lock_timeout=2s") as w:
                started = time.monotonic()
                add_position(w, symbol="SOLUSDT")  # would time out behind a SHARE lock
                assert time.monotonic() - started < 2
    finally:
        holder.commit()
        holder.close()
        migration.join(timeout=30)
    assert not errors, errors
    with psycopg.connect(fresh_db) as conn:
        assert index_state(conn) == (True,)


def _downgrade(conninfo_: str, revision: str) -> None:
    """Alembic's downgrade the way app.migrate runs its upgrade (no runbook downgrades: a
    rollback keeps the schema, which every revision keeps backward compatible)."""
    from alembic import command

    cfg = migrate._config()
    engine = migrate._engine(conninfo_)
    try:
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)
    finally:
        engine.dispose()


def _reloptions(conn, table: str) -> set[str]:
    row = conn.execute("SELECT reloptions FROM pg_class WHERE relname = %s", (table,)).fetchone()
    return set(row[0] or [])


def test_outbox_fillfactor_is_set_and_reset(fresh_db):
    migrate.upgrade(fresh_db, "0016_outbox_fillfactor")
    with psycopg.connect(fresh_db) as conn:
        assert "fillfactor=45" in _reloptions(conn, "outbox_events")
    _downgrade(fresh_db, "0015_commission_rebate")
    with psycopg.connect(fresh_db) as conn:
        options = _reloptions(conn, "outbox_events")
    # The queue's vacuum settings (0010) stay; only the fillfactor goes.
    assert not any(o.startswith("fillfactor") for o in options)
    assert "autovacuum_vacuum_scale_factor=0.02" in options


def test_revisions_declare_backward_compatibility():
    revs = migrate.revisions()
    assert [r.revision for r in revs][:2] == ["0001_initial", "0002_positions_one_open"]
    assert all(isinstance(r.backward_compatible, bool) for r in revs)
    assert revs[-1].revision == migrate.head()


@contextlib.contextmanager
def _empty_database(pg) -> Iterator[str]:
    """A database never migrated (no version table), dropped after; its conninfo."""
    name = f"empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.superuser_conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg.superuser_conninfo(name)
    finally:
        with psycopg.connect(pg.superuser_conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _revision_by_script(conninfo_: str) -> subprocess.CompletedProcess:
    """The script a rollback runs on an app host (runbooks.sites), run here the same way."""
    return subprocess.run(
        [sys.executable, "-c", migrate.CURRENT_REVISION_SCRIPT, "SPARK_TEST_URL", "test"],
        env={**os.environ, "SPARK_TEST_URL": conninfo_},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_revision_script_answers_what_alembic_answers(fresh_db, db_stack):
    done = _revision_by_script(fresh_db)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == migrate.current(fresh_db) == "0001_initial"
    # No version table (a database never migrated): no revision, as Alembic says (None).
    with _empty_database(db_stack.pg) as empty:
        done = _revision_by_script(empty)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "\n" and migrate.current(empty) is None


def test_the_revision_script_refuses_a_database_with_two_revisions(fresh_db):
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("INSERT INTO alembic_version VALUES ('0002_other')")
    done = _revision_by_script(fresh_db)
    assert done.returncode == 1
    assert "several schema revisions: 0001_initial, 0002_other" in done.stderr


def _revision_by_psql(conninfo_: str) -> str | None:
    """What a rollback reads on a db host (runbooks.sites), with psql run the same way."""
    done = subprocess.run(
        ["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo_, "-f", "-"],
        input=migrate.CURRENT_REVISION_PSQL, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return migrate.revision_from_psql(done.stdout)


def test_the_psql_revision_read_answers_what_alembic_answers(fresh_db, db_stack):
    assert _revision_by_psql(fresh_db) == migrate.current(fresh_db) == "0001_initial"
    with _empty_database(db_stack.pg) as empty:
        assert _revision_by_psql(empty) is None and migrate.current(empty) is None


def test_the_psql_revision_read_refuses_a_database_with_two_revisions(fresh_db):
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("INSERT INTO alembic_version VALUES ('0002_other')")
    with pytest.raises(ValueError, match="several schema revisions: 0001_initial, 0002_other"):
        _revision_by_psql(fresh_db)
