"""The documents cannot drift from what they describe: every `sparkops` command and flag they
mention exists in the command tree (`--help`), every alert's `runbook_url` lands on a heading,
every link to another document's section lands on a heading, and every dashboard panel they
cite exists in the generated dashboard."""

from __future__ import annotations

import json
import re

import pytest

from alerts import rules
from dashboards import build, risk
from sparkops.artefacts import REPO_ROOT
from sparkops_cli.main import main
from tests.docs import mentions
from tests.unit.test_dashboards import EXPECTED_TITLES

DOCS = mentions.documents()
REQUIRED_DOCS = ("docs/validation-checklist.md", "docs/db-restore.md")


def test_the_sign_off_documents_exist():
    for name in REQUIRED_DOCS:
        assert (REPO_ROOT / name).is_file(), f"{name} is missing"
    assert {d.relative_to(REPO_ROOT).as_posix() for d in DOCS} >= set(REQUIRED_DOCS)


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_sparkops_command_and_flag_exists(doc):
    found = mentions.command_mentions(doc)
    problems = [f"{m.text!r}: {p}" for m in found for p in mentions.check_command(main, m.text)]
    assert not problems, f"{doc.name} mentions what `sparkops --help` does not have:\n" + "\n".join(
        problems
    )


def test_the_command_check_finds_commands_and_catches_mistakes():
    found = [m.text for d in DOCS for m in mentions.command_mentions(d)]
    assert len(found) > 50, found
    good = [
        "sparkops restore --time T \\| --lsn L \\| --restore-point NAME \\| --latest",
        "sparkops lab up|status|ssh NAME|down",
        "sparkops lab ssh db|app|monitor",
        "sparkops restore | restore-point create | rollback | drill",
        "sparkops drill --dry-run --json | jq .ok",
        "sparkops lab ssh db -- systemctl --failed",
        "sparkops dashboards snapshot --prometheus URL --out snapshot.html [--png snapshot.png]",
    ]
    for line in good:
        assert mentions.check_command(main, line) == [], line
    bad = {
        "sparkops restore --at T": "no option --at",
        "sparkops lab reboot": "no subcommand reboot",
        "sparkops lab up|restart": "no subcommand restart in up|restart",
        "sparkops drill --dry-run \\| --fast": "no option --fast",
        "sparkops restore-point create NAME --no-wait": "no option --no-wait",
    }
    for line, why in bad.items():
        assert any(why in p for p in mentions.check_command(main, line)), line


def _headings_by_doc() -> dict[str, set[str]]:
    return {d.relative_to(REPO_ROOT).as_posix(): mentions.anchors(d) for d in DOCS}


def test_every_alert_runbook_url_lands_on_a_heading():
    by_doc = _headings_by_doc()
    for alert in rules.ALERTS:
        url = alert.runbook_url
        doc, _, anchor = url.partition("/blob/main/")[2].partition("#")
        assert doc in by_doc, f"{alert.name}: {url} points at {doc}, not a document here"
        assert anchor in by_doc[doc], f"{alert.name}: {doc} has no heading with anchor #{anchor}"


def test_links_between_documents_land_on_headings():
    by_doc = _headings_by_doc()
    link = re.compile(r"\]\(([\w./-]*\.md)?#([\w-]+)\)")
    checked = 0
    for doc in DOCS:
        here = doc.relative_to(REPO_ROOT).as_posix()
        for target, anchor in link.findall(doc.read_text()):
            path = (
                (doc.parent / target).resolve().relative_to(REPO_ROOT).as_posix()
                if target
                else here
            )
            assert path in by_doc, f"{here} links to {target}, which is not a document"
            assert anchor in by_doc[path], f"{here} links to {path}#{anchor}: no such heading"
            checked += 1
    assert checked > 0, "no links between documents found: the pattern is wrong"


def test_every_panel_the_documents_cite_exists_in_the_generated_dashboard():
    generated = json.loads((REPO_ROOT / build.json_path(risk)).read_text())
    titles = {p["title"] for p in generated["panels"]}
    cited = {(d.name, t) for d in DOCS for t in mentions.cited_panels(d)}
    assert len(cited) >= 5, cited
    missing = sorted(f"{doc}: panel {title!r}" for doc, title in cited if title not in titles)
    assert not missing, "cited panels not in the dashboard:\n" + "\n".join(missing)


def test_the_dashboard_uses_the_seed_panel_titles():
    assert {p.title for p in risk.PANELS} == set(EXPECTED_TITLES)  # the seed's titles
