"""Generated artefacts (dashboard JSON, alert rule YAML, ...) and their staleness check.

Policy: generated files are committed, so reviewers see their diffs; `sparkops
check-generated` (run by `make test`) rebuilds each into memory and fails when the committed
copy differs. Builders register here with the path they own and a function returning the
exact file text.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from sparkops.artefacts import REPO_ROOT, Artefact

# Modules that register artefacts when imported; each exposes `ARTEFACTS: list[Artefact]`.
PROVIDERS: tuple[str, ...] = ("dashboards.build", "alerts.build", "app.openapi_build")


def artefacts() -> list[Artefact]:
    found: list[Artefact] = []
    for name in PROVIDERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name in (name, name.rsplit(".", 1)[0]):
                continue  # provider not written yet
            raise
        found.extend(module.ARTEFACTS)
    return found


def stale(root: Path = REPO_ROOT) -> list[tuple[Artefact, str]]:
    """Artefacts whose committed file is missing or differs from a fresh build."""
    problems = []
    for art in artefacts():
        path = root / art.path
        if not path.exists():
            problems.append((art, "missing"))
        elif path.read_text() != art.build():
            problems.append((art, "stale"))
    return problems


def write_all(root: Path = REPO_ROOT) -> list[Path]:
    written = []
    for art in artefacts():
        path = root / art.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(art.build())
        written.append(path)
    return written
