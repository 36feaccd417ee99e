"""What `sparkops` imports before a command runs. A rollback's seconds to the old release
serving count from the command's launch (bench/lb_switch.py); psycopg, httpx and rich took
half a second of it when every command's module was imported at start."""

from __future__ import annotations

import json
import subprocess
import sys

from sparkops.artefacts import REPO_ROOT

HEAVY = ("psycopg", "httpx", "rich", "alembic", "sqlalchemy")

PROBE = f"""
import json, sys
from sparkops_cli.main import main
command = main.get_command(None, sys.argv[1])
print(json.dumps({{"name": command.name, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def loaded_with(name: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, name], capture_output=True, text=True, timeout=60,
        cwd=REPO_ROOT, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


def test_the_rollback_command_starts_without_the_heavy_libraries():
    assert loaded_with("rollback") == {"name": "rollback", "heavy": []}


def test_a_command_that_needs_them_still_gets_them():
    # `app` runs the app (psycopg): loading it brings psycopg, so the probe can tell.
    assert "psycopg" in loaded_with("app")["heavy"]


def test_every_command_module_is_listed_and_loads_under_its_name():
    from sparkops_cli.main import main

    names = main.list_commands(None)
    assert {"rollback", "restore", "restore-point", "check-generated", "lab"} <= set(names)
    for name in names:
        assert main.get_command(None, name).name == name
    assert main.get_command(None, "no-such-command") is None
