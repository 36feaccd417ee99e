"""Our one door to grafanalib (pinned at 0.7.1, frozen upstream): small factories for the
panel shapes the dashboards repeat, so a grafanalib quirk is handled in one place.

Queries use a fixed rate window from `alerts.config` rather than Grafana's
`$__rate_interval`, so every panel query runs unchanged against Prometheus's HTTP API (the
live check and the snapshot command rely on that).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from grafanalib import core as g
from grafanalib._gen import DashboardEncoder

DATASOURCE_VARIABLE = "datasource"
DATASOURCE = {"type": "prometheus", "uid": f"${{{DATASOURCE_VARIABLE}}}"}
PANEL_WIDTH = 12  # two panels per row on Grafana's 24-column grid
PANEL_HEIGHT = 8
_TEMPLATE = re.compile(r"\{\{[^}]*\}\}")
_REGEX_SPECIAL = re.compile(r"([.^$*+?()\[\]{}|\\])")


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str
    # Series drawn against the right axis in `right_unit` (a count beside a duration, say).
    right_axis: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    unit: str  # Grafana unit id: "s", "bytes", "ops", "short", "percentunit"
    queries: tuple[Query, ...]
    # Threshold lines on the left axis, each (value, colour); values come from alerts.config.
    thresholds: tuple[tuple[float, str], ...] = ()
    right_unit: str = "short"
    extra: dict = field(default_factory=dict)


def datasource_variable() -> g.Template:
    return g.Template(
        name=DATASOURCE_VARIABLE,
        label="Prometheus",
        query="prometheus",
        type="datasource",
        default="Prometheus",
        includeAll=False,
        multi=False,
    )


def _threshold_steps(thresholds: tuple[tuple[float, str], ...]) -> list[dict]:
    steps = [{"color": "green", "value": None}]
    steps += [{"color": colour, "value": value} for value, colour in thresholds]
    return steps


def _right_axis_override(panel: Panel) -> list[dict]:
    legends = [q.legend for q in panel.queries if q.right_axis]
    if not legends:
        return []
    # Legends may hold {{label}} templates: those parts match anything in the display name.
    alternatives = [".*".join(_REGEX_SPECIAL.sub(r"\\\1", part) for part in _TEMPLATE.split(lg))
                    for lg in legends]  # fmt: skip
    return [
        {
            "matcher": {"id": "byRegexp", "options": "^(" + "|".join(alternatives) + ")$"},
            "properties": [
                {"id": "custom.axisPlacement", "value": "right"},
                {"id": "unit", "value": panel.right_unit},
            ],
        }
    ]


def timeseries(panel: Panel, index: int) -> g.TimeSeries:
    """A time-series panel at grid position `index` (two per row), id `index + 1`."""
    targets = [
        g.Target(expr=q.expr, legendFormat=q.legend, refId=chr(ord("A") + i), datasource=DATASOURCE)
        for i, q in enumerate(panel.queries)
    ]
    return g.TimeSeries(
        id=index + 1,
        title=panel.title,
        description=panel.description,
        dataSource=DATASOURCE,
        targets=targets,
        unit=panel.unit,
        thresholds=_threshold_steps(panel.thresholds),
        thresholdsStyleMode="line" if panel.thresholds else "off",
        overrides=_right_axis_override(panel),
        legendDisplayMode="table",
        legendCalcs=["lastNotNull", "max"],
        tooltipMode="multi",
        gridPos=g.GridPos(
            h=PANEL_HEIGHT,
            w=PANEL_WIDTH,
            x=(index % 2) * PANEL_WIDTH,
            y=(index // 2) * PANEL_HEIGHT,
        ),
        extraJson=panel.extra or None,
    )


def dashboard(*, uid: str, title: str, description: str, tags: list[str], panels) -> g.Dashboard:
    return g.Dashboard(
        uid=uid,
        title=title,
        description=description,
        tags=tags,
        timezone="utc",
        refresh="30s",
        time=g.Time("now-6h", "now"),
        templating=g.Templating(list=[datasource_variable()]),
        panels=[timeseries(p, i) for i, p in enumerate(panels)],
    )


# The dashboard JSON schema version the output follows: that of Grafana's own models
# (grafana-foundation-sdk, which a test loads the output with). grafanalib 0.7.1 writes 12,
# which makes Grafana run every migration since on each load.
SCHEMA_VERSION = 36
# Keys grafanalib 0.7.1 writes from Grafana's pre-7 JSON model that the schema no longer has
# (Grafana ignores them); dropped, with nulls for unset options, so Grafana's models read the
# file and write back exactly the same JSON. A threshold's base step keeps its `value: null`
# (the schema's -Infinity).
_LEGACY_KEYS = {
    "dashboard": {"__inputs", "rows", "hideControls", "sharedCrosshair"},
    "panel": {"error", "editable", "hideTimeOverride"},
    "target": {"target", "metric", "step", "query"},
    "variable": {"useTags"},
}


def _without_nulls(value, key: str = ""):
    if isinstance(value, dict):
        return {k: _without_nulls(v, k) for k, v in value.items() if v is not None or k == "value"}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _schema_clean(data: dict) -> dict:
    data = _without_nulls(data)
    for key in _LEGACY_KEYS["dashboard"]:
        data.pop(key, None)
    data["schemaVersion"] = SCHEMA_VERSION
    for panel in data.get("panels", []):
        for key in _LEGACY_KEYS["panel"]:
            panel.pop(key, None)
        for target in panel.get("targets", []):
            for key in _LEGACY_KEYS["target"]:
                target.pop(key, None)
    for variable in data.get("templating", {}).get("list", []):
        for key in _LEGACY_KEYS["variable"]:
            variable.pop(key, None)
        variable.get("current", {}).pop("tags", None)
    return data


def to_json(dash: g.Dashboard) -> str:
    """Deterministic JSON: sorted keys, indent 2, trailing newline, so diffs are readable."""
    data = json.loads(json.dumps(dash.to_json_data(), cls=DashboardEncoder))
    return json.dumps(_schema_clean(data), sort_keys=True, indent=2) + "\n"
