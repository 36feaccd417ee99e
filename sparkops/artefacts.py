"""A generated artefact (dashboard JSON, alert rule YAML, ...): the path it owns, the function
that returns its exact text, and the command that rebuilds it.

The builders (dashboards.build, alerts.build) declare theirs with this; the registry and the
staleness check that `sparkops check-generated` runs live in the command line
(sparkops_cli/generated.py), the only layer that may import every builder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Artefact:
    path: str  # relative to the repository root
    build: Callable[[], str]
    command: str  # what a person runs to rebuild it
