"""Pure checks of the generated dashboard: fourteen panels (twelve, and two for the cluster),
stable uid, datasource variable, units, thresholds agreeing with the alert config,
deterministic JSON."""

from __future__ import annotations

import json
import re

import yaml

from alerts import config as c
from dashboards import build, panels, risk
from sparkops import metric_names
from sparkops.artefacts import REPO_ROOT

EXPECTED_TITLES = [
    "Risk blocks rate",
    "Idempotency conflicts",
    "pgBouncer pool utilization",
    "HTTP request duration (P95)",
    "CSP violations",
    "WAL archiving status",
    "Restore: WAL to replay",
    "Backups: age of the newest",
    "Database size",
    "Outbox event lag",
    "Money utils operations",
    "Position unique violations",
    "Cluster: primary and replicas",
    "Cluster: replication lag",
]


def _built() -> dict:
    return json.loads(panels.to_json(risk.dashboard))


def test_fourteen_panels_with_stable_ids_and_uid():
    dash = _built()
    assert dash["uid"] == "spark-risk-idempotency-pitr"
    assert [p["title"] for p in dash["panels"]] == EXPECTED_TITLES
    assert [p["id"] for p in dash["panels"]] == list(range(1, len(EXPECTED_TITLES) + 1))
    positions = {(p["gridPos"]["x"], p["gridPos"]["y"]) for p in dash["panels"]}
    assert len(positions) == len(EXPECTED_TITLES), "panels overlap"


def test_datasource_variable_used_by_every_panel_and_target():
    dash = _built()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["expr"].strip()


def test_units_are_set():
    units = {p["title"]: p["fieldConfig"]["defaults"]["unit"] for p in _built()["panels"]}
    assert units["HTTP request duration (P95)"] == "s"
    assert units["Database size"] == "bytes"
    assert units["WAL archiving status"] == "s"
    assert all(units.values())


def test_thresholds_come_from_alert_config():
    steps = {
        p["title"]: [s["value"] for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]][1:]
        for p in _built()["panels"]
    }
    assert steps["Risk blocks rate"] == [c.RISK_BLOCK_RATE_PER_SECOND]
    assert steps["HTTP request duration (P95)"] == [c.HTTP_LATENCY_P95_SECONDS]
    assert steps["CSP violations"] == [c.CSP_REPORTS_PER_SECOND]
    assert steps["WAL archiving status"] == [c.WAL_ARCHIVE_STALE_SECONDS]
    assert steps["Backups: age of the newest"] == [c.BACKUP_MAX_AGE_SECONDS]
    assert steps["Outbox event lag"] == [c.OUTBOX_LAG_SECONDS]
    assert steps["pgBouncer pool utilization"] == [c.PGBOUNCER_POOL_SIZE]


def test_right_axis_override_matches_its_legends():
    for panel in risk.PANELS:
        overrides = panels._right_axis_override(panel)
        right = [q.legend for q in panel.queries if q.right_axis]
        if not right:
            assert overrides == []
            continue
        pattern = re.compile(overrides[0]["matcher"]["options"])
        for query in panel.queries:
            shown = re.sub(r"\{\{[^}]*\}\}", "spark", query.legend)
            assert bool(pattern.match(shown)) == query.right_axis, (panel.title, query.legend)


def test_metrics_in_panel_queries_are_declared_names():
    declared = {v for v in vars(metric_names).values() if isinstance(v, str)}
    declared.add(f"{metric_names.HTTP_REQUEST_DURATION}_bucket")
    for panel in _built()["panels"]:
        for target in panel["targets"]:
            for ident in re.findall(r"([a-z_][a-z0-9_]*)\{", target["expr"]):
                assert ident in declared, (panel["title"], ident)


def test_json_is_deterministic_sorted_and_committed():
    first = panels.to_json(risk.dashboard)
    assert first == panels.to_json(risk.dashboard)
    assert first.endswith("}\n")
    assert first == json.dumps(json.loads(first), sort_keys=True, indent=2) + "\n"
    committed = REPO_ROOT / build.json_path(risk)
    assert committed.read_text() == first


def test_provisioning_file_points_grafana_at_the_dashboards():
    doc = yaml.safe_load(build.render_provisioning())
    (provider,) = doc["providers"]
    assert doc["apiVersion"] == 1
    assert provider["type"] == "file"
    assert provider["options"]["path"] == build.GRAFANA_DASHBOARDS_DIR
    assert (REPO_ROOT / build.PROVISIONING_PATH).read_text() == build.render_provisioning()
