"""The facts' parsing and the password guard: pure logic on captured output."""

from __future__ import annotations

import json

import pytest

from deploys import facts, pgbouncer, postgresql
from sparkops import defaults, secrets
from sparkops.scram import make_verifier


def test_postgres_state_parses_roles_membership_and_database():
    verifier = make_verifier("s3cret")
    output = [
        f"role|{defaults.ROLE_APP}|{verifier}",
        f"role|{defaults.ROLE_MONITORING}|",
        f"setting|{defaults.ROLE_APP}|statement_timeout=15s",
        f"setting|{defaults.ROLE_APP}|search_path=a=b",
        f"member|{defaults.ROLE_MONITORING}",
        f"db|{defaults.DATABASE_NAME}",
        "comment|sparkops-privileges:abc",
    ]
    state = facts.PostgresState().process(output)
    assert state["roles"] == {defaults.ROLE_APP: verifier, defaults.ROLE_MONITORING: ""}
    assert state["role_settings"] == {
        defaults.ROLE_APP: {"statement_timeout": "15s", "search_path": "a=b"}
    }
    assert state["pg_monitor_members"] == [defaults.ROLE_MONITORING]
    assert state["database_exists"] is True
    assert state["database_comment"] == "sparkops-privileges:abc"
    assert facts.PostgresState().process([])["database_exists"] is False


def test_password_guard_alters_only_what_differs():
    plain = {"a": "pw-a", "b": "pw-b", "c": "pw-c"}
    verifiers = {role: secrets.stable_verifier(role, pw) for role, pw in plain.items()}
    state = {
        "roles": {
            # Same password, another salt (set by hand): still a match, no ALTER.
            "a": make_verifier("pw-a"),
            "b": make_verifier("an old password"),
        }
    }
    changes = postgresql.role_changes(state, verifiers, plain)
    assert changes == {"create": ["c"], "alter": ["b", "c"]}
    state["roles"] = {role: v for role, v in verifiers.items()}
    assert postgresql.role_changes(state, verifiers, plain) == {"create": [], "alter": []}


def test_role_statements_are_mapped_by_role_and_carry_verifiers_only():
    verifier = secrets.stable_verifier("x", "plain-text-password")
    passwords = postgresql.dbroles.RolePasswords(verifier, verifier, verifier, verifier)
    pairs = postgresql._statements_by_role(passwords)
    assert set(pairs) == set(postgresql.ROLE_ORDER)
    for role, (create, alter) in pairs.items():
        assert f"'{role}'" in create and "CREATE ROLE" in create
        assert alter.startswith(f'ALTER ROLE "{role}" PASSWORD')
        assert "plain-text-password" not in alter


def test_stable_verifier_is_stable_and_verifiable():
    one = secrets.stable_verifier("pgbouncer_admin", "pw")
    assert one == secrets.stable_verifier("pgbouncer_admin", "pw")
    assert one != secrets.stable_verifier("pgbouncer_stats", "pw")
    assert postgresql.verifier_matches(one, "pw")


def test_privileges_marker_follows_the_sql():
    assert postgresql.privileges_marker("spark") == postgresql.privileges_marker("spark")
    assert postgresql.privileges_marker("spark") != postgresql.privileges_marker("other")


def test_pgbackrest_info_states():
    missing = [{"name": "spark", "status": {"code": 1, "message": "missing stanza path"}}]
    info = facts.PgBackRestInfo().process([json.dumps(missing)])
    assert facts.stanza_missing(info) and not facts.has_full_backup(info)
    ok = [{"name": "spark", "status": {"code": 0}, "backup": [{"type": "full"}]}]
    info = facts.PgBackRestInfo().process(json.dumps(ok).splitlines())
    assert not facts.stanza_missing(info) and facts.has_full_backup(info)
    no_backup = [{"name": "spark", "status": {"code": 2}, "backup": []}]
    info = facts.PgBackRestInfo().process([json.dumps(no_backup)])
    assert not facts.stanza_missing(info) and not facts.has_full_backup(info)
    assert facts.stanza_missing(facts.PgBackRestInfo().process(["ERROR: [055]: garbage"]))


def test_migration_state_and_directory_entries():
    state = facts.MigrationState().process(["current=0002", "head=0002", "noise"])
    assert state == {"current": "0002", "head": "0002"}
    assert facts.MigrationState().process(["current=None", "head=0002"])["current"] is None
    assert facts.DirectoryEntries().process(["b\n", "", "a"]) == ["b", "a"]


def test_secrets_are_generated_once_kept_private_and_overridable(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKOPS_SECRETS_DIR", str(tmp_path))
    first = secrets.load("staging")
    path = secrets.secrets_path("staging")
    assert path.stat().st_mode & 0o777 == 0o600
    assert secrets.load("staging").values == first.values
    assert "pw" not in repr(first) and first["postgresql_app"] not in repr(first)
    monkeypatch.setenv("SPARKOPS_SECRET_S3_SECRET_KEY", "from-vault")
    assert secrets.load("staging")["s3_secret_key"] == "from-vault"
    path.chmod(0o644)
    with pytest.raises(secrets.SecretsError, match="chmod 600"):
        secrets.load("staging")


def test_pgbouncer_admin_passfile_escapes_separators():
    line = pgbouncer.passfile_line("a:b\\c")
    assert line == (
        f"*:{defaults.PGBOUNCER_PORT}:{defaults.PGBOUNCER_ADMIN_DB}:"
        f"{defaults.ROLE_PGBOUNCER_ADMIN}:a\\:b\\\\c\n"
    )
