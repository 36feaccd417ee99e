"""`sparkops app`: run the trading app and its maintenance jobs."""

from __future__ import annotations

import asyncio
import os

import click
import psycopg

from sparkops import defaults


def _database_url(value: str | None) -> str:
    url = value or os.environ.get("SPARK_DATABASE_URL")
    if not url:
        raise click.UsageError("give --database-url or set SPARK_DATABASE_URL")
    return url


@click.group("app")
def command() -> None:
    """Run the trading app, its migrations and its maintenance jobs."""


@command.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=defaults.APP_PORT, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Serve the HTTP API with uvicorn (settings from SPARK_* environment variables)."""
    import uvicorn

    from app.config import ConfigError, Settings
    from app.main import create_app

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    uvicorn.run(create_app(settings), host=host, port=port, proxy_headers=True, lifespan="on")


@command.command("migrate")
@click.option("--database-url", envvar=defaults.MIGRATIONS_URL_ENV,
              help="Direct to PostgreSQL as the schema owner (not through pgBouncer); "
                   f"defaults to {defaults.MIGRATIONS_URL_ENV}, as in migrations.env.")  # fmt: skip
@click.option("--to", "revision", default="head", show_default=True)
def migrate_cmd(database_url: str | None, revision: str) -> None:
    """Apply the schema migrations (Alembic) up to a revision."""
    from app import migrate

    if not database_url:
        raise click.UsageError(f"give --database-url or set {defaults.MIGRATIONS_URL_ENV}")
    before = migrate.current(database_url)
    migrate.upgrade(database_url, revision)
    after = migrate.current(database_url)
    click.echo(f"schema: {before or '(empty)'} -> {after}")


@command.command("purge-idempotency-keys")
@click.option("--database-url", help="Defaults to SPARK_DATABASE_URL (through pgBouncer).")
@click.option("--older-than-hours", default=defaults.IDEMPOTENCY_KEY_TTL_HOURS, type=int,
              show_default=True)  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
def purge(database_url: str | None, older_than_hours: int, dry_run: bool) -> None:
    """Delete idempotency keys past their expiry (meant for a timer, hourly)."""
    from app import idempotency

    if older_than_hours < 1:
        raise click.BadParameter("must be at least 1", param_hint="--older-than-hours")
    url = _database_url(database_url)

    async def run() -> int:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=None)
        async with conn:
            if dry_run:
                cur = await conn.execute(
                    "SELECT count(*) FROM idempotency_keys "
                    "WHERE created_at < now() - make_interval(hours => %s)",
                    (older_than_hours,),
                )
                return (await cur.fetchone())[0]
            return await idempotency.purge_expired(conn, older_than_hours)

    count = asyncio.run(run())
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {count} idempotency key(s) older than {older_than_hours} h")


@command.command("halt")
@click.argument("scope")
@click.option("--reason", required=True, help="Shown to clients whose orders are refused.")
@click.option("--database-url", help="Defaults to SPARK_DATABASE_URL.")
def halt(scope: str, reason: str, database_url: str | None) -> None:
    """Engage the kill switch: SCOPE is 'global' or a symbol such as BTCUSDT."""
    with psycopg.connect(_database_url(database_url), autocommit=True,
                         prepare_threshold=None) as conn:  # fmt: skip
        conn.execute(
            "INSERT INTO trading_halts (scope, reason) VALUES (%s, %s) "
            "ON CONFLICT (scope) DO UPDATE SET reason = EXCLUDED.reason",
            (scope, reason),
        )
    click.echo(f"trading halted for {scope}: {reason}")


@command.command("resume")
@click.argument("scope")
@click.option("--database-url", help="Defaults to SPARK_DATABASE_URL.")
def resume(scope: str, database_url: str | None) -> None:
    """Release the kill switch for SCOPE."""
    with psycopg.connect(_database_url(database_url), autocommit=True,
                         prepare_threshold=None) as conn:  # fmt: skip
        deleted = conn.execute("DELETE FROM trading_halts WHERE scope = %s", (scope,)).rowcount
    if not deleted:
        raise click.ClickException(f"no halt for {scope!r}; nothing changed")
    click.echo(f"trading resumed for {scope}")
