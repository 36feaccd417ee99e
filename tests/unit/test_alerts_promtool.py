"""The rule file and its unit tests through the real promtool (Debian's prometheus package)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from alerts import build, rules
from sparkops import programs
from sparkops.artefacts import REPO_ROOT
from sparkops_cli.commands.alerts import promtool_runs


@pytest.fixture(scope="module", autouse=True)
def promtool_installed():
    """A missing promtool fails these tests, naming its package, rather than skipping them."""
    programs.require("promtool")


@pytest.mark.parametrize("args", promtool_runs(), ids=lambda a: " ".join(a[:3]))
def test_promtool_passes(args):
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_counts_every_rule():
    args = promtool_runs()[0]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert f"SUCCESS: {len(rules.ALERTS)} rules found" in result.stdout


def test_every_alert_has_two_or_more_promtool_cases_with_both_sides_of_for():
    tests = yaml.safe_load((REPO_ROOT / build.TESTS_PATH).read_text())["tests"]
    checks_by_alert: dict[str, list[dict]] = {}
    for test in tests:
        for check in test["alert_rule_test"]:
            checks_by_alert.setdefault(check["alertname"], []).append(check)
    for alert in rules.ALERTS:
        checks = checks_by_alert.get(alert.name, [])
        assert len(checks) >= 2, alert.name
        assert any(ch["exp_alerts"] for ch in checks), f"{alert.name}: no firing case"
        assert any(not ch["exp_alerts"] for ch in checks), f"{alert.name}: no quiet case"


def test_promtool_catches_a_wrong_expectation(tmp_path):
    """The harness can fail: flip one firing case's expected severity and promtool objects."""
    text = (REPO_ROOT / build.TESTS_PATH).read_text()
    rules_file = tmp_path / "generated" / "spark-ops.rules.yml"
    rules_file.parent.mkdir()
    rules_file.write_text((REPO_ROOT / build.RULES_PATH).read_text())
    tests_dir = tmp_path / "tests"
    tests_dir.mkdir()
    broken = text.replace("severity: critical", "severity: info", 1)
    assert broken != text
    (tests_dir / "t.yml").write_text(broken)
    result = subprocess.run(
        ["promtool", "test", "rules", str(tests_dir / "t.yml")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr
