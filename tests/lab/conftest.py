"""The lab for tests: `lab_hosts` brings the default hosts (db, app, monitor) up once per
session and takes them down at the end.

Tests outside tests/lab/ (the deploy tests) can reuse it with
`from tests.lab.conftest import lab_hosts`; a second copy of the fixture then finds the lab
already up, shares it and leaves the teardown to the copy that brought it up. A lab that was
up before the session (someone's own) is used and left up; to test beside it instead, run
pytest with SPARKOPS_LAB_ID=1 (a second lab: its own bridge, subnet and directory).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from lab import config, control


def lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root for namespaces"
    for tool in ("debootstrap", "apt-cacher-ng", "unshare", "ip", "ssh"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"{tool} is not installed (scripts/debian-packages.txt)"
    return None


# Whether this session brought the lab up (and so may take it down and bring it back).
_session = {"owns_lab": False}


@pytest.fixture(scope="session")
def lab_hosts() -> Iterator[list[dict[str, Any]]]:
    """The lab's hosts as the inventory sees them: name, ip, groups, ssh user, key paths."""
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
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
        pytest.skip(
            "a lab was up before this session: not taking someone's lab down "
            "(SPARKOPS_LAB_ID=1 runs the tests in a second lab beside it)"
        )
    return lab_hosts
