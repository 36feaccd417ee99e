"""The lab's cgroups under the machine's cgroup2 hierarchy: one per host, one for the proxy.

Every process the lab starts runs inside a cgroup the lab made, so `down` can end exactly
those processes (cgroup.kill) even when a crash lost the pids, and leave nothing behind.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from lab import config
from lab.errors import LabError
from sparkops.wait import wait_until

PROXY = "apt-proxy"  # a dash: never a host name, so a host's cgroup cannot clash with it


def path(name: str) -> Path:
    return config.CGROUP2_ROOT / f"{config.NAME_PREFIX}-{name}"


def create(cgroup: Path) -> Path:
    if not (config.CGROUP2_ROOT / "cgroup.procs").exists():
        raise LabError(
            f"no cgroup2 hierarchy at {config.CGROUP2_ROOT}: the lab's hosts need one "
            "(systemd runs in a cgroup namespace rooted there)"
        )
    cgroup.mkdir(exist_ok=True)
    return cgroup


def ours() -> list[Path]:
    """Every cgroup the lab made (also after its state file was lost)."""
    return sorted(config.CGROUP2_ROOT.glob(f"{config.NAME_PREFIX}-*"))


def host_names() -> list[str]:
    prefix = f"{config.NAME_PREFIX}-"
    return [c.name.removeprefix(prefix) for c in ours() if "-" not in c.name.removeprefix(prefix)]


def procs(cgroup: Path) -> list[int]:
    pids: list[int] = []
    for file in cgroup.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids += [int(p) for p in file.read_text().split()]
    return pids


def remove(cgroup: Path) -> None:
    """End whatever still runs in the cgroup, then remove it and what systemd made inside."""
    if not cgroup.exists():
        return
    if procs(cgroup):
        # Normally empty by now (the launcher's SIGKILL took the namespace down); after a
        # crash the launcher's pid may be lost but its processes still run here.
        (cgroup / "cgroup.kill").write_text("1")
        wait_until(lambda: not procs(cgroup), timeout=15, what=f"processes in {cgroup} to exit")
    dirs = sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))

    def removed() -> bool:
        for d in [*dirs, cgroup]:  # deepest first: a cgroup with children cannot go
            with contextlib.suppress(FileNotFoundError):
                d.rmdir()
        return not cgroup.exists()

    wait_until(removed, timeout=10, what=f"{cgroup} to be removed")
