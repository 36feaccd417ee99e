"""Zero downtime on one lab app host: `sparkops rollback` restarts spark-app.service while
spark-app.socket (real systemd socket activation on the lab host) keeps the listening socket;
steady traffic from this machine, a new connection per request, loses none of its requests
(no connection refused or reset, no 5xx, no timeout)."""

from __future__ import annotations

import json

import pytest

from sparkops import defaults, layout
from testkit import traffic
from tests.lab.stack import activate_copy, by_group, on_host, scratch_release, sparkops, version

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def probes(i: int) -> traffic.Request:
    return traffic.Request("GET", "/readyz" if i % 2 else "/version")


def test_rollback_on_the_lab_drops_no_request(deployed, tmp_path):
    app = by_group(deployed["hosts"], "app")
    a = deployed["release"]
    b = "zdt-release-b"
    with scratch_release(app, a, b):
        activate_copy(app, a, b)
        assert version(app) == b
        # The socket is systemd's, and the app runs on it (no port of its own).
        assert on_host(app, f"systemctl is-active {layout.APP_SOCKET}").strip() == "active"
        base = f"http://{app['ip']}:{defaults.APP_PORT}"
        load = traffic.Traffic(base, probes, rate=80, max_seconds=180).start()
        try:
            run = sparkops("rollback", "--host", app["name"], "--yes", "--json",
                           "--evidence-dir", str(tmp_path / "ev"))  # fmt: skip
        finally:
            outcomes = load.stop()
        assert run.exit_code == 0, run.output
        result = json.loads(run.stdout)
        assert result["facts"]["live_release"] == a and version(app) == a
        assert result["facts"]["rollback_seconds"] < 5
        failed = traffic.failures(outcomes)
        assert len(outcomes) >= 40, f"too little traffic to tell: {len(outcomes)}"
        assert failed == [], f"{len(failed)} of {len(outcomes)} failed: {failed[:3]}"
        print(f"rollback {result['facts']['rollback_seconds']} s, {len(outcomes)} requests, "
              f"0 failed, p99 {traffic.p99(outcomes) * 1000:.0f} ms")  # fmt: skip
