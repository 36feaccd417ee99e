"""app/pgbouncer_exporter.py against the real pgBouncer 1.18 of the test stack."""

from __future__ import annotations

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import pgbouncer_exporter
from sparkops import defaults
from sparkops import metric_names as names
from testkit.proc import free_port
from tests.conftest import connect_app


def _stats_dsn(stack) -> str:
    bouncer = stack.bouncer
    return psycopg.conninfo.make_conninfo(
        host=bouncer.host,
        port=str(bouncer.port),
        user=bouncer.stats_user,
        password=bouncer.stats_password,
        dbname=defaults.PGBOUNCER_ADMIN_DB,
    )


def _scrape(dsn: str) -> dict[tuple[str, tuple], float]:
    port = free_port()
    server, thread = pgbouncer_exporter.serve(dsn, "127.0.0.1", port)
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        server.shutdown()
        thread.join(timeout=5)
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_pool_metrics_from_a_real_pgbouncer(db_stack):
    with connect_app(db_stack) as conn:
        conn.execute("SELECT 1")
        samples = _scrape(_stats_dsn(db_stack))
    assert samples[(names.PGBOUNCER_UP, ())] == 1
    app_pool = (("database", defaults.DATABASE_NAME), ("user", defaults.ROLE_APP))
    assert samples[(names.PGBOUNCER_CLIENT_ACTIVE, app_pool)] >= 1
    assert samples[(names.PGBOUNCER_CLIENT_WAITING, app_pool)] == 0
    assert (names.PGBOUNCER_SERVER_ACTIVE, app_pool) in samples
    assert (names.PGBOUNCER_SERVER_IDLE, app_pool) in samples
    assert samples[(names.PGBOUNCER_CLIENT_MAXWAIT, app_pool)] >= 0
    pool_size = (names.PGBOUNCER_POOL_SIZE, (("database", defaults.DATABASE_NAME),))
    assert samples[pool_size] == db_stack.pool_size


def test_unreachable_pgbouncer_is_reported_down_not_a_crash():
    dead = f"host=127.0.0.1 port={free_port()} user=x password=y dbname=pgbouncer"
    samples = _scrape(dead)
    assert samples[(names.PGBOUNCER_UP, ())] == 0
    assert not any(name == names.PGBOUNCER_CLIENT_ACTIVE for name, _ in samples)


def test_families_ignore_missing_columns():
    pools = [{"database": "spark", "user": "app", "cl_active": 3}]
    got = {f.name: f.samples for f in pgbouncer_exporter.families(pools, [{"name": "spark"}])}
    assert [s.value for s in got[names.PGBOUNCER_CLIENT_ACTIVE]] == [3.0]
    assert got[names.PGBOUNCER_CLIENT_WAITING] == []
    assert got[names.PGBOUNCER_POOL_SIZE] == []


@pytest.mark.parametrize("argv", [["--listen", "nonsense"], []])
def test_bad_arguments_say_what_is_wrong(argv, monkeypatch, capsys):
    monkeypatch.delenv(pgbouncer_exporter.DSN_ENV, raising=False)
    with pytest.raises(SystemExit):
        pgbouncer_exporter.main(["--dsn", "host=x", *argv] if argv else argv)
    err = capsys.readouterr().err
    assert "host:port" in err or pgbouncer_exporter.DSN_ENV in err
