"""`up`, `status` and `down` for the whole lab: the steps of lab.* in order."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import cgroup, config, host, image, net, proxy, ssh, state
from lab.errors import LabError
from sparkops import programs
from sparkops.wait import DeadlineExceeded, wait_until

SSH_READY_TIMEOUT_SECONDS = 60
# Bump when running hosts made by an older version would behave differently (how they boot,
# what they are given); `up` then makes the lab again instead of saying it is up.
# 2: systemd in a pivot_root'ed root (PrivateUsers=true units work), a UTF-8 locale.
LAB_FORMAT = 2
HOST_NAME = re.compile(rf"^[a-z][a-z0-9]{{0,{config.HOST_NAME_MAX - 1}}}$")
# What the lab runs on this machine; sparkops/programs.py says which package brings each.
REQUIRED_TOOLS = (
    "ip",
    "unshare",
    "chroot",
    "mount",
    "tar",
    "ssh",
    "ssh-keygen",
    "debootstrap",
    "apt-cacher-ng",
)

Log = Callable[[str], None]


@dataclass
class UpResult:
    hosts: list[dict[str, Any]]
    already_up: bool
    image_build_seconds: float | None
    seconds: float


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root for namespaces, mounts and cgroups: run it as root")


def check_machine() -> None:
    """Root and every tool the lab runs here, or a LabError naming the packages to install."""
    _require_root()
    missing = [t for t in REQUIRED_TOOLS if programs.find(t) is None]
    if missing:
        raise LabError("; ".join(programs.missing_message(t) for t in missing))


def _check_names(names: Sequence[str]) -> None:
    if not names:
        raise LabError("no hosts given: e.g. --hosts db,app,monitor")
    bad = [n for n in names if not HOST_NAME.match(n)]
    if bad:
        raise LabError(
            f"bad host name(s) {', '.join(map(repr, bad))}: use a lower-case letter, then up "
            f"to {config.HOST_NAME_MAX - 1} lower-case letters or digits"
        )
    if len(set(names)) != len(names):
        raise LabError(f"host names repeat in {', '.join(names)}")
    if len(names) > 200:
        raise LabError("at most 200 hosts fit in the lab subnet")


def inventory_entry(h: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": h["name"],
        "ip": h["ip"],
        "groups": h["groups"],
        "ssh_user": config.SSH_USER,
        "ssh_key": str(config.ssh_key()),
        "known_hosts": str(config.known_hosts()),
    }


def up(names: Sequence[str] = config.DEFAULT_HOSTS, log: Log = print) -> UpResult:
    """Bring up the lab with these hosts (groups: `config.host_groups`); idempotent."""
    check_machine()
    _check_names(names)
    started = time.monotonic()
    with state.locked():
        lab_state = state.load()
        ready = state.read_hosts()
        if ready is not None:
            running = [h["name"] for h in ready]
            if running != list(names):
                raise LabError(
                    f"a lab is up with hosts {', '.join(running)}, not {', '.join(names)}: "
                    "run `sparkops lab down` first"
                )
            alive = all(host.systemd_pid_alive(lab_state["hosts"].get(n, {})) for n in names)
            if alive and lab_state.get("format") == LAB_FORMAT:
                return UpResult(ready, True, None, time.monotonic() - started)
            if alive:
                log("the lab was made by an older version of the lab; making it again")
            else:
                log("the lab is partly down; tearing it down and bringing it up again")
        if ready is not None or lab_state["hosts"] or lab_state["bridge"]:
            _down_locked(log=lambda _msg: None)
            lab_state = state.load()
        hosts, built = _bring_up(list(names), lab_state, log)
        result = UpResult(hosts, False, built, 0.0)
    result.seconds = time.monotonic() - started
    return result


def _bring_up(
    names: list[str], lab_state: dict[str, Any], log: Log
) -> tuple[list[dict[str, Any]], float | None]:
    image_path, built = image.ensure_image(log)
    if built is not None:
        log(f"host image built in {built:.1f}s")
    ssh.ensure_client_key()
    lab_state["bridge"] = config.BRIDGE
    lab_state["format"] = LAB_FORMAT
    state.save(lab_state)
    net.ensure_bridge()
    proxy.ensure(lab_state)
    sources = image.debian_sources()
    addresses = {name: net.host_ip(i) for i, name in enumerate(names)}
    known: dict[tuple[str, str], str] = {}
    for name in names:
        h = host.describe(name, addresses[name], config.host_groups(name))
        lab_state["hosts"][name] = h
        state.save(lab_state)
        net.ensure_host_link(name, h["ip"])
        host.prepare_root(name, h["ip"], image_path, addresses)
        (Path(h["root"]) / "etc/apt/sources.list").write_text(image.sources_list(sources))
        known[(name, h["ip"])] = ssh.install_host_keys(Path(h["root"]), name)
    ssh.write_known_hosts(known)
    for name in names:
        host.start(lab_state["hosts"][name], lab_state)
    for name in names:
        h = lab_state["hosts"][name]
        try:
            wait_until(
                lambda h=h: _check_running(h) and ssh.answers(h["ip"]),
                timeout=SSH_READY_TIMEOUT_SECONDS,
                what=f"ssh on lab host {name} ({h['ip']})",
            )
        except DeadlineExceeded as exc:
            console = host.host_dir(name) / "console.log"
            raise LabError(f"lab host {name} did not answer ssh; see {console}") from exc
    hosts = [inventory_entry(lab_state["hosts"][n]) for n in names]
    state.write_hosts(hosts)
    return hosts, built


def _check_running(h: dict[str, Any]) -> bool:
    if not host.systemd_pid_alive(h):
        console = host.host_dir(h["name"]) / "console.log"
        raise LabError(f"lab host {h['name']} exited while booting; see {console}")
    return True


def status() -> list[dict[str, Any]]:
    """Per host: running, ssh answering, systemd's state. Empty when no lab was made."""
    lab_state = state.load()
    rows = []
    for name, h in lab_state["hosts"].items():
        running = host.systemd_pid_alive(h)
        answering = running and ssh.answers(h["ip"])
        systemd = "-"
        if answering:
            proc = ssh.run(h["ip"], "systemctl is-system-running")
            systemd = proc.stdout.strip() or proc.stderr.strip() or f"exit {proc.returncode}"
        rows.append(
            {"name": name, "ip": h["ip"], "running": running, "ssh": answering, "systemd": systemd}
        )
    return rows


def down(log: Log = print) -> float:
    """Remove every host, link, mount, cgroup and process the lab made; safe to repeat."""
    _require_root()
    started = time.monotonic()
    with state.locked():
        _down_locked(log)
    return time.monotonic() - started


def _down_locked(log: Log) -> None:
    config.hosts_file().unlink(missing_ok=True)
    lab_state = state.load()
    hosts = dict(lab_state["hosts"])
    # Leftovers the state does not know (a state file lost or edited): found by exact names.
    for ns in net.leftover_netns():
        name = ns.removeprefix(f"{config.NAME_PREFIX}-")
        hosts.setdefault(name, host.describe(name, "", []))
    for name in cgroup.host_names():
        hosts.setdefault(name, host.describe(name, "", []))
    hosts_root = config.lab_dir() / "hosts"
    if hosts_root.is_dir():
        for d in hosts_root.iterdir():
            hosts.setdefault(d.name, host.describe(d.name, "", []))
    for name, h in hosts.items():
        host.stop(h)
        lab_state["hosts"].pop(name, None)
        state.save(lab_state)
        log(f"removed lab host {name}")
    proxy.stop(lab_state)
    net.remove_bridge()
    lab_state["bridge"] = None
    state.save(lab_state)
    for path in (config.known_hosts(), config.ssh_key(), config.ssh_key().with_suffix(".pub")):
        path.unlink(missing_ok=True)
    shutil.rmtree(config.lab_dir() / "proxy", ignore_errors=True)
    with contextlib.suppress(OSError):
        (config.lab_dir() / "hosts").rmdir()
    state.clear()
