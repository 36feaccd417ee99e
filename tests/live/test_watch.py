"""`sparkops watch` against a real Prometheus that scraped a history the test wrote: a healthy
stretch, then every red flag raised at once (a critical alert firing, 5xx answers, WAL archive
lag and failures, a failed drill), then healthy again. The verdict follows the window: GO over
the healthy stretch alone, NO-GO naming each flag once the bad stretch is in the window, and
still NO-GO after all is well again, because the window remembers."""

from __future__ import annotations

import time

import yaml
from click.testing import CliRunner

from alerts import config
from signoff import watch
from sparkops import metric_names as m
from sparkops.wait import wait_until
from sparkops_cli.main import main
from testkit.prometheus import Prometheus, ScrapeTarget
from testkit.text_exporter import TextExporter

BREAK = "spark_watch_test_break"


class History:
    """What the exporter says, scrape by scrape."""

    def __init__(self) -> None:
        self.requests = self.errors = self.failed = 0
        self.broken = False

    def render(self) -> str:
        self.requests += 10
        self.errors += 5 if self.broken else 0
        self.failed += 1 if self.broken else 0
        count = m.HTTP_REQUEST_DURATION + "_count"
        return "\n".join([
            f'{count}{{route="/orders",method="POST",status="201"}} {self.requests}',
            f'{count}{{route="/orders",method="POST",status="503"}} {self.errors}',
            f"{m.PG_ARCHIVER_LAST_ARCHIVE_AGE} {100000 if self.broken else 5}",
            f"{m.PG_ARCHIVER_FAILED} {self.failed}",
            f"{m.RESTORE_DRILL_LAST_SUCCESS} {0 if self.broken else 1}",
            f"{BREAK} {1 if self.broken else 0}",
        ]) + "\n"  # fmt: skip


def _rules(tmp_path):
    path = tmp_path / "watch-rules.yml"
    rule = {"alert": "WatchTestCritical", "expr": f"{BREAK} == 1",
            "labels": {"severity": config.SEVERITY_CRITICAL}}  # fmt: skip
    path.write_text(yaml.safe_dump({"groups": [{"name": "watch-test", "rules": [rule]}]}))
    return path


def _vector(prometheus, expr):
    return prometheus.query(expr)["data"]["result"]


def test_watch_follows_the_window_over_a_recorded_history(tmp_path):
    history = History()
    with TextExporter(history.render) as exporter:
        jobs = (config.JOB_APP, config.JOB_POSTGRES, config.JOB_NODE)
        targets = [ScrapeTarget(job, exporter.address) for job in jobs]
        with Prometheus(targets=targets, rule_files=[_rules(tmp_path)]) as prometheus:
            errors_q = f"sum(increase({m.HTTP_REQUEST_DURATION}_count[1m]))"
            wait_until(lambda: _vector(prometheus, errors_q), timeout=30,
                       what="two scrapes of the healthy stretch")  # fmt: skip
            # Every flag GO over the healthy stretch (polled: on a loaded machine the first
            # scrapes may not yet hold two samples of every series the flags read).
            healthy = wait_until(
                lambda: (
                    (h := watch.evaluate(prometheus.url, "1m"))
                    and all(f.verdict == watch.GO for f in h)
                    and h
                ),
                timeout=30,
                what="every flag GO over the healthy stretch",
            )
            healthy_until = time.time()
            assert [(f.name, f.verdict) for f in healthy] == [(f.name, watch.GO) for f in healthy]
            # A scrape is stamped when it starts and reads the exporter up to scrape_timeout
            # (1 s) later: one stamped just before healthy_until could still read the broken
            # values (seen once in a full CI run: the "healthy" window judged NO-GO). Break
            # the values only once every scrape stamped before healthy_until has answered.
            wait_until(lambda: time.time() > healthy_until + 1.5, timeout=5,
                       what="the scrapes stamped before healthy_until answered")  # fmt: skip
            history.broken = True
            firing = 'ALERTS{alertname="WatchTestCritical", alertstate="firing"}'
            wait_until(lambda: _vector(prometheus, firing), timeout=30, what="the alert to fire")
            wait_until(lambda: history.failed >= 6, timeout=30, what="a bad stretch")
            history.broken = False
            wait_until(lambda: _vector(prometheus, f"{BREAK} == 0"), timeout=30,
                       what="the healthy values scraped again")  # fmt: skip

            after = {f.name: f for f in watch.evaluate(prometheus.url, "5m")}
            before = watch.evaluate(prometheus.url, "5s", at=healthy_until)
            r = CliRunner().invoke(main, ["watch", "--since", "5m", "--prometheus",
                                          prometheus.url, "--evidence-dir", str(tmp_path)],
                                   )  # fmt: skip
    assert watch.verdict(before) == watch.GO, before  # the window is honoured
    assert {name: f.verdict for name, f in after.items()} == {
        "alerts fired": watch.NO_GO, "server errors": watch.NO_GO,
        "WAL archive": watch.NO_GO, "restore drill": watch.NO_GO,
    }  # fmt: skip
    assert after["alerts fired"].message.startswith("fired: WatchTestCritical (critical, active")
    assert "requests answered 5xx (no-go above 5%)" in after["server errors"].message
    assert "lag reached 100000s" in after["WAL archive"].message
    assert "failed archive attempt(s)" in after["WAL archive"].message
    assert after["restore drill"].message == "a restore drill failed in the window"
    assert r.exit_code == 1 and "watch over the last 5m: NO-GO" in r.output
    (folder,) = tmp_path.glob("*-watch")
    summary = (folder / "go_no_go.md").read_text()
    assert summary.startswith("# Watch over the last 5m: NO-GO")
    assert "| restore drill | NO-GO | a restore drill failed in the window |" in summary


def test_watch_says_when_nothing_was_watched(tmp_path):
    """An empty Prometheus is not 'all well': no archive metric and no drill are NO-GO."""
    with Prometheus() as prometheus:
        flags = {f.name: f for f in watch.evaluate(prometheus.url, "1h")}
    assert flags["alerts fired"].verdict == watch.GO
    assert flags["server errors"].message == "no requests to the app in the window"
    assert flags["WAL archive"].verdict == watch.NO_GO
    assert flags["restore drill"].message == "no drill result in the window"
