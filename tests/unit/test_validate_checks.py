"""The sign-off checks that need no lab: the money suite with its coverage (a real pytest run),
the refusals that name what is missing, every check running when one fails, and the HTML
report. The lab runs the rest: tests/lab/test_deploy_e2e.py and
tests/lab/test_validate_broken_lab.py."""

from __future__ import annotations

import re

import pytest

from signoff import report, validate


class _Db:
    label = "nowhere"


def _ctx(tmp_path, **kw) -> validate.Context:
    return validate.Context(_Db(), "http://127.0.0.1:9", "http://127.0.0.1:9", tmp_path, **kw)


def test_the_money_suite_passes_with_its_coverage_and_leaves_the_seed_file(tmp_path):
    message, files = validate.check_money(_ctx(tmp_path))
    assert files == ["money_test_coverage.txt"]
    text = (tmp_path / "money_test_coverage.txt").read_text()
    assert "--cov=app.money --cov=app.decimals" in text and "passed" in text
    figure = float(re.search(r"coverage ([\d.]+)%", message).group(1))
    assert validate.MONEY_COVERAGE_MIN <= figure <= 100
    assert (tmp_path / ".coverage").is_file()  # its data with the evidence, not in the repo


def test_a_suite_that_covers_too_little_fails_naming_the_figure(tmp_path):
    """A repository whose money suite only imports the modules: real pytest, real coverage."""
    repo = tmp_path / "repo"
    (repo / "tests/unit").mkdir(parents=True)
    (repo / validate.MONEY_TESTS).write_text(
        "import app.decimals\nimport app.money\n\n\ndef test_imports():\n"
        "    assert app.money and app.decimals\n"
    )
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    with pytest.raises(validate.Failed, match=r"money coverage [\d.]+% is under 95%"):
        validate.check_money(_ctx(evidence, repo_root=repo))
    assert "1 passed" in (evidence / "money_test_coverage.txt").read_text()


def test_without_the_repository_the_money_check_says_where_to_run(tmp_path):
    with pytest.raises(validate.Failed, match="run validate from the repository"):
        validate.check_money(_ctx(tmp_path, repo_root=tmp_path))


def test_the_idempotency_check_without_a_key_maker_fails_saying_so(tmp_path):
    with pytest.raises(validate.Failed, match="no API key"):
        validate.check_idempotency(_ctx(tmp_path))


def test_every_check_runs_when_one_fails_or_breaks(tmp_path, monkeypatch):
    def fails(ctx):
        raise validate.Failed("index missing")

    def breaks(ctx):
        raise KeyError("surprise")

    def passes(ctx):
        return "fine", []

    checks = (("a", fails), ("b", breaks), ("c", passes), ("d", passes))
    monkeypatch.setattr(validate, "CHECKS", checks)
    ctx = _ctx(tmp_path)
    lines = []
    outcomes = validate.run_all(ctx, {"d"}, lines.append)
    assert [(o.name, o.ok) for o in outcomes] == [("a", False), ("b", False), ("c", True)]
    assert outcomes[0].message == "index missing"
    assert outcomes[1].message == "KeyError: 'surprise'"
    assert "FAIL a" in lines[1] and lines[-1].startswith("PASS c")
    validate.write_summary(ctx, outcomes, 1.0)
    final = (tmp_path / "final_summary.txt").read_text()
    assert final.startswith("FAIL") and "PASS c: fine" in final
    assert "| b | FAIL |" in (tmp_path / "validation_summary.md").read_text()


def test_the_report_draws_its_plots_inline_without_scripts_or_network(tmp_path):
    ctx = _ctx(tmp_path)
    ctx.measured["request_seconds"] = [0.009, 0.003, 0.003]
    outcomes = [validate.Outcome("restore drill", True, "ok", 3.0, [], 1.0),
                validate.Outcome("dashboard queries", False, "bad", 0.5, [], 0.2)]  # fmt: skip
    wal = report.Series([(-60.0, 10.0), (-30.0, 40.0), (0.0, 2.0)])
    latency = report.Series([], "no series")
    page = report.render(ctx, outcomes, 4.0, wal, latency)
    assert page.count("<svg") == 5 and "<script" not in page
    assert not re.search(r'(src|href)="https?:', page)
    assert "Validation: <span class=fail>FAIL</span>" in page
    assert "no data: no series" in page and "<polyline" in page
    assert "no data: not asked" in page  # the drill's plot, when no series was given
    assert "last 2 s, max 40" in page and "9 ms" in page


def test_the_report_says_why_a_plot_is_empty_when_prometheus_is_down():
    series = report.range_query("http://127.0.0.1:9", report.WAL_LAG_QUERY)
    assert series.points == [] and series.missing.startswith("Prometheus did not answer")
