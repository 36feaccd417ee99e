"""Shared fixtures: a throwaway PostgreSQL 15 with the app's schema behind pgBouncer.

The cluster and pgBouncer start once per test session; `clean_db` empties the app's tables
before a test that writes. Tests reach the database as the app role through pgBouncer
(transaction pooling, SCRAM), as the app does in production.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest

from app import apikeys
from runbooks.evidence import EVIDENCE_DIR_ENV
from sparkops import defaults
from testkit import pytest_sigterm
from testkit.stack import DbStack


def pytest_configure(config) -> None:
    # SIGTERM (CI cancelling the run) ends the session with its teardown: the servers and the
    # lab the fixtures started do not outlive it (testkit/pytest_sigterm.py).
    pytest_sigterm.install()


# Emptied before each test that writes, in this order (foreign keys). The session's test key
# (below) is kept; other keys a test made are deleted.
APP_TABLES = (
    "outbox_events",
    "idempotency_keys",
    "orders",
    "positions",
    "api_rate_windows",
    "client_rate_windows",
    "api_key_accounts",
    "api_keys",
    "accounts",
)

# The API key the tests send: made for this session (its secret is never written anywhere but
# in this process), with both permissions and a rate limit no test reaches; `create_account`
# binds each account a test makes to it.
TEST_KEY_ID = str(uuid.uuid4())
TEST_KEY_SECRET = apikeys.new_secret()
TEST_KEY_RATE_LIMIT = 1_000_000
AUTH = {"authorization": f"Bearer {TEST_KEY_SECRET}"}


def ensure_test_key(conn) -> None:
    conn.execute(
        "INSERT INTO api_keys (id, name, secret_sha256, permissions, rate_limit) "
        "VALUES (%s, 'tests', %s, '{read,trade}', %s) ON CONFLICT (id) DO NOTHING",
        (TEST_KEY_ID, apikeys.secret_sha256(TEST_KEY_SECRET), TEST_KEY_RATE_LIMIT),
    )


@pytest.fixture(scope="session", autouse=True)
def _evidence_outside_the_checkout(tmp_path_factory):
    """Runbooks run without --evidence-dir leave their evidence in a temporary directory,
    not in <repo>/evidence (the operator's default); subprocesses inherit it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(EVIDENCE_DIR_ENV, str(tmp_path_factory.mktemp("evidence")))
        yield


@pytest.fixture(scope="session")
def db_stack():
    stack = DbStack().start()
    try:
        yield stack
    finally:
        stack.stop()


def connect_app(stack: DbStack, **kwargs) -> psycopg.Connection:
    """A connection through pgBouncer as the app role (no server-side prepared statements)."""
    kwargs.setdefault("autocommit", True)
    return psycopg.connect(stack.app_conninfo(), prepare_threshold=None, **kwargs)


def connect_operator(stack: DbStack, operator: str = "tests") -> psycopg.Connection:
    """Direct to PostgreSQL as the schema owner acting as the operator role, the one role
    that writes the kill switch (trading_halts), with `operator` as who acted."""
    conn = psycopg.connect(stack.owner_conninfo(), autocommit=True)
    conn.execute(f"SET ROLE {defaults.ROLE_OPERATOR}")
    conn.execute("SELECT set_config('spark.operator', %s, false)", (operator,))
    return conn


@pytest.fixture
def clean_db(db_stack):
    with connect_operator(db_stack) as conn:
        conn.execute("DELETE FROM trading_halts")  # the app role may only read it
    with connect_app(db_stack) as conn:
        # DELETE, not TRUNCATE: the app role has only row privileges, as in production.
        for table in APP_TABLES:
            keep = " WHERE id <> %s" if table == "api_keys" else ""
            conn.execute(f"DELETE FROM {table}{keep}", (TEST_KEY_ID,) if keep else None)
        ensure_test_key(conn)
    return db_stack


@pytest.fixture
def app_conn(clean_db):
    with connect_app(clean_db) as conn:
        yield conn


@pytest.fixture(scope="session")
def app_server(db_stack):
    """The app on a real uvicorn, talking to PostgreSQL through the test pgBouncer."""
    from app.config import Settings
    from testkit.appserver import AppServer

    # The storm tests queue 1,000 requests on the pool; on a loaded 2-core CI machine the
    # wait for a connection can pass the production defaults (5 s, then 503; 10 s in all).
    # Every test request comes from 127.0.0.1: the per-address limit is out of reach here
    # (tests/api/test_client_rate_limit.py runs servers of its own with a low one).
    settings = Settings(
        database_url=db_stack.app_conninfo(),
        release_id="test-release",
        db_timeout_s=60,
        client_rate_limit=TEST_KEY_RATE_LIMIT,
        request_timeout_s=90,
    )
    with connect_app(db_stack) as conn:
        ensure_test_key(conn)
    server = AppServer(settings).start()
    try:
        yield server
    finally:
        server.stop()


def create_account(conn, account_id: str = "acct-1", balance: str = "100000") -> str:
    """An account, bound to the session's test key (AUTH)."""
    conn.execute(
        "INSERT INTO accounts (id, name, opening_balance, cash_balance) VALUES (%s, %s, %s, %s)",
        (account_id, f"Account {account_id}", balance, balance),
    )
    ensure_test_key(conn)
    conn.execute(
        "INSERT INTO api_key_accounts (api_key_id, account_id) VALUES (%s, %s)",
        (TEST_KEY_ID, account_id),
    )
    return account_id


def pytest_terminal_summary(terminalreporter):
    """The interruption table (tests/interruptions.py), when this session interrupted any."""
    from tests.interruptions import TABLE

    if TABLE.rows:
        terminalreporter.section("runbooks interrupted at each step")
        terminalreporter.write_line(TABLE.render())


def pytest_collection_modifyitems(session, config, items):
    """Tests that take the lab down and bring it back (fixture `owned_lab`) run last: a lab
    host's root is a tmpfs, so the hosts come back freshly made, without the deployed stack
    that every later lab test (fixture `deployed`) relies on."""
    # `two_app_lab` (tests/lab/test_two_app_hosts.py) takes the default lab down for a lab of
    # its own and brings it back undeployed, like `owned_lab`.
    takers = {"owned_lab", "two_app_lab"}
    last = [item for item in items if takers & set(getattr(item, "fixturenames", ()))]
    if last:
        items[:] = [item for item in items if item not in last] + last
