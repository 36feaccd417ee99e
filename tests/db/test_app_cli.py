"""`sparkops app` maintenance commands against the real database through pgBouncer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
from click.testing import CliRunner

from app import migrate
from deploys import app as app_deploy
from deploys import support
from sparkops import defaults, envvars
from sparkops_cli.main import main


def run(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_purge_deletes_only_expired_keys(app_conn, clean_db):
    app_conn.execute(
        "INSERT INTO idempotency_keys (key, request_hash, state, created_at, locked_at) "
        "SELECT 'old-' || g, 'h', 'in_flight', now() - interval '49 hours', now() "
        "FROM generate_series(1, 7) g"
    )
    app_conn.execute(
        "INSERT INTO idempotency_keys (key, request_hash, state) VALUES ('new-key-1', 'h', "
        "'in_flight')"
    )
    app_conn.execute(
        "INSERT INTO client_rate_windows (client, window_start, used) VALUES "
        "('192.0.2.1', now() - interval '2 minutes', 3), ('192.0.2.2', now(), 1)"
    )
    env = {"SPARK_DATABASE_URL": clean_db.app_conninfo()}
    dry = run("app", "purge-idempotency-keys", "--dry-run", env=env)
    assert "would delete 7" in dry.output and "nothing was changed" in dry.output
    assert app_conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0] == 8
    declined = CliRunner().invoke(main, ["app", "purge-idempotency-keys"], env=env, input="n\n")
    assert declined.exit_code == 3 and "not confirmed" in declined.output
    assert app_conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0] == 8
    result = run("app", "purge-idempotency-keys", "--yes", env=env)
    assert result.exit_code == 0 and "deleted 7" in result.output
    keys = app_conn.execute("SELECT key FROM idempotency_keys").fetchall()
    assert keys == [("new-key-1",)]
    assert "deleted 1 idle client rate-limit window(s)" in result.output
    clients = app_conn.execute("SELECT client FROM client_rate_windows").fetchall()
    assert clients == [("192.0.2.2",)]


def test_halt_and_resume_record_who_and_when(app_conn, clean_db):
    """Through the owner's connection (as migrations.env gives it), acting as the operator
    role; the log says who halted and who resumed, and when."""
    env = {envvars.MIGRATIONS_URL: clean_db.owner_conninfo(), "USER": "alice"}
    halted = run("app", "halt", "global", "--reason", "drill", env=env)
    assert halted.exit_code == 0 and "halted for global by alice at " in halted.output
    assert app_conn.execute("SELECT reason, halted_by FROM trading_halts").fetchone() == (
        "drill", "alice")  # fmt: skip
    resumed = run("app", "resume", "global", "--operator", "bob", env=env)
    assert resumed.exit_code == 0, resumed.output
    assert "resumed for global by bob at " in resumed.output
    assert "(halted by alice at " in resumed.output
    again = CliRunner().invoke(main, ["app", "resume", "global"], env=env)
    assert again.exit_code == 1 and "nothing changed" in again.output
    with psycopg.connect(clean_db.owner_conninfo()) as owner:
        log = owner.execute(
            "SELECT action, operator, db_role, reason, at > now() - interval '1 minute' "
            "FROM trading_halt_log WHERE scope = 'global' ORDER BY id DESC LIMIT 2"
        ).fetchall()
    assert log == [("resume", "bob", defaults.ROLE_MIGRATIONS, "drill", True),
                   ("halt", "alice", defaults.ROLE_MIGRATIONS, "drill", True)]  # fmt: skip
    shown = run("app", "halts", env=env)
    assert "in force: none" in shown.output and "resume  global  by bob" in shown.output


def test_the_app_role_cannot_halt_or_resume(app_conn, clean_db):
    """With the app's own connection (SPARK_DATABASE_URL, through pgBouncer) the commands
    refuse clearly and change nothing."""
    env = {envvars.MIGRATIONS_URL: clean_db.app_conninfo(), "USER": "mallory"}
    for args in (["halt", "global", "--reason", "x"], ["resume", "global"]):
        r = CliRunner().invoke(main, ["app", *args], env=env)
        assert r.exit_code == 1 and f"may not act as {defaults.ROLE_OPERATOR}" in r.output
        assert "nothing changed" in r.output
    assert app_conn.execute("SELECT count(*) FROM trading_halts").fetchone()[0] == 0
    nobody = CliRunner().invoke(main, ["app", "halt", "global", "--reason", "x"],
                                env={envvars.MIGRATIONS_URL: "", "USER": "alice"})  # fmt: skip
    assert nobody.exit_code == 2 and envvars.MIGRATIONS_URL in nobody.output


def test_missing_database_url_is_a_clear_usage_error():
    result = CliRunner().invoke(main, ["app", "purge-idempotency-keys"],
                                env={"SPARK_DATABASE_URL": ""})  # fmt: skip
    assert result.exit_code == 2 and "SPARK_DATABASE_URL" in result.output


def test_migrate_reads_the_env_file_the_deploy_writes(db_stack, tmp_path):
    """migrations.env as the deploy renders it, sourced as the deploy and the runbooks source
    it (`set -a; . file`), is enough for `sparkops app migrate`: the names agree."""
    assert db_stack.pg is not None
    url = (
        f"postgresql://{defaults.ROLE_MIGRATIONS}:{db_stack.passwords.migrations}"
        f"@{db_stack.pg.host}:{db_stack.pg.port}/{db_stack.dbname}"
    )
    text = support.render("app/migrations.env.j2", user=app_deploy.USER, migrations_url=url)
    assignments = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert assignments == [f'{envvars.MIGRATIONS_URL}="{url}"']
    env_file = tmp_path / "migrations.env"
    env_file.write_text(text)
    sparkops = str(Path(sys.executable).parent / "sparkops")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # nothing inherited: the file only
    result = subprocess.run(
        ["sh", "-c", 'set -a; . "$1"; set +a; exec "$2" app migrate', "sh", env_file, sparkops],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"schema: {migrate.head()} -> {migrate.head()}" in result.stdout


def test_migrate_without_a_url_names_the_variable_migrations_env_sets():
    result = CliRunner().invoke(main, ["app", "migrate"], env={envvars.MIGRATIONS_URL: ""})
    assert result.exit_code == 2 and envvars.MIGRATIONS_URL in result.output
