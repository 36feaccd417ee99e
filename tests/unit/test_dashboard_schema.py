"""The generated dashboard against Grafana's own models (grafana-foundation-sdk, generated
from Grafana's schema): it loads into them with every panel, field config and query decoded
as its type, and writing it back keeps every key and value: no key the schema lacks, nothing
the models would drop or change. They may add a field we leave out, with its default (as
Grafana does on load). (The Python models check structure, not scalar types.)"""

from __future__ import annotations

import json
import re

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import common, prometheus, timeseries
from grafana_foundation_sdk.models.dashboard import Dashboard, Panel

from dashboards import build, panels
from sparkops.artefacts import REPO_ROOT

register_default_plugins()

# Keys Grafana's models fill in with their defaults when our JSON leaves them out.
MODEL_DEFAULTS = {
    f"{key}: added by the models"
    for key in (
        ".fiscalYearStartMonth",
        ".templating.list[].id",
        ".templating.list[].skipUrlSync",
        ".timepicker.collapse",
        ".timepicker.enable",
        ".panels[].repeatDirection",
        ".panels[].options.legend.showLegend",
    )
}


def differences(ours, theirs, path: str = "") -> list[str]:
    """Where Grafana's models' rendering of our JSON differs from it."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = [f"{path}.{k}: dropped by the models" for k in ours if k not in theirs]
        out += [f"{path}.{k}: added by the models" for k in theirs if k not in ours]
        for k in ours.keys() & theirs.keys():
            out += differences(ours[k], theirs[k], f"{path}.{k}")
        return out
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        return [
            d
            for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
            for d in differences(a, b, f"{path}[{i}]")
        ]
    return [] if ours == theirs else [f"{path}: {ours!r} became {theirs!r}"]


@pytest.mark.parametrize("module", build.DASHBOARDS, ids=lambda m: m.UID)
def test_the_generated_dashboard_is_what_grafanas_models_read_and_write(module):
    ours = json.loads((REPO_ROOT / build.json_path(module)).read_text())
    model = Dashboard.from_json(ours)
    assert model.uid == module.UID and model.schema_version == Dashboard().schema_version
    assert len(model.panels) == len(module.PANELS)
    for panel in model.panels:
        assert isinstance(panel, Panel) and panel.type_val == "timeseries"
        assert isinstance(panel.options, timeseries.Options), panel.title
        assert isinstance(panel.field_config.defaults.custom, common.GraphFieldConfig)
        assert all(isinstance(t, prometheus.Dataquery) for t in panel.targets), panel.title
    theirs = json.loads(json.dumps(model, cls=JSONEncoder))
    found = differences(ours, theirs)
    assert [d for d in found if not d.endswith("added by the models")] == []
    # What the models add are defaults we leave out, the same few keys on every panel.
    added = {re.sub(r"\[\d+\]", "[]", d) for d in found}
    assert added <= MODEL_DEFAULTS, sorted(added - MODEL_DEFAULTS)


def test_the_comparison_sees_what_the_schema_lacks():
    ours = json.loads((REPO_ROOT / build.json_path(build.DASHBOARDS[0])).read_text())
    ours["panels"][0]["targets"][0]["step"] = 10  # a grafanalib legacy key
    ours["panels"][0]["fieldConfig"]["defaults"]["custom"]["lineWidht"] = 2  # a typo
    theirs = json.loads(json.dumps(Dashboard.from_json(ours), cls=JSONEncoder))
    found = differences(ours, theirs)
    assert ".panels[0].targets[0].step: dropped by the models" in found, found
    assert ".panels[0].fieldConfig.defaults.custom.lineWidht: dropped by the models" in found


def test_schema_version_is_declared_once():
    assert Dashboard().schema_version == panels.SCHEMA_VERSION
