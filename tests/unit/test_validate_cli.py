"""`sparkops validate` refuses bad input before it touches anything (the checks themselves run
against the lab: tests/lab/test_deploy_e2e.py)."""

from __future__ import annotations

from click.testing import CliRunner

from signoff import validate
from sparkops_cli.main import main


def test_an_unknown_check_to_skip_is_refused_naming_the_checks(tmp_path):
    r = CliRunner().invoke(main, ["validate", "--skip", "nope", "--evidence-dir", str(tmp_path)])
    assert r.exit_code == 2
    assert "nope" in r.output and "restore drill" in r.output
    assert list(tmp_path.iterdir()) == []


def test_a_missing_inventory_is_refused_and_nothing_is_written(tmp_path):
    missing = tmp_path / "nowhere.py"
    evidence = tmp_path / "evidence"
    r = CliRunner().invoke(
        main, ["validate", "--inventory", str(missing), "--evidence-dir", str(evidence)]
    )
    assert r.exit_code == 1 and f"no inventory at {missing}" in r.output
    assert not evidence.exists()


def test_the_checks_have_distinct_names():
    names = [name for name, _ in validate.CHECKS]
    assert len(names) == len(set(names)) == 10
