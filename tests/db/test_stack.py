"""The fixtures' database is reached through pgBouncer with the production's least privilege."""

import psycopg
import pytest

from app import migrate
from sparkops import defaults
from tests.conftest import connect_app


def test_app_reaches_database_through_pgbouncer_in_transaction_mode(db_stack):
    with connect_app(db_stack) as conn:
        user, port = conn.execute("select current_user, inet_server_port()").fetchone()
    assert user == defaults.ROLE_APP
    # the server port is PostgreSQL's, the client connected to pgBouncer's
    assert port == db_stack.pg.port != db_stack.bouncer.port
    pools = db_stack.bouncer.admin("SHOW POOLS")
    assert any(row[0] == defaults.DATABASE_NAME and row[-1] == "transaction" for row in pools)


def test_app_role_cannot_change_schema(db_stack):
    with connect_app(db_stack) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("create table intruder (id int)")


def test_wrong_password_is_refused_by_pgbouncer(db_stack):
    bad = db_stack.bouncer.conninfo(defaults.ROLE_APP, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(bad, connect_timeout=5)


def test_schema_is_at_head(db_stack):
    assert migrate.current(db_stack.owner_conninfo()) == migrate.head()
