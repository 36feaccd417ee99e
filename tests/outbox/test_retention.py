"""Retention: only delivered events older than the retention go, by the dispatcher's periodic
purge and by `sparkops outbox purge`; and `sparkops outbox status` reports the backlog."""

from __future__ import annotations

import asyncio

import psycopg
from click.testing import CliRunner

from app.outbox import queries
from app.outbox.dispatcher import Dispatcher
from app.outbox.publishers import ConsolePublisher
from app.outbox.settings import DispatcherSettings
from app.outbox.store import OutboxStore, app_pool
from sparkops_cli.commands.outbox import command as outbox_cli
from tests.conftest import connect_app
from tests.outbox.support import insert_events, outbox_counts

# Event rows by what the purge must do with them: (status, age of delivered_at/created_at).
LAYOUT = {
    "old_delivered": ("delivered", "10 days"),  # the only kind a 7-day retention deletes
    "new_delivered": ("delivered", "1 hour"),
    "old_pending": ("pending", "10 days"),
    "old_dead": ("dead", "10 days"),
}


def seed(conn) -> dict[str, set[str]]:
    kinds = {}
    for kind, (status, age) in LAYOUT.items():
        rows = insert_events(conn, 5, 5, prefix=f"{kind}-")
        ids = [r.id for r in rows]
        conn.execute(
            "UPDATE outbox_events SET status = %s, created_at = now() - %s::interval,"
            " delivered_at = CASE WHEN %s = 'delivered' THEN now() - %s::interval END,"
            " last_error = CASE WHEN %s = 'dead' THEN 'ConnectionError: refused' END"
            " WHERE id = ANY(%s)",
            (status, age, status, age, status, ids),
        )
        kinds[kind] = {r.event_id for r in rows}
    return kinds


def remaining(conn) -> set[str]:
    return {r[0] for r in conn.execute("SELECT event_id::text FROM outbox_events")}


def test_dispatcher_purge_deletes_only_old_delivered(clean_db):
    with connect_app(clean_db) as conn:
        kinds = seed(conn)

        async def purge() -> int:
            pool = app_pool(clean_db.app_conninfo())
            await pool.open(wait=True)
            try:
                dispatcher = Dispatcher(
                    OutboxStore(pool), ConsolePublisher(), "purge", DispatcherSettings()
                )
                return await dispatcher.purge_expired()
            finally:
                await pool.close()

        assert asyncio.run(purge()) == 5
        assert remaining(conn) == set().union(*kinds.values()) - kinds["old_delivered"]


def test_purge_command_plans_confirms_and_deletes(clean_db):
    runner = CliRunner()
    url = ["--database-url", clean_db.app_conninfo()]
    with connect_app(clean_db) as conn:
        kinds = seed(conn)
        everything = remaining(conn)

        bad = runner.invoke(outbox_cli, ["purge", *url, "--older-than", "7 weeks", "--yes"])
        assert bad.exit_code == 2 and "is not a duration" in bad.output
        dry = runner.invoke(outbox_cli, ["purge", *url, "--older-than", "7d", "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert "plan: delete 5 delivered" in dry.output and "nothing was changed" in dry.output
        # The runbooks' convention: not confirmed is exit 3 and changes nothing.
        declined = runner.invoke(outbox_cli, ["purge", *url, "--older-than", "7d"], input="n\n")
        assert declined.exit_code == 3 and "not confirmed" in declined.output
        assert remaining(conn) == everything

        done = runner.invoke(outbox_cli, ["purge", *url, "--older-than", "7d", "--yes"])
        assert done.exit_code == 0, done.output
        assert "deleted 5 delivered" in done.output
        assert remaining(conn) == everything - kinds["old_delivered"]


def test_status_command_reports_backlog_and_errors(clean_db):
    with connect_app(clean_db) as conn:
        seed(conn)
    result = CliRunner().invoke(outbox_cli, ["status", "--database-url", clean_db.app_conninfo()])
    assert result.exit_code == 0, result.output
    assert "pending:            5 " in result.output
    assert "dead letters:       5" in result.output
    # The oldest pending event was created 10 days ago.
    age = float(result.output.split("oldest pending age:")[1].split("s")[0])
    assert 10 * 86400 <= age < 10 * 86400 + 600
    assert "ConnectionError: refused" in result.output


def _plan_nodes(plan: dict) -> list[str]:
    """Every node of an EXPLAIN (FORMAT JSON) plan, as 'Node Type on relation'."""
    node = f"{plan['Node Type']} on {plan.get('Relation Name', '-')}"
    return [node] + [n for child in plan.get("Plans", []) for n in _plan_nodes(child)]


def test_gauges_and_status_read_pending_and_dead_rows_by_index_not_the_delivered_week(clean_db):
    """The gauges refresh every few seconds; the table holds a week of delivered events."""
    with connect_app(clean_db) as conn:
        seed(conn)
        conn.execute(
            "INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, payload, "
            "status, delivered_at) SELECT 'order', 'done-' || g, 'order.created', '{}', "
            "'delivered', now() FROM generate_series(1, 20000) AS g"
        )
    with psycopg.connect(clean_db.owner_conninfo(), autocommit=True) as owner:
        owner.execute("ANALYZE outbox_events")
        for sql in (queries.STATS, queries.TOP_ERRORS):
            explained = owner.execute("EXPLAIN (FORMAT JSON) " + sql, {"limit": 5}).fetchone()
            nodes = _plan_nodes(explained[0][0]["Plan"])
            assert "Seq Scan on outbox_events" not in nodes, nodes
    result = CliRunner().invoke(outbox_cli, ["status", "--database-url", clean_db.app_conninfo()])
    assert result.exit_code == 0, result.output
    assert "pending:            5 " in result.output
    assert "dead letters:       5" in result.output


def test_requeue_command_puts_dead_letters_back(clean_db):
    runner = CliRunner()
    url = ["--database-url", clean_db.app_conninfo()]
    with connect_app(clean_db) as conn:
        kinds = seed(conn)
        dead = sorted(kinds["old_dead"])

        neither = runner.invoke(outbox_cli, ["requeue", *url])
        assert neither.exit_code == 2 and "--event-id" in neither.output
        wrong = runner.invoke(
            outbox_cli, ["requeue", *url, "--event-id", sorted(kinds["old_pending"])[0], "--yes"]
        )
        assert wrong.exit_code == 2 and "not dead-lettered" in wrong.output
        assert "nothing was changed" in wrong.output
        dry = runner.invoke(outbox_cli, ["requeue", *url, "--all", "--dry-run"])
        assert dry.exit_code == 0 and "plan: requeue 5 dead-lettered" in dry.output
        assert outbox_counts(conn)["dead"] == 5

        one = runner.invoke(outbox_cli, ["requeue", *url, "--event-id", dead[0], "--yes"])
        assert one.exit_code == 0 and "requeued 1 event" in one.output, one.output
        status, attempts = conn.execute(
            "SELECT status, attempts FROM outbox_events WHERE event_id = %s", (dead[0],)
        ).fetchone()
        assert (status, attempts) == ("pending", 0)
        assert outbox_counts(conn)["dead"] == 4


def test_commands_refuse_a_malformed_database_url():
    for args in (["status"], ["purge", "--older-than", "7d", "--yes"], ["run"]):
        result = CliRunner().invoke(outbox_cli, [*args, "--database-url", "host=x bogus=1"])
        assert result.exit_code == 2, result.output
        assert "not a libpq URL" in result.output
