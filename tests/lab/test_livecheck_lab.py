"""The dashboard's and the alerts' expressions against the lab's own Prometheus.

After the site deploy, a little traffic of every kind the panels show and a restore drill,
every panel query and every alert expression (and each alert's underlying signal) must parse
and return series from the deployed exporters and the app.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from alerts import config
from dashboards import risk
from signoff import livecheck
from sparkops import defaults, webaccess
from sparkops.wait import wait_until
from sparkops_cli.commands.demo import _traffic
from sparkops_cli.main import main
from tests.lab.stack import ACCOUNT, api_key, by_group, orders

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def test_every_panel_and_alert_expression_returns_series(deployed):
    hosts = deployed["hosts"]
    db, app, monitor = (by_group(hosts, g) for g in ("db", "app", "monitor"))
    orders(app, 4)
    _traffic(f"http://{app['ip']}:{defaults.APP_PORT}", api_key(app), account=ACCOUNT)
    drill = CliRunner().invoke(main, ["drill", "--host", db["name"], "--yes"])
    assert drill.exit_code == 0, drill.output
    prometheus = webaccess.monitor_url(monitor["ip"], defaults.PROMETHEUS_PORT, "lab")
    checks = livecheck.all_checks()
    # Every job the checks read; the Patroni cluster's only where scraped (a single db here).
    jobs = livecheck.default_required_jobs(checks, livecheck.scraped_jobs(prometheus))
    assert not jobs & livecheck.CLUSTER_JOBS
    assert {config.JOB_APP, config.JOB_POSTGRES, config.JOB_NODE, config.JOB_OUTBOX} <= jobs

    def clean():
        results = livecheck.run(prometheus, checks)
        return results if not livecheck.failures(results, jobs) else None

    # Scrapes every 15 s and rate() windows need two samples: poll, bounded.
    results = wait_until(clean, timeout=180, interval=5, what="every expression to have series")
    print(livecheck.format_table(results))
    panels = {r.check.source for r in results if r.check.kind == "panel"}
    assert len(panels) == len(risk.PANELS)
