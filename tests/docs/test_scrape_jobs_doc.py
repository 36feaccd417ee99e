"""docs/deploys.md names exactly the scrape jobs the monitoring deploy writes (it once named
a job that did not exist, and folded the outbox's into the app's)."""

from __future__ import annotations

import re

from deploys import monitoring
from sparkops.artefacts import REPO_ROOT


class _Host:
    def __init__(self, name: str):
        self.name = name
        self.data = {"private_address": name}


class _Inventory:
    def get_group(self, group: str, default=None):
        return [_Host(f"{group}1")]


def test_the_docs_name_every_scrape_job_and_no_other():
    jobs = {job["name"] for job in monitoring.scrape_jobs(_Inventory(), {})}
    text = (REPO_ROOT / "docs" / "deploys.md").read_text()
    paragraph = text[text.index("Scrape jobs (") :].split("\n\n")[0]
    named = set(re.findall(r"`([a-z][a-z-]*)`", paragraph.split(":", 1)[1]))
    assert named == jobs
