"""The evidence folder each runbook run leaves: `evidence/<UTC timestamp>-<runbook>/`.

plan.txt                  the plan as printed before acting
steps/<n>-<name>.log      each step's commands, output and timing
<name>.txt / <name>.json  facts recorded along the way (pgbackrest info, LSNs, checks)
result.json, summary.md   the outcome

The folder is 0750 and its files 0640 (the runner and its group): the steps' output names
hosts, users and paths that are nobody else's business (secrets never reach it: the executor
masks them).
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FOLDER_MODE = 0o750
FILE_MODE = 0o640


# Where evidence goes when a command is given no --evidence-dir (the test suite sets it, so
# its runs do not pile up in the checkout).
EVIDENCE_DIR_ENV = "SPARKOPS_EVIDENCE_DIR"


def default_root() -> Path:
    """$SPARKOPS_EVIDENCE_DIR; else <repo>/evidence from a checkout, ./evidence when
    installed (a release's venv)."""
    configured = os.environ.get(EVIDENCE_DIR_ENV)
    if configured:
        return Path(configured)
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / "evidence"
    return Path.cwd() / "evidence"


def utc_stamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "step"


class Evidence:
    def __init__(self, runbook: str, root: Path | None = None):
        base = Path(root) if root else default_root()
        path = base / f"{utc_stamp()}-{runbook}"
        suffix = 1
        while path.exists():  # two runs in one second (tests) get their own folders
            suffix += 1
            path = base / f"{utc_stamp()}-{runbook}-{suffix}"
        self.path = path
        base.mkdir(parents=True, exist_ok=True)
        for folder in (self.path, self.path / "steps"):
            folder.mkdir(mode=FOLDER_MODE)
            folder.chmod(FOLDER_MODE)  # whatever the umask

    def write(self, name: str, text: str) -> Path:
        target = self.path / name
        if not target.parent.exists():
            target.parent.mkdir(mode=FOLDER_MODE, parents=True)
            target.parent.chmod(FOLDER_MODE)
        data = (text if text.endswith("\n") else text + "\n").encode()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)
            handle.write(data)
        return target

    def write_json(self, name: str, value) -> Path:
        return self.write(name, json.dumps(value, indent=2, sort_keys=True, default=str))

    def step_log(self, number: int, name: str, text: str) -> Path:
        return self.write(f"steps/{number:02d}-{slug(name)}.log", text)
