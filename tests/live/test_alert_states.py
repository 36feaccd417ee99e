"""The generated rules in a real Prometheus: a target that stops answering puts its Down
alert in pending, and an app that cannot reach its database puts SparkAppNotReady in
pending, with the labels and annotations the rule file promises."""

from __future__ import annotations

from alerts import build, config, rules
from app.config import Settings
from sparkops import defaults
from sparkops.artefacts import REPO_ROOT
from sparkops.wait import wait_until
from testkit.appserver import AppServer
from testkit.proc import free_port
from testkit.prometheus import Prometheus, ScrapeTarget


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


def _alerts(prometheus, name: str) -> list[dict]:
    alerts = prometheus.api("alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == name and "instance" in a["labels"]]


def test_app_without_its_database_makes_not_ready_pending_while_its_scrapes_succeed():
    dead = f"host=127.0.0.1 port={free_port()} dbname=spark user=x password=y connect_timeout=1"
    settings = Settings(database_url=dead, release_id="r-not-ready", db_timeout_s=1.5)
    # Each scrape runs the readiness check, which waits up to READY_CHECK_TIMEOUT_SECONDS for
    # a connection: the scrape timeout (the interval, here) must leave room for it, as
    # production's 10 s does.
    interval = f"{int(defaults.READY_CHECK_TIMEOUT_SECONDS) + 2}s"
    with (
        AppServer(settings) as app,
        Prometheus(
            targets=[ScrapeTarget(config.JOB_APP, app.metrics_address)],
            rule_files=[REPO_ROOT / build.RULES_PATH],
            scrape_interval=interval,
        ) as prometheus,
    ):
        (alert,) = wait_until(
            lambda: _alerts(prometheus, "SparkAppNotReady"),
            timeout=30,
            what="SparkAppNotReady to be pending",
        )
        # The app answered its scrapes: this is not SparkAppDown's case.
        assert _alerts(prometheus, "SparkAppDown") == []
    instance = app.metrics_address  # Prometheus scrapes the app's metrics port
    assert alert["state"] == "pending"  # for: 1m has not passed yet
    assert alert["labels"] == {
        "alertname": "SparkAppNotReady",
        "severity": config.SEVERITY_CRITICAL,
        "instance": instance,
        "job": config.JOB_APP,
    }
    expected = rules.by_name()["SparkAppNotReady"]
    assert alert["annotations"]["runbook_url"] == expected.runbook_url
    assert alert["annotations"]["description"] == (
        f"SparkApp on {instance} has not been ready for more than {config.APP_NOT_READY_FOR}: "
        "the database does not answer it through pgBouncer, and /readyz answers 503."
    )
