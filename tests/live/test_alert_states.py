"""The generated rules in a real Prometheus: a target that stops answering puts its Down
alert in pending, with the labels and annotations the rule file promises."""

from __future__ import annotations

from alerts import build, config, rules
from sparkops.ephemeral.proc import free_port
from sparkops.ephemeral.prometheus import Prometheus, ScrapeTarget
from sparkops.generated import REPO_ROOT
from sparkops.wait import wait_until


def test_unreachable_postgres_exporter_makes_postgres_down_pending():
    dead = f"127.0.0.1:{free_port()}"  # nothing listens here
    with Prometheus(
        targets=[ScrapeTarget(config.JOB_POSTGRES, dead)],
        rule_files=[REPO_ROOT / build.RULES_PATH],
    ) as prometheus:

        def postgres_down():
            # Before the first scrape the job has no series at all, so the absent() branch
            # fires first (labels: job only); the failed scrape's up == 0 follows.
            alerts = prometheus.api("alerts")["data"]["alerts"]
            return [
                a
                for a in alerts
                if a["labels"]["alertname"] == "PostgresDown" and "instance" in a["labels"]
            ]

        (alert,) = wait_until(postgres_down, timeout=20, what="PostgresDown to be pending")
    expected = rules.by_name()["PostgresDown"]
    assert alert["state"] == "pending"  # for: 1m has not passed yet
    assert alert["labels"] == {
        "alertname": "PostgresDown",
        "severity": config.SEVERITY_CRITICAL,
        "instance": dead,
        "job": config.JOB_POSTGRES,
    }
    assert alert["annotations"]["runbook_url"] == expected.runbook_url
    assert alert["annotations"]["description"] == (
        f"Postgres on {dead} has been down or unscrapable for more than {config.DOWN_FOR} "
        f"(job {config.JOB_POSTGRES})."
    )
