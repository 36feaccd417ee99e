"""The lab's names, addresses and paths, declared once.

The lab modules, the inventory (`inventories/lab.py`), the tests and the benchmark read
these; nothing else spells the bridge, the subnet or the state directory.
"""

from __future__ import annotations

import os
from pathlib import Path

# --- which lab ----------------------------------------------------------------------------
# One lab per id can run at a time on a machine; a second one (SPARKOPS_LAB_ID=1..9, e.g.
# for tests while someone's lab is in use) gets its own bridge, subnet, names and directory.
_lab_id = os.environ.get("SPARKOPS_LAB_ID", "0")
if _lab_id not in [str(n) for n in range(10)]:
    raise SystemExit(f"SPARKOPS_LAB_ID must be a digit 0-9, not {_lab_id!r}")
LAB_ID = int(_lab_id)
_suffix = str(LAB_ID) if LAB_ID else ""

# --- the private network ------------------------------------------------------------------
# The bridge only carries this subnet between the hosts and this machine: no NAT, no route
# elsewhere. Hosts reach the Debian mirror only through the caching proxy on the bridge.
BRIDGE = f"sparklab{LAB_ID}"
SUBNET_PREFIX = f"10.{213 + LAB_ID}.0"
PREFIX_LEN = 24
BRIDGE_IP = f"{SUBNET_PREFIX}.1"
# This machine as the hosts see it (in their /etc/hosts): services the lab runs here for the
# hosts (the apt proxy, an S3 server) listen on BRIDGE_IP; TLS certificates can name this.
GATEWAY_NAME = "gateway.lab"
FIRST_HOST_OCTET = 10  # db=.10, app=.11, monitor=.12 for the default hosts
PROXY_PORT = 3142
SSH_PORT = 22

# Names of what the lab creates carry this prefix, so a teardown after a crash can find
# its own leftovers by exact name (never by a pattern over other people's things).
NAME_PREFIX = f"sparklab{_suffix}"
# Host-side veth names: `<prefix><host>`; Linux allows 15 characters, so host names have
# at most 9 (HOST_NAME_MAX).
VETH_PREFIX = f"slab{_suffix}-"
HOST_NAME_MAX = 9
CGROUP2_ROOT = Path("/sys/fs/cgroup/unified")

# --- hosts --------------------------------------------------------------------------------
DEFAULT_HOSTS = ("db", "app", "monitor")


def host_groups(name: str) -> list[str]:
    """A host is in the group of its name; a name that ends in digits is also in the group
    of the name without them (app2 is in app2 and app), so `--hosts db,app,app2,monitor`
    makes a lab with two app hosts."""
    base = name.rstrip("0123456789")
    return [name] if base in ("", name) else [name, base]


SSH_USER = "root"
HOST_TMPFS_SIZE = "4g"  # an upper bound; tmpfs only uses what is written

# --- paths --------------------------------------------------------------------------------
REPO_ROOT = Path(__file__).resolve().parent.parent


def lab_dir() -> Path:
    """State of the running lab (state file, keys, host roots): `<repo>/.lab/` by default."""
    default = REPO_ROOT / ".lab" / f"id{LAB_ID}" if LAB_ID else REPO_ROOT / ".lab"
    return Path(os.environ.get("SPARKOPS_LAB_DIR", default))


def cache_dir() -> Path:
    """Images that survive between runs (outside the repository)."""
    return Path(os.environ.get("SPARKOPS_LAB_CACHE", "/var/cache/sparkops-lab"))


def proxy_cache_dir() -> Path:
    """apt-cacher-ng's cache: one per lab id (two proxies must not share a cache)."""
    return cache_dir() / f"apt-cacher-ng{_suffix}"


def state_file() -> Path:
    return lab_dir() / "state.json"


def hosts_file() -> Path:
    """The inventory's input: written when every host answers SSH, removed first on down."""
    return lab_dir() / "hosts.json"


def ssh_key() -> Path:
    return lab_dir() / "id_ed25519"


def known_hosts() -> Path:
    return lab_dir() / "known_hosts"


# --- the image ----------------------------------------------------------------------------
SUITE = "bookworm"
# What a lab host has on top of debootstrap's minbase. Changing this list changes the image
# file name (its hash), so the next `lab up` rebuilds the image.
IMAGE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "sudo",
    "iproute2",
    "iputils-ping",
    "ca-certificates",
    "curl",
    "gnupg",
    "procps",
    "less",
)
# Units that make no sense in a namespace host (no consoles, no devices, the network and
# DNS are set from outside, the clock is the machine's).
MASKED_UNITS = (
    "getty.target",
    "console-getty.service",
    "getty@.service",
    "serial-getty@.service",
    "systemd-udevd.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service",
    "systemd-udev-settle.service",
    "systemd-networkd.service",
    "systemd-networkd.socket",
    "systemd-networkd-wait-online.service",
    "systemd-resolved.service",
    "systemd-timesyncd.service",
    "systemd-modules-load.service",
    "systemd-remount-fs.service",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_reap.service",
    "e2scrub_all.timer",
)
