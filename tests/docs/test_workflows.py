"""The GitHub workflows and the pull request template name only what exists: every `run:`
step's commands are Makefile targets, repository scripts, venv programs (`sparkops` ones
checked against its command tree) or programs on this machine; the triggers and artefacts
the project promises are there."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import yaml

from dashboards import risk
from sparkops.artefacts import REPO_ROOT
from sparkops_cli.main import main
from tests.docs import mentions

WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml"))
TEMPLATE = REPO_ROOT / ".github" / "pull_request_template.md"
SEPARATORS = re.compile(r"&&|\|\||;|\n|\|")


def make_targets() -> set[str]:
    text = (REPO_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+):(?!=)", text, re.M))


def check_run(script: str, targets: set[str]) -> list[str]:
    """What in one `run:` script does not exist (empty: everything does)."""
    problems = []
    for command in SEPARATORS.split(script.replace("\\\n", " ")):
        words = shlex.split(command, comments=True)
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words = words[1:]  # VAR=value before the program
        if not words:
            continue
        program, args = words[0], words[1:]
        if program == "make":
            for target in (a for a in args if not a.startswith("-") and "=" not in a):
                if target not in targets:
                    problems.append(f"make: no target {target!r} in the Makefile")
        elif program.startswith((".venv/bin/", "./", "scripts/", "bench/")):
            if program.startswith(".venv/bin/") and not (REPO_ROOT / program).exists():
                problems.append(f"{program}: not installed in the venv")
            elif not program.startswith(".venv/bin/") and not (REPO_ROOT / program).exists():
                problems.append(f"{program}: no such file in the repository")
            if program.endswith("/sparkops"):
                problems += mentions.check_command(main, "sparkops " + " ".join(args))
        elif shutil.which(program) is None:
            problems.append(f"{program}: not a program on this machine")
    return problems


def _load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def _steps(doc: dict):
    for job_name, job in doc["jobs"].items():
        for step in job["steps"]:
            yield job_name, step


def test_every_run_step_names_what_exists():
    assert {p.name for p in WORKFLOWS} >= {"contract.yml", "chaos.yml"}
    targets = make_targets()
    runs = 0
    for path in WORKFLOWS:
        for job, step in _steps(_load(path)):
            assert ("run" in step) != ("uses" in step), f"{path.name} {job}: {step}"
            if "run" in step:
                runs += 1
                problems = check_run(step["run"], targets)
                assert not problems, f"{path.name} job {job} step {step.get('name')}: {problems}"
    assert runs >= 8


def test_the_step_check_catches_what_does_not_exist():
    targets = make_targets()
    assert {"test", "bootstrap", "test-contract", "test-chaos", "resilience-report"} <= targets
    assert check_run("make bootstrap && .venv/bin/sparkops check-generated", targets) == []
    assert check_run("make test-everything", targets) == [
        "make: no target 'test-everything' in the Makefile"
    ]
    assert check_run("./scripts/no-such-script", targets)
    assert check_run("no-such-program-here --flag", targets)
    assert check_run(".venv/bin/sparkops check-generated --fix", targets)
    assert check_run(".venv/bin/sparkops lab reboot", targets)


def test_contract_tests_on_every_pull_request_with_pacts_kept():
    doc = _load(REPO_ROOT / ".github/workflows/contract.yml")
    assert "pull_request" in doc["on"]
    steps = [s for _, s in _steps(doc)]
    assert any(s.get("run") == "make test-contract" for s in steps)
    uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact")]
    assert [u["with"]["path"] for u in uploads] == ["pacts/"]
    assert "pacts/" in (REPO_ROOT / "tests/contract/conftest.py").read_text()


def test_chaos_weekly_and_on_demand_with_a_resilience_report():
    doc = _load(REPO_ROOT / ".github/workflows/chaos.yml")
    assert set(doc["on"]) == {"schedule", "workflow_dispatch"}
    (cron,) = [entry["cron"] for entry in doc["on"]["schedule"]]
    assert cron.split()[2:] == ["*", "*", "1"], "weekly, on Mondays"
    assert doc["jobs"]["resilience-report"]["needs"] == "chaos"
    runs = {s.get("run") for _, s in _steps(doc)}
    assert {"make test-chaos", "make resilience-report"} <= runs
    uploads = [s for _, s in _steps(doc) if s.get("uses", "").startswith("actions/upload")]
    assert [u["with"]["path"] for u in uploads] == ["build/resilience/"]
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "build/resilience" in makefile


def test_the_pull_request_template_asks_for_what_a_sign_off_needs():
    text = TEMPLATE.read_text()
    headings = set(re.findall(r"^## (.+)$", text, re.M))
    assert {"Rollback plan", "Evidence", "Metrics baseline", "Sign-off"} <= headings
    titles = {p.title for p in risk.PANELS}
    baseline = text.split("## Metrics baseline")[1].split("## ")[0]
    rows = [r.split("|")[1].strip() for r in baseline.splitlines() if r.startswith("| ")]
    panels = [r for r in rows if r not in {"panel", "---"}]
    assert len(panels) >= 4
    assert set(panels) <= titles, set(panels) - titles
    for mention in re.findall(r"`(sparkops [^`]+)`", text):
        assert mentions.check_command(main, mention) == [], mention
    for path in re.findall(r"`(docs/[\w.-]+\.md)`", text):
        assert (REPO_ROOT / path).is_file(), path
