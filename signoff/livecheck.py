"""Run every dashboard panel query and every alert expression through a live Prometheus.

For each expression: does Prometheus parse it, and how many series does an instant query
return? An alert expression returns nothing on a healthy system, so each alert is checked
twice: its full expression (must parse) and its `signals` (the quantities it compares,
which must return series wherever the metrics' scrape job is running).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import httpx

from alerts import config as alert_config
from alerts import rules
from dashboards import build as dashboard_build
from dashboards import panels
from sparkops import webaccess

PANEL, ALERT, SIGNAL = "panel", "alert", "signal"
_JOB = re.compile(r'job="([^"]+)"')


@dataclass(frozen=True)
class Check:
    kind: str  # panel | alert | signal
    source: str  # panel title or alert name
    expr: str

    @property
    def jobs(self) -> frozenset[str]:
        """The scrape jobs whose series this expression reads."""
        return frozenset(_JOB.findall(self.expr))


@dataclass(frozen=True)
class Result:
    check: Check
    parsed: bool
    series: int
    error: str = ""


def dashboard_checks() -> list[Check]:
    """Every target expression of every built dashboard, read back from its JSON."""
    checks = []
    for module in dashboard_build.DASHBOARDS:
        dash = json.loads(panels.to_json(module.dashboard))
        for panel in dash["panels"]:
            for target in panel["targets"]:
                checks.append(Check(PANEL, panel["title"], target["expr"]))
    return checks


def alert_checks() -> list[Check]:
    checks = []
    for alert in rules.ALERTS:
        checks.append(Check(ALERT, alert.name, alert.expr))
        checks.extend(Check(SIGNAL, alert.name, s) for s in alert.signals)
    return checks


def all_checks() -> list[Check]:
    return dashboard_checks() + alert_checks()


def run_check(prometheus_url: str, check: Check, client: httpx.Client) -> Result:
    response = client.get(f"{prometheus_url}/api/v1/query", params={"query": check.expr})
    try:
        body = response.json()
    except ValueError:
        return Result(check, False, 0, f"HTTP {response.status_code}: {response.text[:200]}")
    if body.get("status") != "success":
        # bad_data is Prometheus's word for "this does not parse"; anything else is not ours.
        parsed = body.get("errorType") != "bad_data"
        return Result(check, parsed, 0, f"{body.get('errorType')}: {body.get('error')}")
    data = body["data"]
    count = len(data["result"]) if data["resultType"] in ("vector", "matrix") else 1
    return Result(check, True, count)


def run(prometheus_url: str, checks: list[Check] | None = None) -> list[Result]:
    checks = all_checks() if checks is None else checks
    with webaccess.client(prometheus_url, timeout=10) as client:
        return [run_check(prometheus_url.rstrip("/"), check, client) for check in checks]


# Jobs only a Patroni cluster inventory has (docs/ha.md): required only where scraped.
CLUSTER_JOBS = frozenset({alert_config.JOB_PATRONI, alert_config.JOB_ETCD})


def scraped_jobs(prometheus_url: str) -> set[str]:
    """The jobs Prometheus has targets for (its `up` series)."""
    with webaccess.client(prometheus_url, timeout=10) as client:
        response = client.get(
            f"{prometheus_url.rstrip('/')}/api/v1/query", params={"query": "count by (job) (up)"}
        )
    response.raise_for_status()
    return {item["metric"]["job"] for item in response.json()["data"]["result"]}


def default_required_jobs(checks: list[Check], scraped: set[str]) -> set[str]:
    """Every job the checks read, the cluster's only when this Prometheus scrapes them."""
    read = set().union(*(c.jobs for c in checks))
    return (read - CLUSTER_JOBS) | (read & CLUSTER_JOBS & scraped)


def required(check: Check, live_jobs: set[str]) -> bool:
    """Must this expression return series? Panels and signals whose jobs all run, yes;
    a full alert expression only has to parse (it is empty while all is well)."""
    return check.kind != ALERT and bool(check.jobs) and check.jobs <= live_jobs


def failures(results: list[Result], live_jobs: set[str]) -> list[Result]:
    return [r for r in results if not r.parsed or (required(r.check, live_jobs) and r.series == 0)]


def format_table(results: list[Result]) -> str:
    lines = [f"{'kind':<7} {'source':<36} {'parsed':<6} {'series':>6}  expr"]
    for r in results:
        flag = "yes" if r.parsed else "NO"
        lines.append(
            f"{r.check.kind:<7} {r.check.source[:36]:<36} {flag:<6} {r.series:>6}  {r.check.expr}"
            + (f"  [{r.error}]" if r.error else "")
        )
    return "\n".join(lines)
