"""`sparkops watch` refuses bad input and gives no verdict without Prometheus, writing nothing
(the verdicts themselves against a real Prometheus: tests/live/test_watch.py)."""

from __future__ import annotations

from click.testing import CliRunner

from sparkops_cli.main import main
from testkit.proc import free_port


def test_a_window_that_is_not_a_duration_is_refused(tmp_path):
    r = CliRunner().invoke(main, ["watch", "--since", "2 days", "--evidence-dir", str(tmp_path)])
    assert r.exit_code == 2 and "'2 days' is not a duration like 48h" in r.output
    assert list(tmp_path.iterdir()) == []


def test_no_prometheus_no_verdict_and_nothing_written(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    r = CliRunner().invoke(main, ["watch", "--prometheus", dead, "--evidence-dir", str(tmp_path)])
    assert r.exit_code == 1 and f"no verdict: Prometheus at {dead} does not answer" in r.output
    assert list(tmp_path.iterdir()) == []
