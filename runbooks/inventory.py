"""Hosts as the pyinfra inventories describe them (`inventories/*.py`: module-level lists of
`(name, data)` per group), so the runbooks reach the same hosts the deploys configure.

The default is the lab's inventory (which reads what `sparkops lab up` wrote); staging and
production are the same kind of file. The inventory's file name is its environment: it
names the deploy's secrets file (sparkops/secrets.py).
"""

from __future__ import annotations

import os
import runpy
from dataclasses import dataclass, field
from pathlib import Path

from runbooks.checklist import Refused
from sparkops import secrets

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INVENTORY = REPO_ROOT / "inventories" / "lab.py"


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    ssh_user: str
    key: Path | None
    known_hosts: Path | None
    groups: frozenset[str] = field(default_factory=frozenset)
    environment: str | None = None  # host data sparkops_environment, when set


@dataclass(frozen=True)
class Inventory:
    path: Path
    hosts: tuple[Host, ...]

    @property
    def environment(self) -> str:
        """The secrets' environment, by the deploys' rule (sparkops.secrets.environment_name):
        the inventory file's name is a group of every host, as pyinfra makes it."""
        explicit = next((h.environment for h in self.hosts if h.environment), None)
        return secrets.environment_name({self.path.stem}, explicit)

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        known = ", ".join(h.name for h in self.hosts) or "none"
        raise Refused(
            f"unknown host {name!r}: the {self.path.stem} inventory ({self.path}) has {known}",
            "pass one of those names with --host",
        )

    def members(self, name: str) -> list[Host]:
        """The hosts of group `name`, none when the inventory has no such group (an optional
        tier: the load balancer). `group` is for the groups a runbook cannot do without."""
        return [h for h in self.hosts if name in h.groups]

    def group(self, name: str) -> list[Host]:
        found = [h for h in self.hosts if name in h.groups]
        if not found:
            raise Refused(
                f"the {self.path.stem} inventory ({self.path}) has no {name} hosts",
                "add them to the inventory or name one with --host",
            )
        return found


def load(path: Path | None = None) -> Inventory:
    path = Path(path or DEFAULT_INVENTORY)
    if not path.exists():
        raise Refused(f"no inventory at {path}", "give --inventory inventories/<name>.py")
    try:
        names = runpy.run_path(str(path))
    except SystemExit as exc:  # the lab inventory says "no lab is up: ..." this way
        raise Refused(str(exc.code), "bring it up, or pick another --inventory") from None
    groups: dict[str, list[tuple[str, dict]]] = {}
    for var, value in names.items():
        if var.startswith("_") or not isinstance(value, list):
            continue
        if all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value):
            groups[var] = value
    hosts: dict[str, Host] = {}
    for group, entries in groups.items():
        for name, data in entries:
            known = hosts.get(name)
            if known is None:
                hosts[name] = known = _host(name, data or {})
            if group != "all":
                hosts[name] = Host(
                    known.name,
                    known.address,
                    known.ssh_user,
                    known.key,
                    known.known_hosts,
                    known.groups | {group},
                    known.environment,
                )
    return Inventory(path, tuple(hosts.values()))


def _host(name: str, data: dict) -> Host:
    key, known = data.get("ssh_key"), data.get("ssh_known_hosts_file")
    return Host(
        name=name,
        address=str(data.get("ssh_hostname") or name),
        ssh_user=str(data.get("ssh_user") or os.environ.get("USER") or "root"),
        key=Path(key) if key else None,
        known_hosts=Path(known) if known else None,
        environment=data.get(secrets.ENVIRONMENT_KEY),
    )
