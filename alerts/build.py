"""The alert rule file and its promtool tests, registered as generated artefacts."""

from __future__ import annotations

from alerts import promtool_cases, rules
from sparkops.artefacts import Artefact

RULES_PATH = "alerts/generated/spark-ops.rules.yml"
TESTS_PATH = "alerts/tests/spark-ops.rules.test.yml"
COMMAND = "sparkops alerts build"

ARTEFACTS: list[Artefact] = [
    Artefact(path=RULES_PATH, build=rules.render, command=COMMAND),
    Artefact(path=TESTS_PATH, build=promtool_cases.render, command=COMMAND),
]
