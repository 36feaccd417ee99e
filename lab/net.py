"""The lab's private network: a bridge on this machine and one veth + netns per host.

Only the lab subnet lives here: no NAT and no default route inside the hosts, so a host
reaches this machine's bridge address (the apt proxy) and the other hosts, nothing else.
"""

from __future__ import annotations

import subprocess

from lab import config
from lab.errors import LabError


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if check and proc.returncode != 0:
        raise LabError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc


def link_exists(name: str) -> bool:
    return _ip("link", "show", "dev", name, check=False).returncode == 0


def netns_list() -> list[str]:
    out = _ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_name(host: str) -> str:
    return f"{config.NAME_PREFIX}-{host}"


def veth_name(host: str) -> str:
    return f"{config.VETH_PREFIX}{host}"


def host_ip(index: int) -> str:
    return f"{config.SUBNET_PREFIX}.{config.FIRST_HOST_OCTET + index}"


def host_mac(ip: str) -> str:
    # Fixed per address: a host that comes back on the same IP keeps its MAC, so stale ARP
    # entries on the bridge or in other hosts stay right.
    last = int(ip.rsplit(".", 1)[1])
    return f"02:53:4c:00:00:{last:02x}"


def ensure_bridge() -> None:
    if not link_exists(config.BRIDGE):
        _ip("link", "add", config.BRIDGE, "type", "bridge")
    addr = f"{config.BRIDGE_IP}/{config.PREFIX_LEN}"
    if addr not in _ip("-o", "addr", "show", "dev", config.BRIDGE).stdout:
        _ip("addr", "add", addr, "dev", config.BRIDGE)
    _ip("link", "set", config.BRIDGE, "up")


def ensure_host_link(host: str, ip: str) -> None:
    """The host's netns with eth0 (a veth whose other end is on the bridge) and lo up."""
    ns, veth = netns_name(host), veth_name(host)
    if ns not in netns_list():
        _ip("netns", "add", ns)
    if not link_exists(veth):
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _ip("link", "set", veth, "master", config.BRIDGE, "up")
    _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", ns, "link", "set", "eth0", "address", host_mac(ip))
    addr = f"{ip}/{config.PREFIX_LEN}"
    if addr not in _ip("-n", ns, "-o", "addr", "show", "dev", "eth0").stdout:
        _ip("-n", ns, "addr", "add", addr, "dev", "eth0")
    _ip("-n", ns, "link", "set", "eth0", "up")
    # Someone else's host may have held this IP with another MAC before a crash.
    _ip("neigh", "flush", "dev", config.BRIDGE, "to", ip, check=False)


def remove_host_link(host: str) -> None:
    # The veth goes before the netns: deleting a netns with a live veth peer can leave the
    # namespace pinned until the last reference drops.
    veth, ns = veth_name(host), netns_name(host)
    if link_exists(veth):
        _ip("link", "del", veth)
    if ns in netns_list():
        _ip("netns", "del", ns)


def remove_bridge() -> None:
    if link_exists(config.BRIDGE):
        _ip("link", "del", config.BRIDGE)


def leftover_netns() -> list[str]:
    return [ns for ns in netns_list() if ns.startswith(f"{config.NAME_PREFIX}-")]
