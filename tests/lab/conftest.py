"""The lab for tests: `lab_hosts` brings the default hosts (db, app, monitor) up once per
session and takes them down at the end.

Tests outside tests/lab/ (the deploy tests) can reuse it with
`from tests.lab.conftest import lab_hosts`; a second copy of the fixture then finds the lab
already up, shares it and leaves the teardown to the copy that brought it up. A lab that was
up before the session (someone's own) is used and left up.
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


@pytest.fixture(scope="session")
def lab_hosts() -> Iterator[list[dict[str, Any]]]:
    """The lab's hosts as the inventory sees them: name, ip, groups, ssh user, key paths."""
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    result = control.up(config.DEFAULT_HOSTS, log=lambda _msg: None)
    try:
        yield result.hosts
    finally:
        if not result.already_up:
            control.down(log=lambda _msg: None)
