"""`sparkops outbox run|status|purge`: the outbox dispatcher and its upkeep."""

from __future__ import annotations

import asyncio
import logging
import re

import click
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import PoolTimeout

from app.outbox import settings
from app.outbox.settings import DispatcherSettings
from app.outbox.store import OutboxStore, app_pool
from runbooks.checklist import Refused
from runbooks.conduct import Runbook
from sparkops import defaults, envvars
from sparkops_cli.conduct import finish, runbook_options

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90s', '30m', '12h', '7d' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text or "")
    if not match or float(match.group(1)) <= 0:
        raise click.BadParameter(
            f"{text!r} is not a duration: write a positive number and a unit, "
            "s, m, h or d (for example 90s, 30m, 12h, 7d)"
        )
    return float(match.group(1)) * DURATION_UNITS[match.group(2)]


def _duration(_ctx, _param, value):
    return None if value is None else parse_duration(value)


database_url_option = click.option(
    "--database-url",
    envvar=settings.ENV_DATABASE_URL,
    required=True,
    help=f"libpq URL of the app database through pgBouncer, as the app role "
    f"(env {settings.ENV_DATABASE_URL}).",
)


@click.group("outbox")
def command() -> None:
    """Publish outbox events (run), inspect the backlog (status), delete old ones (purge),
    requeue dead letters (requeue)."""


@command.command("run")
@database_url_option
@click.option(
    "--publisher",
    type=click.Choice(settings.PUBLISHERS),
    default="redis",
    show_default=True,
    envvar=envvars.OUTBOX_PUBLISHER,
    help="Where events go.",
)
@click.option(
    "--redis-url",
    envvar=settings.ENV_REDIS_URL,
    default=settings.REDIS_URL,
    show_default=True,
    help=f"Redis to XADD to (env {settings.ENV_REDIS_URL}).",
)
@click.option(
    "--stream", default=settings.REDIS_STREAM, show_default=True, help="Redis stream name."
)
@click.option(
    "--stream-maxlen",
    type=click.IntRange(min=0),
    default=settings.REDIS_STREAM_MAXLEN,
    show_default=True,
    help="Approximate stream cap (XADD MAXLEN ~); 0: no cap.",
)
@click.option(
    "--webhook-url",
    envvar=settings.ENV_WEBHOOK_URL,
    help=f"Webhook endpoint (env {settings.ENV_WEBHOOK_URL}); its signing secret "
    f"comes from {settings.ENV_WEBHOOK_SECRET_FILE} or {settings.ENV_WEBHOOK_SECRET}.",
)
@click.option(
    "--name",
    help="Stable dispatcher name (one process per name, e.g. the systemd "
    "unit): a restart under it takes back its predecessor's claims at once.",
)
@click.option("--metrics-host", default="0.0.0.0", show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=defaults.OUTBOX_METRICS_PORT,
    show_default=True,
    help="Port for /metrics; 0 turns it off.",
)
@click.option("--batch-size", type=int, default=settings.BATCH_SIZE, show_default=True)
@click.option(
    "--max-per-aggregate",
    type=int,
    default=settings.MAX_PER_AGGREGATE,
    show_default=True,
    help="Events of one aggregate taken in one claim.",
)
@click.option(
    "--lease",
    "lease_seconds",
    type=float,
    default=settings.LEASE_SECONDS,
    show_default=True,
    help="Seconds a claim holds its events.",
)
@click.option(
    "--poll-interval",
    type=float,
    default=settings.POLL_INTERVAL_SECONDS,
    show_default=True,
    help="Seconds to wait after a claim that found nothing.",
)
@click.option(
    "--workers",
    type=int,
    default=settings.WORKERS,
    show_default=True,
    help="Claim loops in this process, each under a lease owner of its own (NAME/1...).",
)
@click.option("--max-attempts", type=int, default=settings.MAX_ATTEMPTS, show_default=True)
@click.option(
    "--backoff-base", type=float, default=settings.BACKOFF_BASE_SECONDS, show_default=True
)
@click.option("--backoff-cap", type=float, default=settings.BACKOFF_CAP_SECONDS, show_default=True)
@click.option(
    "--publish-timeout", type=float, default=settings.PUBLISH_TIMEOUT_SECONDS, show_default=True
)
@click.option(
    "--retention",
    default=f"{int(settings.RETENTION_HOURS)}h",
    show_default=True,
    callback=_duration,
    help="Delete delivered events older than this (e.g. 7d).",
)
@click.option(
    "--purge-interval", type=float, default=settings.PURGE_INTERVAL_SECONDS, show_default=True
)
@click.option(
    "--stats-interval",
    type=float,
    default=settings.STATS_INTERVAL_SECONDS,
    show_default=True,
    help="Seconds between refreshes of the backlog gauges.",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    default="INFO",
    show_default=True,
)
def run(database_url, publisher, redis_url, stream, stream_maxlen, webhook_url, name,
        metrics_host, metrics_port, batch_size, max_per_aggregate, lease_seconds,
        poll_interval, workers, max_attempts, backoff_base, backoff_cap, publish_timeout, retention,
        purge_interval, stats_interval, log_level) -> None:  # fmt: skip
    """Run the dispatcher until SIGTERM (finishes or releases its batch, then exits 0)."""
    from app.outbox.publishers import build_publisher
    from app.outbox.service import serve

    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = DispatcherSettings(
            batch_size=batch_size,
            max_per_aggregate=max_per_aggregate,
            lease_seconds=lease_seconds,
            poll_interval=poll_interval,
            workers=workers,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            publish_timeout=publish_timeout,
            retention_hours=retention / 3600.0,
            purge_interval=purge_interval,
            stats_interval=stats_interval,
        )
        target = build_publisher(
            publisher,
            redis_url=redis_url,
            stream=stream,
            stream_maxlen=stream_maxlen or None,
            webhook_url=webhook_url,
            timeout=publish_timeout,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    check_database_url(database_url)
    try:
        asyncio.run(
            serve(database_url, target, config, name=name, metrics_host=metrics_host,
                  metrics_port=metrics_port)
        )  # fmt: skip
    except PoolTimeout as exc:
        raise click.ClickException(unreachable(database_url)) from exc


DB_CONNECT_TIMEOUT_SECONDS = 10.0


def check_database_url(database_url: str) -> None:
    try:
        conninfo_to_dict(database_url)
    except psycopg.ProgrammingError as exc:
        raise click.BadParameter(
            f"not a libpq URL or connection string ({str(exc).strip()}); write it as "
            "postgresql://USER:PASSWORD@HOST:PORT/DBNAME",
            param_hint="--database-url",
        ) from exc


async def _with_store(database_url: str, work):
    check_database_url(database_url)
    pool = app_pool(database_url, max_size=1)
    try:
        await pool.open(wait=True, timeout=DB_CONNECT_TIMEOUT_SECONDS)
    except PoolTimeout as exc:
        await pool.close()
        raise click.ClickException(unreachable(database_url)) from exc
    try:
        return await work(OutboxStore(pool))
    finally:
        await pool.close()


def unreachable(database_url: str) -> str:
    """What to say when the database does not answer (the URL without its password)."""
    try:
        info = conninfo_to_dict(database_url)
    except psycopg.ProgrammingError:
        return "the database URL is not a valid libpq URL or connection string: check it"
    where = f"{info.get('host', '?')}:{info.get('port', '?')}/{info.get('dbname', '?')}"
    return (
        f"cannot connect to the database at {where} as {info.get('user', '?')} within "
        f"{DB_CONNECT_TIMEOUT_SECONDS:.0f}s: check --database-url (pgBouncer's address, the "
        "app role and its password) and that pgBouncer is running"
    )


@command.command("status")
@database_url_option
@click.option(
    "--errors",
    "error_limit",
    type=click.IntRange(0, 100),
    default=5,
    show_default=True,
    help="How many of the most common errors to list.",
)
def status(database_url: str, error_limit: int) -> None:
    """Pending events, the oldest one's age (lag), dead letters and the commonest errors."""

    async def work(store: OutboxStore):
        return await store.stats(), await store.top_errors(error_limit)

    stats, errors = asyncio.run(_with_store(database_url, work))
    click.echo(f"pending:            {stats.pending} ({stats.in_flight} claimed right now)")
    click.echo(f"oldest pending age: {stats.oldest_pending_age:.1f}s")
    click.echo(f"dead letters:       {stats.dead}")
    if errors:
        click.echo("top errors:")
        for state, error, count, attempts in errors:
            click.echo(f"  {count:>6} {state:<7} (attempts up to {attempts}) {error}")


@command.command("purge")
@database_url_option
@click.option(
    "--older-than",
    required=True,
    callback=_duration,
    help="Delete delivered events delivered longer ago than this (e.g. 7d, 12h).",
)
@runbook_options
def purge(database_url: str, older_than: float, options) -> None:
    """Delete delivered outbox events older than a duration (pending and dead are kept).

    Exit codes: 0 done, 1 failed, 2 refused, 3 not confirmed."""
    check_database_url(database_url)

    def prepare(run):
        plan = _refusing(lambda: asyncio.run(
            _with_store(database_url, lambda s: s.purge_plan(older_than))))  # fmt: skip
        window = (
            f" (delivered between {plan.oldest:%Y-%m-%d %H:%M:%S} and "
            f"{plan.newest:%Y-%m-%d %H:%M:%S})"
            if plan.events
            else ""
        )
        run.plan = [
            f"plan: delete {plan.events} delivered outbox event(s) delivered more than "
            f"{older_than:.0f}s ago{window}; pending and dead-lettered events are not touched"
        ]
        run.facts["planned"] = plan.events
        return plan

    def act(run, plan):
        if plan.events == 0:
            run.say("nothing to delete")
            return

        async def work(store: OutboxStore):
            return await store.purge(older_than, chunk=settings.PURGE_CHUNK, max_chunks=1_000_000)

        with run.step("Delete the delivered events"):
            deleted = asyncio.run(_with_store(database_url, work))
        run.facts["deleted"] = deleted
        run.say(f"deleted {deleted} delivered outbox event(s)")

    finish(Runbook("outbox-purge", prepare, act, question="Delete them?"), options)


@command.command("requeue")
@database_url_option
@click.option("--event-id", "event_ids", multiple=True, help="A dead event to requeue (repeat).")
@click.option("--all", "requeue_all", is_flag=True, help="Requeue every dead-lettered event.")
@runbook_options
def requeue(database_url: str, event_ids, requeue_all: bool, options) -> None:
    """Put dead-lettered events back in the queue with fresh attempts (after fixing the cause);
    their aggregates' later events follow them.

    Exit codes: 0 done, 1 failed, 2 refused, 3 not confirmed."""
    if bool(event_ids) == requeue_all:
        raise click.UsageError("name the events with --event-id (repeatable) or pass --all")
    check_database_url(database_url)
    selected = None if requeue_all else list(event_ids)

    def prepare(run):
        rows = _refusing(lambda: asyncio.run(
            _with_store(database_url, lambda s: s.dead_letters(selected))))  # fmt: skip
        if selected:
            unknown = set(selected) - {row[0] for row in rows}
            if unknown:
                raise Refused(
                    f"not dead-lettered (or unknown): {', '.join(sorted(unknown))}",
                    "`sparkops outbox status` lists the errors; dead events have status 'dead'",
                )
        run.plan = [f"plan: requeue {len(rows)} dead-lettered event(s) with fresh attempts"]
        for event_id, agg_type, agg_id, event_type, attempts, error in rows:
            run.plan.append(
                f"  {event_id} {agg_type}/{agg_id} {event_type} attempts={attempts}: {error}"
            )
        return rows

    def act(run, rows):
        if not rows:
            run.say("nothing to requeue")
            return
        with run.step("Requeue the dead letters"):
            count = asyncio.run(_with_store(database_url, lambda s: s.requeue_dead(selected)))
        run.facts["requeued"] = count
        run.say(f"requeued {count} event(s)")

    finish(Runbook("outbox-requeue", prepare, act, question="Requeue them?"), options)


def _refusing(read):
    """A read in the plan phase: a database that does not answer refuses (nothing changed)."""
    try:
        return read()
    except click.ClickException as exc:
        raise Refused(exc.message, "check --database-url and that pgBouncer runs") from None
