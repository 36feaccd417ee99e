"""Pure checks of the alert rules: shape, runbook anchors, thresholds from config."""

from __future__ import annotations

import re

import yaml

from alerts import build, promtool_cases, rules
from alerts import config as c
from sparkops import metric_names
from sparkops.artefacts import REPO_ROOT

REQUIRED = {
    "RiskBlockRateHigh",
    "PgBouncerPoolSaturation",
    "HTTPLatencyHigh",
    "CSPViolationsHigh",
    "IdempotencyConflictRateHigh",
    "PostgresWalArchiveFailing",
    "PostgresWalArchiveStale",
    "PgBackRestBackupTooOld",
    "OutboxLagHigh",
    "OutboxDeadLetters",
    "PostgresDown",
    "PgBouncerDown",
    "RestoreDrillFailed",
    "SparkAppNotReady",
    "SparkAppServerErrors",
}


def _doc_anchors() -> set[str]:
    text = (REPO_ROOT / c.RUNBOOK_DOC).read_text()
    return {h.strip().lower() for h in re.findall(r"^## (.+)$", text, flags=re.M)}


def test_every_required_alert_exists_once():
    names = [a.name for a in rules.ALERTS]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED


def test_every_rule_has_severity_summary_description_runbook():
    for rule in rules.rule_file()["groups"][0]["rules"]:
        assert rule["labels"]["severity"] in (c.SEVERITY_CRITICAL, c.SEVERITY_WARNING)
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}
        assert "{{" not in notes["summary"], "summary is fixed text"
        assert "{{" in notes["description"], "description is templated"
        assert re.fullmatch(r"\d+[mh]", rule["for"]), rule["for"]


def test_runbook_urls_point_at_sections_that_exist():
    anchors = _doc_anchors()
    for alert in rules.ALERTS:
        assert alert.runbook_url == f"{c.RUNBOOK_BASE_URL}#{alert.name.lower()}"
        assert alert.anchor in anchors, f"docs/alerts.md has no section '## {alert.name}'"


def test_thresholds_and_durations_come_from_config():
    alerts = rules.by_name()
    pairs = {
        "RiskBlockRateHigh": (c.RISK_BLOCK_RATE_PER_SECOND, c.RISK_BLOCK_FOR),
        "PgBouncerPoolSaturation": (c.PGBOUNCER_MAX_WAIT_SECONDS, c.PGBOUNCER_SATURATION_FOR),
        "HTTPLatencyHigh": (c.HTTP_LATENCY_P95_SECONDS, c.HTTP_LATENCY_FOR),
        "CSPViolationsHigh": (c.CSP_REPORTS_PER_SECOND, c.CSP_VIOLATIONS_FOR),
        "IdempotencyConflictRateHigh": (c.IDEMPOTENCY_CONFLICT_RATIO, c.IDEMPOTENCY_CONFLICT_FOR),
        "PostgresWalArchiveStale": (c.WAL_ARCHIVE_STALE_SECONDS, c.WAL_ARCHIVE_STALE_FOR),
        "PgBackRestBackupTooOld": (c.BACKUP_MAX_AGE_SECONDS, c.BACKUP_TOO_OLD_FOR),
        "OutboxLagHigh": (c.OUTBOX_LAG_SECONDS, c.OUTBOX_LAG_FOR),
        "OutboxDeadLetters": (c.OUTBOX_DEAD_LETTERS_MAX, c.OUTBOX_DEAD_LETTERS_FOR),
        "RestoreDrillFailed": (c.RESTORE_DRILL_MAX_AGE_SECONDS, c.RESTORE_DRILL_FOR),
        "SparkAppServerErrors": (c.APP_SERVER_ERROR_RATIO, c.APP_SERVER_ERRORS_FOR),
    }
    for name, (threshold, for_) in pairs.items():
        alert = alerts[name]
        assert re.search(rf"> {re.escape(rules.num(threshold))}(\)|\s|$)", alert.expr), name
        assert alert.for_ == for_, name


def test_no_data_is_not_silence_for_the_down_and_textfile_alerts():
    alerts = rules.by_name()
    for name in ("PostgresDown", "PgBouncerDown", "SparkAppDown", "OutboxDispatcherDown",
                 "PgBackRestBackupTooOld", "RestoreDrillFailed"):  # fmt: skip
        assert "absent(" in alerts[name].expr, name


def test_metrics_in_expressions_are_declared_names():
    declared = {v for v in vars(metric_names).values() if isinstance(v, str)}
    histogram_series = {
        f"{metric_names.HTTP_REQUEST_DURATION}_{suffix}" for suffix in ("bucket", "count")
    }
    for alert in rules.ALERTS:
        for ident in re.findall(r"([a-z_][a-z0-9_]*)\{", alert.expr):
            assert ident in declared | histogram_series, (alert.name, ident)


def test_metric_names_in_docs_are_declared():
    declared = {v for v in vars(metric_names).values() if isinstance(v, str)}
    text = (REPO_ROOT / c.RUNBOOK_DOC).read_text()
    for token in re.findall(r"`((?:spark|pgbackrest)_[a-z0-9_]+)`", text):
        assert token in declared, f"docs/alerts.md names {token}, not in sparkops.metric_names"


def test_generated_rule_file_is_deterministic_yaml():
    first, second = rules.render(), rules.render()
    assert first == second and first.endswith("\n")
    assert yaml.safe_load(first) == rules.rule_file()
    assert (REPO_ROOT / build.RULES_PATH).read_text() == first


def test_every_alert_has_a_firing_and_a_quiet_promtool_case():
    kinds: dict[str, set[str]] = {}
    for case in promtool_cases.scenarios():
        kinds.setdefault(case.alert, set()).add(type(case).__name__)
    for alert in rules.ALERTS:
        assert kinds.get(alert.name) == {"Firing", "Quiet"}, alert.name


def test_app_alerts_watch_the_readiness_gauge_and_the_users_5xx():
    alerts = rules.by_name()
    not_ready = alerts["SparkAppNotReady"]
    assert not_ready.expr == f'{metric_names.APP_READY}{{job="{c.JOB_APP}"}} == 0'
    assert not_ready.for_ == c.APP_NOT_READY_FOR
    errors = alerts["SparkAppServerErrors"]
    assert 'status=~"5.."' in errors.expr
    assert f"> {rules.num(c.APP_SERVER_ERRORS_MIN_PER_SECOND)})" in errors.expr
    # Probe routes are out of both sides of the share: /readyz's 503 is the other alert's.
    for route in c.APP_PROBE_ROUTES:
        assert errors.expr.count(route) == errors.expr.count("_count{")
    assert f"[{c.APP_SERVER_ERRORS_WINDOW}]" in errors.expr
    assert all(a.severity == c.SEVERITY_CRITICAL for a in (not_ready, errors))
