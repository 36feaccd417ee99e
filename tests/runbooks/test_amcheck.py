"""The restore's index check (runbooks.checks.amcheck) against a real PostgreSQL: every
b-tree index of the app's tables checked in one command (one round trip on a host), and an
index that lacks heap tuples reported by name.

The broken index is made the way a lost index update would leave it: with `indisready` off,
PostgreSQL stops maintaining the index while it stays valid, so rows inserted then are missing
from it, which `bt_index_check(..., heapallindexed => true)` finds."""

from __future__ import annotations

from dataclasses import replace

import psycopg
import pytest

from runbooks import checks
from runbooks.checklist import Run

DBNAME = "amcheck_probe"


@pytest.fixture
def probe(backed_db):
    admin = backed_db.stack.pg.superuser_conninfo("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DBNAME}")
        conn.execute(f"CREATE DATABASE {DBNAME}")
    conninfo = backed_db.stack.pg.superuser_conninfo(DBNAME)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, symbol text)")
        conn.execute("CREATE INDEX orders_symbol_idx ON orders (symbol)")
        conn.execute("INSERT INTO orders SELECT g, 's' || g FROM generate_series(1, 500) g")
    seen: list[str] = []
    target = replace(backed_db.target, dbname=DBNAME)
    target.executor.recorders.append(lambda result: seen.append(result.shown))
    try:
        yield target, conninfo, seen
    finally:
        target.executor.recorders.pop()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")


def test_every_index_is_checked_in_one_command(probe):
    target, _, seen = probe
    run = Run("test", quiet=True)
    assert checks.amcheck(target, run)
    assert run.facts["amcheck_indexes"] == ["orders_pkey", "orders_symbol_idx"]
    assert sum("bt_index_check" in shown for shown in seen) == 1, seen
    assert len(seen) == 3, seen  # the extension, the list of indexes, the checks


def test_an_index_missing_rows_fails_the_check_by_name(probe):
    target, conninfo, _ = probe
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "UPDATE pg_index SET indisready = false "
            "WHERE indexrelid = 'orders_symbol_idx'::regclass"
        )
    with psycopg.connect(conninfo, autocommit=True) as conn:  # a session with the new catalog
        conn.execute("INSERT INTO orders SELECT g, 's' || g FROM generate_series(501, 600) g")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "UPDATE pg_index SET indisready = true WHERE indexrelid = 'orders_symbol_idx'::regclass"
        )
    run = Run("test", quiet=True)
    assert not checks.amcheck(target, run)
    (check,) = [c for c in run.checks if c.name == "amcheck"]
    assert not check.ok and "orders_symbol_idx" in check.detail, check.detail
    assert check.detail.startswith("ERROR:"), check.detail  # not the HINT that follows it
