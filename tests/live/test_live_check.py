"""Every dashboard query and alert expression, run through a live Prometheus."""

from __future__ import annotations

from alerts import config, rules
from sparkops import livecheck
from sparkops.livecheck import PANEL, Check
from sparkops.wait import wait_until

PG_PANELS = {"WAL archiving status", "Database size"}


def _settled(live):
    """Results once every required query has series (rate windows need a few scrapes)."""
    results = livecheck.run(live.prometheus.url)
    return results if not livecheck.failures(results, live.jobs) else None


def test_every_query_parses_and_queries_of_running_jobs_return_series(live):
    try:
        results = wait_until(lambda: _settled(live), timeout=30, what="required series")
    finally:
        final = livecheck.run(live.prometheus.url)
        print("\n" + livecheck.format_table(final))
    assert len({r.check.source for r in results if r.check.kind == PANEL}) == 10
    assert {r.check.source for r in results if r.check.kind == livecheck.ALERT} == {
        a.name for a in rules.ALERTS
    }
    assert all(r.parsed for r in results)
    pg = [r for r in results if r.check.kind == PANEL and config.JOB_POSTGRES in r.check.jobs]
    assert {r.check.source for r in pg} == PG_PANELS
    assert all(r.series > 0 for r in pg), livecheck.format_table(pg)


def test_wal_archiving_panel_shows_archived_segments(live):
    archived = f"increase({rules.WAL_ARCHIVED}[{config.RATE_WINDOW}])"
    value = wait_until(
        lambda: _first_value(live, archived) > 0, timeout=30, what="archived WAL to show"
    )
    assert value


def _first_value(live, expr: str) -> float:
    result = live.prometheus.query(expr)["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def test_checker_reports_parse_errors_and_missing_series(live):
    broken = Check(PANEL, "broken", "sum(rate(")
    nothing = Check(PANEL, "no such job", 'up{job="not-scraped"}')
    results = livecheck.run(live.prometheus.url, [broken, nothing])
    assert results[0].parsed is False and "bad_data" in results[0].error
    assert results[1].parsed is True and results[1].series == 0
    assert livecheck.failures(results, {"not-scraped"}) == results
    assert livecheck.failures(results[1:], set()) == []


def test_prometheus_loaded_every_rule_and_absent_catches_unscraped_jobs(live):
    groups = live.prometheus.api("rules", type="alert")["data"]["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(loaded) == {a.name for a in rules.ALERTS}
    assert all(r["health"] == "ok" for r in loaded.values()), loaded

    def active() -> set[str]:
        alerts = live.prometheus.api("alerts")["data"]["alerts"]
        return {a["labels"]["alertname"] for a in alerts}

    # The app and pgBouncer jobs are not scraped here: their Down alerts must not be silent.
    missing = {"SparkAppDown"} if config.JOB_APP not in live.jobs else set()
    if config.JOB_PGBOUNCER not in live.jobs:
        missing.add("PgBouncerDown")
    found = wait_until(lambda: missing <= active() and active(), timeout=15, what="absent()")
    assert missing <= found
    assert "PostgresDown" not in found
