"""`sparkops app` maintenance commands against the real database through pgBouncer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from app import migrate
from deploys import app as app_deploy
from deploys import support
from sparkops import defaults
from sparkops.cli import main


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
    assert "would delete 7" in dry.output
    assert app_conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0] == 8
    result = run("app", "purge-idempotency-keys", env=env)
    assert result.exit_code == 0 and "deleted 7" in result.output
    keys = app_conn.execute("SELECT key FROM idempotency_keys").fetchall()
    assert keys == [("new-key-1",)]
    assert "deleted 1 idle client rate-limit window(s)" in result.output
    clients = app_conn.execute("SELECT client FROM client_rate_windows").fetchall()
    assert clients == [("192.0.2.2",)]


def test_halt_and_resume(app_conn, clean_db):
    env = {"SPARK_DATABASE_URL": clean_db.app_conninfo()}
    assert run("app", "halt", "global", "--reason", "drill", env=env).exit_code == 0
    assert app_conn.execute("SELECT reason FROM trading_halts").fetchone() == ("drill",)
    assert run("app", "resume", "global", env=env).exit_code == 0
    again = CliRunner().invoke(main, ["app", "resume", "global"], env=env)
    assert again.exit_code == 1 and "nothing changed" in again.output


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
    assert assignments == [f'{defaults.MIGRATIONS_URL_ENV}="{url}"']
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
    result = CliRunner().invoke(main, ["app", "migrate"], env={defaults.MIGRATIONS_URL_ENV: ""})
    assert result.exit_code == 2 and defaults.MIGRATIONS_URL_ENV in result.output
