"""Every transaction of the app role is bounded, and a stuck client cannot hold the pool.

Against the real fixture PostgreSQL 15 and pgBouncer 1.18, with the values the deploy uses
(sparkops.defaults, applied by sparkops.dbroles and pgBouncer's settings): a client that
begins a transaction through pgBouncer and then sits idle is cut off within the bound and
its server connection returns to the pool; a statement over the bound is cancelled.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from deploys.facts import PostgresState
from deploys.postgresql import ROLE_ORDER
from sparkops import dbroles, defaults
from sparkops.wait import wait_until
from testkit.stack import DbStack
from tests.conftest import connect_app

IDLE = defaults.APP_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS
STATEMENT = defaults.APP_STATEMENT_TIMEOUT_SECONDS
BOUNCER_IDLE = defaults.PGBOUNCER_IDLE_TRANSACTION_TIMEOUT_SECONDS
# What a loaded 2-core machine may add to a timer that fires on time.
SLACK = 4.0


def test_every_bound_is_below_the_idempotency_takeover_window():
    bounds = {
        "statement": STATEMENT,
        "idle in transaction": IDLE,
        "pgBouncer idle transaction": BOUNCER_IDLE,
    }
    assert max(bounds.values()) < defaults.IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS, bounds
    # PostgreSQL's bound fires first (it names the role in its log); pgBouncer's backs it up.
    assert IDLE < BOUNCER_IDLE


def _role_state(conn: psycopg.Connection) -> dict:
    """The deploy's PostgresState fact, its query run here instead of through psql."""
    rows = conn.execute(PostgresState.query(list(ROLE_ORDER))).fetchall()
    return PostgresState().process([row[0] for row in rows])


def test_the_deploy_sees_the_bounds_in_place_and_changes_only_what_differs(db_stack):
    with psycopg.connect(db_stack.pg.superuser_conninfo()) as conn:  # one transaction
        state = _role_state(conn)
        assert state["role_settings"][defaults.ROLE_APP] == {
            "statement_timeout": f"{STATEMENT}s",
            "idle_in_transaction_session_timeout": f"{IDLE}s",
        }
        assert dbroles.role_setting_statements(state["role_settings"]) == []
        # Someone changed one by hand: the deploy puts back that one only.
        conn.execute(f"ALTER ROLE {defaults.ROLE_APP} SET statement_timeout = '1h'")
        statements = dbroles.role_setting_statements(_role_state(conn)["role_settings"])
        assert [s.as_string(conn) for s in statements] == [
            f'ALTER ROLE "{defaults.ROLE_APP}" SET "statement_timeout" = \'{STATEMENT}s\''
        ]
        conn.rollback()  # ALTER ROLE is transactional: the session stack stays as it was
    with connect_app(db_stack) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == f"{STATEMENT}s"
        assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()[0] == (
            f"{IDLE}s"
        )


def test_a_statement_over_the_bound_is_cancelled_and_the_session_goes_on(db_stack):
    with connect_app(db_stack) as conn:
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
            conn.execute("SELECT pg_sleep(%s)", (STATEMENT + 30,))
        took = time.monotonic() - started
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert STATEMENT - 1 <= took <= STATEMENT + SLACK, took


@pytest.fixture(scope="module")
def small_pool():
    """A stack of its own whose pgBouncer has two server connections: two stuck clients
    fill it (the session's stack stays untouched for the other tests)."""
    with DbStack(pool_size=2) as stack:
        yield stack


def _stuck(stack: DbStack, user: str, password: str, sql: str = "SELECT 1") -> psycopg.Connection:
    """A client through pgBouncer that begins a transaction, runs `sql`, and goes idle."""
    conn = psycopg.connect(
        stack.bouncer.conninfo(user, password), prepare_threshold=None, connect_timeout=5
    )
    conn.execute(sql)
    return conn


def _clients(stack: DbStack, user: str) -> list[tuple]:
    return [row for row in stack.bouncer.admin("SHOW CLIENTS") if row[1] == user]


def _idle_in_transaction(stack: DbStack) -> int:
    """App-role sessions idle in a transaction, as PostgreSQL sees them (not through the
    pool: a query from a stuck client would restart its idle clock)."""
    with psycopg.connect(stack.pg.superuser_conninfo(), autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s "
            "AND state = 'idle in transaction'",
            (defaults.ROLE_APP,),
        ).fetchone()[0]


def test_an_idle_transaction_is_cut_off_and_the_pool_recovers(small_pool):
    stack = small_pool
    app_pw = stack.passwords.app
    # Two app clients hold both server connections, one of them an advisory lock too; a
    # client of another role (no role-level bound: pgBouncer's own timeout is its bound)
    # sits idle in a transaction beside them.
    stuck = [
        _stuck(stack, defaults.ROLE_APP, app_pw, "SELECT pg_advisory_xact_lock(42)"),
        _stuck(stack, defaults.ROLE_APP, app_pw),
    ]
    started = time.monotonic()
    other = _stuck(stack, defaults.ROLE_MONITORING, stack.passwords.monitoring)
    waited: dict[str, float] = {}

    def newcomer() -> None:
        # Queued by pgBouncer until a server connection is free.
        with psycopg.connect(
            stack.app_conninfo(), prepare_threshold=None, connect_timeout=5
        ) as conn:
            # Granted only once the stuck holder's transaction is gone.
            conn.execute("SELECT pg_advisory_xact_lock(42)")
            waited["app"] = time.monotonic() - started

    thread = threading.Thread(target=newcomer)
    thread.start()
    thread.join(timeout=IDLE + SLACK + 10)
    assert not thread.is_alive(), "the newcomer never got a server connection"
    assert IDLE - 1 <= waited["app"] <= IDLE + SLACK, waited
    wait_until(
        lambda: _idle_in_transaction(stack) == 0,
        timeout=max(0.0, started + IDLE + SLACK - time.monotonic()),
        what="PostgreSQL to end the second stuck client's session",
    )
    for conn in stuck:
        # PostgreSQL's own error, relayed by pgBouncer: the role's bound fired.
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
            conn.execute("SELECT 1")
        conn.close()
    # pgBouncer's own bound: the other role's client is disconnected once it has passed
    # (watched on the admin console: a query on it would restart its idle clock).
    wait_until(
        lambda: not _clients(stack, defaults.ROLE_MONITORING),
        timeout=started + BOUNCER_IDLE + SLACK - time.monotonic(),
        what="pgBouncer to disconnect the idle client of a role without its own bound",
    )
    assert time.monotonic() - started >= BOUNCER_IDLE - 1
    with pytest.raises(psycopg.OperationalError, match="idle transaction timeout"):
        other.execute("SELECT 1")
    other.close()
    # The pool is whole again: as many fresh clients as it has server connections each run
    # a transaction at once.
    began = time.monotonic()
    fresh = [connect_app(stack, autocommit=False, connect_timeout=5) for _ in range(2)]
    try:
        assert [c.execute("SELECT 1").fetchone() for c in fresh] == [(1,), (1,)]
        assert time.monotonic() - began < SLACK
    finally:
        for conn in fresh:
            conn.close()


def test_reconnect_gives_pooled_server_connections_the_new_role_settings(small_pool):
    """Why the deploy sends RECONNECT after changing a role setting: a pooled server
    connection keeps the settings its session started with."""
    stack = small_pool

    def pooled_timeout() -> str:
        with connect_app(stack) as conn:
            return conn.execute("SHOW statement_timeout").fetchone()[0]

    assert pooled_timeout() == f"{STATEMENT}s"
    with psycopg.connect(stack.pg.superuser_conninfo(), autocommit=True) as su:
        su.execute(f"ALTER ROLE {defaults.ROLE_APP} SET statement_timeout = '7s'")
        try:
            assert pooled_timeout() == f"{STATEMENT}s"  # the old server connection
            stack.bouncer.admin("RECONNECT")
            assert pooled_timeout() == "7s"
        finally:
            for statement in dbroles.role_setting_statements():
                su.execute(statement)
            stack.bouncer.admin("RECONNECT")
    assert pooled_timeout() == f"{STATEMENT}s"
