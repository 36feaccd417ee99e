"""sparkops.scram agrees with PostgreSQL's own SCRAM-SHA-256, checked against the real server:
a verifier PostgreSQL stores for a password matches it in `verifier_matches`, and a verifier
`make_verifier` writes (as the deploy does for pgBouncer's auth file and ALTER ROLE) lets
that password log in."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from sparkops.scram import make_verifier, verifier_matches
from testkit.postgres import conninfo


@pytest.fixture
def role(db_stack):
    name = f"scram_{uuid.uuid4().hex[:8]}"
    yield name
    db_stack.pg.psql(f"DROP ROLE IF EXISTS {name}")


def _stored(db_stack, name: str) -> str:
    return db_stack.pg.psql(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{name}'").strip()


def test_a_verifier_postgresql_made_matches_its_password(db_stack, role):
    db_stack.pg.psql(
        f"SET password_encryption = 'scram-sha-256'; CREATE ROLE {role} LOGIN PASSWORD 'p4ss-w0rd'"
    )
    stored = _stored(db_stack, role)
    assert stored.startswith("SCRAM-SHA-256$4096:")
    assert verifier_matches(stored, "p4ss-w0rd")
    assert not verifier_matches(stored, "p4ss-w0rD")


def test_a_verifier_we_made_logs_in_to_postgresql(db_stack, role):
    verifier = make_verifier("an0ther secret")
    db_stack.pg.psql(f"CREATE ROLE {role} LOGIN PASSWORD '{verifier}'")
    assert _stored(db_stack, role) == verifier  # stored as given, not re-hashed
    pg = db_stack.pg
    with psycopg.connect(
        conninfo("127.0.0.1", pg.port, role, "an0ther secret", "postgres"), connect_timeout=5
    ) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == role
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(
            conninfo("127.0.0.1", pg.port, role, "wrong", "postgres"), connect_timeout=5
        )
