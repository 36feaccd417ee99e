"""The lab for tests: `lab_hosts` brings the default hosts (db, app, monitor) up once per
session and takes them down at the end.

Tests outside tests/lab/ (the deploy tests) can reuse it with
`from tests.lab.conftest import lab_hosts`; a second copy of the fixture then finds the lab
already up, shares it and leaves the teardown to the copy that brought it up. A lab that was
up before the session (someone's own) is used and left up; to test beside it instead, run
pytest with SPARKOPS_LAB_ID=1 (a second lab: its own bridge, subnet and directory).

Nothing here skips because the machine lacks something: the suite runs as root in CI and
scripts/bootstrap installs every tool the lab needs, so a lab test on a machine without root
or a tool fails, naming what is missing (`pytest -m "not lab"` runs the rest without the lab).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from lab import config, control
from lab.errors import LabError
from testkit import pyinfra_runner as runner
from tests.lab.stack import ACCOUNT, ROOT, by_group, on_host, psql, ready, site_env

SHARE_LAB_ENV = "SPARKOPS_TESTS_SHARE_LAB"


def require_lab_machine() -> None:
    """Fail (not skip) when this machine cannot run the lab: not root, or a tool missing."""
    try:
        control.check_machine()
    except LabError as exc:
        pytest.fail(f"{exc} (the tests that need no lab: pytest -m 'not lab')", pytrace=False)


# Whether this session brought the lab up (and so may take it down and bring it back).
_session = {"owns_lab": False}


@pytest.fixture(scope="session")
def lab_hosts() -> Iterator[list[dict[str, Any]]]:
    """The lab's hosts as the inventory sees them: name, ip, groups, ssh user, key paths."""
    require_lab_machine()
    result = control.up(config.DEFAULT_HOSTS, log=lambda _msg: None)
    _session["owns_lab"] = _session["owns_lab"] or not result.already_up
    try:
        yield result.hosts
    finally:
        if not result.already_up:
            control.down(log=lambda _msg: None)


@pytest.fixture
def owned_lab(lab_hosts):
    """For tests that take the lab down: only a lab this session brought up, never one that
    someone (a deploy in progress) had up before."""
    if not _session["owns_lab"]:
        reason = (
            "a lab was up before this session, and this test takes the lab down: "
            "not taking someone's lab (a deploy in progress) down"
        )
        # A skip would let a run that never tested bringing the lab back count as passing,
        # so it takes an explicit opt-out to skip; by default the test fails and says how.
        if os.environ.get(SHARE_LAB_ENV) == "1":
            pytest.skip(f"{reason} ({SHARE_LAB_ENV}=1)")
        pytest.fail(
            f"{reason}. Run the tests in a lab of their own beside it (SPARKOPS_LAB_ID=1), "
            f"or set {SHARE_LAB_ENV}=1 to skip the tests that take the lab down",
            pytrace=False,
        )
    return lab_hosts


@pytest.fixture(scope="session")
def deployed(deployed_lab):
    """The deployed stack (deployed_lab, below); a module that overrides `deployed` reaches
    the session's as `deployed_lab`."""
    return deployed_lab


@pytest.fixture(scope="session")
def deployed_lab(lab_hosts):
    """The deployed stack: a lab that already serves the app is used as it is (a redeploy
    would build a new release from this tree, minutes); otherwise the site deploy runs."""
    db, app = by_group(lab_hosts, "db"), by_group(lab_hosts, "app")
    ran_site = not ready(app)
    if ran_site:
        result = runner.run_site(env=site_env())
        assert result.returncode == 0 and result.errors == 0, result.output[-6000:]
    current = on_host(app, f"readlink {ROOT}/current").strip().rsplit("/", 1)[-1]
    psql(db, "INSERT INTO accounts (id, name, opening_balance, cash_balance) "
              f"VALUES ('{ACCOUNT}', 'E2E', 1000000, 1000000) ON CONFLICT DO NOTHING")  # fmt: skip
    return {"hosts": lab_hosts, "release": current, "ran_site": ran_site}


@pytest.fixture(scope="session")
def second_deploy(deployed_lab):
    """This tree's site deploy run once more on the deployed lab, which must change nothing
    (tests/lab/test_deploy_e2e.py and test_firewall_lab.py read the one run). When `deployed`
    found a lab already serving, perhaps another tree's release, this tree's deploy runs
    first. Tests that change what the deploy manages put it back as it was."""
    env = site_env()
    if not deployed_lab["ran_site"]:
        first = runner.run_site(env=env)
        assert first.returncode == 0 and first.errors == 0, first.output[-6000:]
    return runner.run_site(env=env)
