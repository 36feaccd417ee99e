"""/metrics is served on a port of its own (the private address in production), never on
the public port; each scrape runs the readiness check."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.config import ConfigError, Settings
from sparkops import defaults, metric_names


def test_the_public_port_answers_404_for_metrics(app_server):
    r = httpx.get(f"{app_server.url}/metrics")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert metric_names.APP_READY not in r.text


def test_the_metrics_port_serves_them_and_refreshes_readiness(app_server):
    assert app_server.metrics_address != f"{app_server.host}:{app_server.port}"
    r = httpx.get(app_server.metrics_url, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(r.text)}
    assert {metric_names.APP_READY, metric_names.RATE_LIMITED.removesuffix("_total")} <= names
    ready = [s for f in text_string_to_metric_families(r.text) for s in f.samples
             if s.name == metric_names.APP_READY]  # fmt: skip
    assert [s.value for s in ready] == [1.0]


def test_metrics_settings_from_the_environment():
    base = {"SPARK_DATABASE_URL": "host=x"}
    default = Settings.from_env(base)
    assert (default.metrics_host, default.metrics_port) == ("127.0.0.1", defaults.APP_METRICS_PORT)
    set_ = Settings.from_env({**base, "SPARK_METRICS_HOST": "10.0.0.5", "SPARK_METRICS_PORT": "0"})
    assert (set_.metrics_host, set_.metrics_port) == ("10.0.0.5", 0)
    for bad in ("-1", "x", "70000"):
        with pytest.raises(ConfigError, match="SPARK_METRICS_PORT"):
            Settings.from_env({**base, "SPARK_METRICS_PORT": bad})
