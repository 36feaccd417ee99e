"""The command line as the app release ships it (deploys/release.py: foundation, app, runbooks,
command line; no lab, dashboards, alerts, sign-off, deploys or control-plane libraries): the
commands the hosts' units and the drill run still work, and a control-machine command says
where to run it instead of failing with a traceback."""

from __future__ import annotations

import subprocess
import sys

from deploys import release
from sparkops.artefacts import REPO_ROOT
from sparkops_cli.main import CONTROL_ONLY

# Import the command line with every package the release leaves out made unimportable.
HIDE = f"""
import sys
class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {sorted(CONTROL_ONLY)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Hide())
from sparkops_cli.main import main
main()
"""


def sparkops_as_shipped(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", HIDE, *args],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, check=False,
    )  # fmt: skip


def test_the_release_ships_no_control_plane_package():
    shipped = set(release.SOURCE_DIRS)
    assert shipped == {"sparkops", "app", "runbooks", "sparkops_cli"}
    assert not shipped & CONTROL_ONLY


def test_what_the_hosts_run_works_without_the_control_plane():
    for args in (
        ["--help"],
        ["outbox", "run", "--help"],
        ["app", "purge-idempotency-keys", "--help"],
        ["app", "keys", "create", "--help"],
        ["drill", "--help"],
        ["restore", "--help"],
        ["rollback", "--help"],
    ):
        result = sparkops_as_shipped(*args)
        assert result.returncode == 0, (args, result.stderr[-2000:])
        assert "Usage:" in result.stdout


def test_a_control_machine_command_says_where_to_run_it():
    result = sparkops_as_shipped("lab", "up")
    assert result.returncode == 1
    assert "runs on the control machine" in result.stderr and "make bootstrap" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_product_module_is_still_a_loud_error():
    """Only the control-plane packages are tolerated: anything else missing is a bug."""
    code = HIDE.replace(f"{sorted(CONTROL_ONLY)!r}", "['runbooks']")
    result = subprocess.run(
        [sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=60,
        cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr
