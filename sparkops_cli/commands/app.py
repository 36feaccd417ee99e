"""`sparkops app`: run the trading app and its maintenance jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
from collections.abc import Iterator

import click
import psycopg
from psycopg import sql

from runbooks.checklist import Refused
from runbooks.conduct import Runbook
from sparkops import defaults, envvars, layout
from sparkops_cli.conduct import finish, runbook_options


def _database_url(value: str | None) -> str:
    url = value or os.environ.get(envvars.DATABASE_URL)
    if not url:
        raise click.UsageError(f"give --database-url or set {envvars.DATABASE_URL}")
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
    # The app's own log (orders with their API key and request id, refused keys) on stderr,
    # which systemd sends to the journal; uvicorn configures only its own loggers.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger("spark").addHandler(handler)
    logging.getLogger("spark").setLevel(logging.INFO)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        proxy_headers=True,
        lifespan="on",
        timeout_keep_alive=defaults.APP_KEEP_ALIVE_SECONDS,
    )


@command.command("migrate")
@click.option("--database-url", envvar=envvars.MIGRATIONS_URL,
              help="Direct to PostgreSQL as the schema owner (not through pgBouncer); "
                   f"defaults to {envvars.MIGRATIONS_URL}, as in migrations.env.")  # fmt: skip
@click.option("--to", "revision", default="head", show_default=True)
def migrate_cmd(database_url: str | None, revision: str) -> None:
    """Apply the schema migrations (Alembic) up to a revision."""
    from app import migrate

    if not database_url:
        raise click.UsageError(f"give --database-url or set {envvars.MIGRATIONS_URL}")
    before = migrate.current(database_url)
    migrate.upgrade(database_url, revision)
    after = migrate.current(database_url)
    click.echo(f"schema: {before or '(empty)'} -> {after}")


@command.command("purge-idempotency-keys")
@click.option("--database-url", help=f"Defaults to {envvars.DATABASE_URL} (through pgBouncer).")
@click.option("--older-than-hours", default=defaults.IDEMPOTENCY_KEY_TTL_HOURS, type=int,
              show_default=True)  # fmt: skip
@runbook_options
def purge(database_url: str | None, older_than_hours: int, options) -> None:
    """Delete idempotency keys past their expiry, and the rate-limit windows of clients not
    seen for a minute (the deploy's hourly timer runs it with --yes). Exit codes: 0 done,
    1 failed, 2 refused, 3 not confirmed."""
    from app import idempotency, ratelimit

    if older_than_hours < 1:
        raise click.BadParameter("must be at least 1", param_hint="--older-than-hours")
    url = _database_url(database_url)

    async def count() -> int:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=None)
        async with conn:
            cur = await conn.execute(
                "SELECT count(*) FROM idempotency_keys "
                "WHERE created_at < now() - make_interval(hours => %s)",
                (older_than_hours,),
            )
            return (await cur.fetchone())[0]

    async def delete() -> tuple[int, int]:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=None)
        async with conn:
            # The per-client rate-limit windows of clients gone quiet go with them.
            return (await idempotency.purge_expired(conn, older_than_hours),
                    await ratelimit.purge_clients(conn))  # fmt: skip

    def prepare(run):
        try:
            planned = asyncio.run(count())
        except psycopg.OperationalError as exc:
            raise Refused(f"cannot reach the database: {exc}".strip(),
                          f"check --database-url / {envvars.DATABASE_URL}") from None  # fmt: skip
        run.facts["planned"] = planned
        run.plan = [f"would delete {planned} idempotency key(s) older than {older_than_hours} h"]
        return planned

    def act(run, planned):
        deleted, clients = asyncio.run(delete())
        run.facts["deleted"], run.facts["client_windows_deleted"] = deleted, clients
        run.say(f"deleted {deleted} idempotency key(s) older than {older_than_hours} h")
        run.say(f"deleted {clients} idle client rate-limit window(s)")

    # Routine (hourly) work: no evidence folder per run; the journal keeps its output.
    book = Runbook("purge-idempotency-keys", prepare, act, question="Delete them?",
                   keeps_evidence=False)  # fmt: skip
    finish(book, options)


def _operator_name(value: str | None) -> str:
    name = (value or os.environ.get("USER") or "").strip()
    if not name:
        raise click.UsageError("give --operator NAME (who is acting), or set USER")
    return name


@contextlib.contextmanager
def _as_operator(database_url: str | None, operator: str | None) -> Iterator[psycopg.Connection]:
    """A transaction acting as the operator role, with `operator` recorded as who acted; the
    connection's own role must be a member of it (the schema owner is)."""
    url = database_url or os.environ.get(envvars.MIGRATIONS_URL)
    if not url:
        raise click.UsageError(
            f"give --database-url or set {envvars.MIGRATIONS_URL}: a role that may act "
            f"as {defaults.ROLE_OPERATOR} (the app's own role may not write the kill switch)"
        )
    with psycopg.connect(url, prepare_threshold=None) as conn, conn.transaction():
        try:
            conn.execute(
                sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(defaults.ROLE_OPERATOR))
            )
        except psycopg.errors.InsufficientPrivilege:
            raise click.ClickException(
                f"role {conn.info.user!r} may not act as {defaults.ROLE_OPERATOR}: connect as "
                f"the schema owner ({envvars.MIGRATIONS_URL}) or as a role granted "
                f"{defaults.ROLE_OPERATOR}; nothing changed"
            ) from None
        if operator is not None:
            conn.execute("SELECT set_config('spark.operator', %s, true)", (operator,))
        yield conn


_OPERATOR_HELP = "Who is acting, recorded in trading_halt_log (default: $USER)."
_OPERATOR_URL_HELP = (
    f"A role that may act as {defaults.ROLE_OPERATOR}; defaults to "
    f"{envvars.MIGRATIONS_URL} (the schema owner, as in migrations.env)."
)


@command.command("halt")
@click.argument("scope")
@click.option("--reason", required=True, help="Shown to clients whose orders are refused.")
@click.option("--operator", help=_OPERATOR_HELP)
@click.option("--database-url", help=_OPERATOR_URL_HELP)
def halt(scope: str, reason: str, operator: str | None, database_url: str | None) -> None:
    """Engage the kill switch: SCOPE is 'global' or a symbol such as BTCUSDT."""
    who = _operator_name(operator)
    if not reason.strip():
        raise click.BadParameter("give the reason clients will see", param_hint="--reason")
    with _as_operator(database_url, who) as conn:
        at = conn.execute(
            "INSERT INTO trading_halts (scope, reason, halted_by) VALUES (%s, %s, %s) "
            "ON CONFLICT (scope) DO UPDATE SET reason = EXCLUDED.reason, "
            "halted_by = EXCLUDED.halted_by RETURNING now()",
            (scope, reason, who),
        ).fetchone()[0]
    click.echo(f"trading halted for {scope} by {who} at {at.isoformat()}: {reason}")


@command.command("resume")
@click.argument("scope")
@click.option("--operator", help=_OPERATOR_HELP)
@click.option("--database-url", help=_OPERATOR_URL_HELP)
def resume(scope: str, operator: str | None, database_url: str | None) -> None:
    """Release the kill switch for SCOPE."""
    who = _operator_name(operator)
    with _as_operator(database_url, who) as conn:
        row = conn.execute(
            "DELETE FROM trading_halts WHERE scope = %s "
            "RETURNING reason, halted_by, created_at, now()", (scope,)
        ).fetchone()  # fmt: skip
    if row is None:
        raise click.ClickException(f"no halt for {scope!r}; nothing changed")
    reason, halted_by, halted_at, at = row
    click.echo(f"trading resumed for {scope} by {who} at {at.isoformat()} (halted by "
               f"{halted_by or 'unknown'} at {halted_at.isoformat()}: {reason})")  # fmt: skip


@command.command("halts")
@click.option("--last", default=20, show_default=True, type=click.IntRange(1, 10_000),
              help="How many log entries to show.")  # fmt: skip
@click.option("--database-url", help=_OPERATOR_URL_HELP)
def halts(last: int, database_url: str | None) -> None:
    """The halts in force and the latest halts and resumes: who, when, why."""
    with _as_operator(database_url, None) as conn:
        current = conn.execute(
            "SELECT scope, reason, halted_by, created_at FROM trading_halts ORDER BY scope"
        ).fetchall()
        log = conn.execute(
            "SELECT at, action, scope, operator, db_role, reason FROM trading_halt_log "
            "ORDER BY id DESC LIMIT %s", (last,)
        ).fetchall()  # fmt: skip
    click.echo("in force:" if current else "in force: none")
    for scope, reason, by, at in current:
        click.echo(f"  {scope}  since {at.isoformat()}  by {by or 'unknown'}: {reason}")
    click.echo("log (newest first):")
    for at, action, scope, operator, db_role, reason in log:
        click.echo(
            f"  {at.isoformat()}  {action:<6}  {scope}  by {operator} (as {db_role}): {reason}"
        )


@command.group("keys")
def keys() -> None:
    """API keys: create (the secret is shown once), list, revoke."""


def _connect(database_url: str | None) -> psycopg.Connection:
    return psycopg.connect(_database_url(database_url), autocommit=True, prepare_threshold=None)


def keys_create_on_host(name: str, accounts: list[str], permissions: list[str],
                        rate_limit: int = defaults.API_KEY_DEFAULT_RATE_LIMIT) -> str:  # fmt: skip
    """The shell command that creates a key on an app host, with the app's own settings (for
    the demo and the lab tests, run over SSH as root); `secret_in` reads its answer."""
    args = [f"--name {shlex.quote(name)}", f"--rate-limit {int(rate_limit)}"]
    args += [f"--account {shlex.quote(a)}" for a in accounts]
    args += [f"--permission {shlex.quote(p)}" for p in permissions]
    return _on_host(f"app keys create {' '.join(args)}")


def keys_revoke_on_host(key_id: str) -> str:
    """The shell command that revokes a key on an app host (see keys_create_on_host)."""
    return _on_host(f"app keys revoke {shlex.quote(key_id)} --yes")


def _on_host(args: str) -> str:
    sparkops = f"{layout.APP_CURRENT_LINK}/venv/bin/sparkops"
    env = f"{layout.APP_ETC_DIR}/app.env"
    return f"set -a; . {env}; set +a; {sparkops} {args}"


def secret_in(output: str) -> str:
    """The secret `sparkops app keys create` printed."""
    for line in output.splitlines():
        if line.startswith("secret: "):
            return line.removeprefix("secret: ").strip()
    raise click.ClickException(f"no secret in the output of keys create: {output[-500:]}")


@keys.command("create")
@click.option("--name", required=True, help="Who or what uses the key, e.g. desk-1-bot.")
@click.option("--account", "accounts", multiple=True, required=True,
              help="An account the key may use (repeat for several).")  # fmt: skip
@click.option("--permission", "permissions", multiple=True, default=("read",),
              type=click.Choice(["read", "trade"]), show_default=True,
              help="read: GET orders and positions; trade: POST /orders (repeat for both).",
              )  # fmt: skip
@click.option("--rate-limit", default=defaults.API_KEY_DEFAULT_RATE_LIMIT, type=int,
              show_default=True, help="Requests per second, over every app process.")  # fmt: skip
@click.option("--database-url", help=f"Defaults to {envvars.DATABASE_URL}.")
def keys_create(name: str, accounts: tuple[str, ...], permissions: tuple[str, ...],
                rate_limit: int, database_url: str | None) -> None:  # fmt: skip
    """Create an API key; its secret is printed once and never stored (only its SHA-256)."""
    from app import apikeys

    with _connect(database_url) as conn:
        try:
            key_id, secret = apikeys.create(conn, name, list(accounts), list(permissions),
                                            rate_limit)  # fmt: skip
        except apikeys.KeyRefused as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"key id: {key_id}")
    click.echo(f"secret: {secret}")
    click.echo("The secret is shown only now: store it; send it as Authorization: Bearer <secret>.",
               err=True)  # fmt: skip


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key.")
@click.option("--database-url", help=f"Defaults to {envvars.DATABASE_URL}.")
def keys_list(as_json: bool, database_url: str | None) -> None:
    """List API keys (never their secrets): accounts, permissions, rate limit, revocation."""
    import dataclasses
    import json

    from app import apikeys

    with _connect(database_url) as conn:
        rows = apikeys.list_keys(conn)
    for row in rows:
        if as_json:
            click.echo(json.dumps(dataclasses.asdict(row)))
            continue
        state = f"revoked {row.revoked_at} by {row.revoked_by}" if row.revoked_at else "active"
        click.echo(f"{row.id}  {row.name}  accounts={','.join(row.accounts)}  "
                   f"permissions={','.join(row.permissions)}  rate={row.rate_limit}/s  "
                   f"created {row.created_at} by {row.created_by}  {state}")  # fmt: skip


@keys.command("revoke")
@click.argument("key_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Print what would be revoked; change nothing.")
@click.option("--database-url", help=f"Defaults to {envvars.DATABASE_URL}.")
def keys_revoke(key_id: str, yes: bool, dry_run: bool, database_url: str | None) -> None:
    """Revoke an API key: every app process refuses it within a second (the key is kept, so
    the orders it placed still name it)."""
    from app import apikeys

    with _connect(database_url) as conn:
        try:
            row = apikeys.find(conn, key_id)
        except apikeys.KeyRefused as exc:
            raise click.ClickException(str(exc)) from None
        if row.revoked_at:
            click.echo(f"key {row.id} ({row.name}) was already revoked at {row.revoked_at}")
            return
        click.echo(f"plan: revoke key {row.id} ({row.name}), accounts {', '.join(row.accounts)}, "
                   f"permissions {', '.join(row.permissions)}")  # fmt: skip
        if dry_run:
            click.echo("dry run: nothing changed")
            return
        if not yes and not click.confirm("Revoke it?", default=False):
            raise click.ClickException("not confirmed; nothing changed")
        apikeys.revoke(conn, row.id)
    click.echo(f"revoked key {row.id} ({row.name})")
