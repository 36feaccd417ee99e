"""Every dashboard query and alert expression, run through a live Prometheus."""

from __future__ import annotations

from alerts import config, rules
from dashboards import risk
from signoff import livecheck
from signoff.livecheck import PANEL, Check
from sparkops import metric_names as m
from sparkops.wait import wait_until
from testkit.prometheus import Prometheus

PGBOUNCER_PANEL = "pgBouncer pool utilization"


CLUSTER_JOBS = {config.JOB_PATRONI, config.JOB_ETCD}


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
    assert len({r.check.source for r in results if r.check.kind == PANEL}) == len(risk.PANELS)
    assert {r.check.source for r in results if r.check.kind == livecheck.ALERT} == {
        a.name for a in rules.ALERTS
    }
    assert all(r.parsed for r in results)
    panels = [r for r in results if r.check.kind == PANEL]
    covered = {r.check.source for r in panels if livecheck.required(r.check, live.jobs)}
    uncovered = {r.check.source for r in panels} - covered
    # Only panels of jobs not started here may go unchecked: the pgBouncer exporter's when
    # absent, and the Patroni cluster's (a single database here; tests/ha runs the cluster).
    cluster = {r.check.source for r in panels if r.check.jobs <= CLUSTER_JOBS}
    assert cluster == {"Cluster: primary and replicas", "Cluster: replication lag"}
    expected_uncovered = set() if config.JOB_PGBOUNCER in live.jobs else {PGBOUNCER_PANEL}
    assert uncovered == expected_uncovered | cluster
    # Every other job the dashboard and the alerts read is running here.
    assert set().union(*(r.check.jobs for r in results)) - CLUSTER_JOBS <= live.jobs
    assert all(r.series > 0 for r in panels if r.check.source in covered)


def _value(live, expr: str) -> float:
    result = live.prometheus.query(expr)["data"]["result"]
    return sum(float(item["value"][1]) for item in result)


def test_driven_traffic_shows_in_the_app_panels(live):
    assert live.traffic["in_flight"] == live.traffic["payload_mismatch"] == 1
    app = config.APP_SELECTOR
    wanted = {
        "price_band blocks": rules.sel(m.RISK_BLOCKS, app, 'rule="price_band"'),
        "max_notional blocks": rules.sel(m.RISK_BLOCKS, app, 'rule="max_notional"'),
        "409 in flight": rules.sel(m.IDEMPOTENCY_OUTCOMES, app, 'outcome="in_flight"'),
        "422 mismatch": rules.sel(m.IDEMPOTENCY_OUTCOMES, app, 'outcome="payload_mismatch"'),
        "replayed": rules.sel(m.IDEMPOTENCY_OUTCOMES, app, 'outcome="replayed"'),
        "csp reports": rules.sel(m.CSP_REPORTS, app),
        "money operations": rules.sel(m.MONEY_OPERATIONS, app),
        "orders accepted": rules.sel(m.ORDERS_ACCEPTED, app),
    }
    values = wait_until(
        lambda: (v := {k: _value(live, e) for k, e in wanted.items()}) and all(v.values()) and v,
        timeout=20,
        what="the driven traffic in Prometheus",
    )
    assert values["orders accepted"] >= 6


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

    # Down alerts of jobs not scraped here must not be silent (absent()), and those of the
    # jobs that run must stay quiet. The restore drill and backup textfile metrics (job
    # node) are not published here, so their alerts fire through absent() too.
    down_of_job = {
        config.JOB_POSTGRES: "PostgresDown",
        config.JOB_PGBOUNCER: "PgBouncerDown",
        config.JOB_APP: "SparkAppDown",
        config.JOB_OUTBOX: "OutboxDispatcherDown",
    }
    expected = {alert for job, alert in down_of_job.items() if job not in live.jobs}

    def evaluated() -> bool:
        groups = live.prometheus.api("rules", type="alert")["data"]["groups"]
        return all(not g["lastEvaluation"].startswith("0001-") for g in groups)

    # Every rule group evaluated at least once, so an empty set of alerts means quiet.
    wait_until(evaluated, timeout=20, what="the rules to be evaluated")
    if expected:
        found = wait_until(lambda: (a := active()) >= expected and a, timeout=20, what="alerts")
    else:
        found = active()
    assert not found & {alert for job, alert in down_of_job.items() if job in live.jobs}
    # Two conflicts in about fifteen orders is a share above 5 %, but far under 3 a minute: a
    # quiet system's retry, which the alert's rate floor keeps quiet.
    assert "IdempotencyConflictRateHigh" not in active()
    if config.JOB_NODE in live.jobs:  # a fresh backup and a passed drill are published
        assert not found & {"PgBackRestBackupTooOld", "RestoreDrillFailed"}


def test_livecheck_command_passes_here_and_fails_on_an_empty_prometheus(live):
    from click.testing import CliRunner

    from sparkops_cli.main import main

    # Default: every job the dashboard and the alerts read is required.
    ok = CliRunner().invoke(main, ["dashboards", "livecheck", "--prometheus", live.prometheus.url])
    assert ok.exit_code == 0, ok.output
    assert "required series present" in ok.output
    with Prometheus() as empty:
        bad = CliRunner().invoke(main, ["dashboards", "livecheck", "--prometheus", empty.url])
    assert bad.exit_code != 0
    assert "failed" in bad.output
