"""Grant-level: only the operator role writes the kill switch; the app role (through
pgBouncer, as the app connects) may read it and nothing more. Against the real PostgreSQL
set up by sparkops.dbroles and the migrations, as in production."""

from __future__ import annotations

import psycopg
import pytest

from sparkops import defaults
from tests.conftest import connect_app, connect_operator

APP_WRITES = [
    "INSERT INTO trading_halts (scope, reason) VALUES ('global', 'from the app')",
    "UPDATE trading_halts SET reason = 'lifted?'",
    "DELETE FROM trading_halts",
    "TRUNCATE trading_halts",
    "INSERT INTO trading_halt_log (scope, action, reason, operator) "
    "VALUES ('global', 'resume', 'x', 'forged')",
    "SELECT * FROM trading_halt_log",
    f"SET ROLE {defaults.ROLE_OPERATOR}",
]


@pytest.mark.parametrize("statement", APP_WRITES, ids=lambda s: s.split()[0] + ":" + s[7:30])
def test_the_app_role_cannot_write_the_kill_switch(clean_db, statement):
    with connect_operator(clean_db) as operator:
        operator.execute("INSERT INTO trading_halts (scope, reason) VALUES ('global', 'stop')")
    with connect_app(clean_db) as app, pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute(statement)
    with connect_app(clean_db) as app:
        assert app.execute("SELECT scope, reason FROM trading_halts").fetchall() == [
            ("global", "stop")
        ]


def test_every_write_by_the_operator_is_logged_with_who_did_it(clean_db):
    with connect_operator(clean_db, operator="carol") as operator:
        operator.execute("INSERT INTO trading_halts (scope, reason) VALUES ('ETHUSDT', 'a')")
        operator.execute("UPDATE trading_halts SET reason = 'b' WHERE scope = 'ETHUSDT'")
        operator.execute("DELETE FROM trading_halts WHERE scope = 'ETHUSDT'")
        rows = operator.execute(
            "SELECT action, reason, operator, db_role FROM trading_halt_log "
            "WHERE scope = 'ETHUSDT' ORDER BY id DESC LIMIT 3"
        ).fetchall()
        # The log is append-only for the operator too.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            operator.execute("DELETE FROM trading_halt_log")
    owner = defaults.ROLE_MIGRATIONS
    assert rows == [("resume", "b", "carol", owner), ("change", "b", "carol", owner),
                    ("halt", "a", "carol", owner)]  # fmt: skip
