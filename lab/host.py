"""One lab host: its root on a tmpfs, its cgroup, and systemd booted in fresh namespaces."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

from lab import cgroup, config, net, proxy, state
from lab.errors import LabError

# Runs as PID 1 of the host's new PID namespace, in its private mount namespace, just
# before it becomes systemd: the API file systems systemd expects of a container, then the
# host's root becomes the namespace's root and this machine's root is unmounted from it.
_BOOT_SCRIPT = r"""
set -e
R="$LAB_ROOT"
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=755,nosuid,size=16m tmpfs "$R/dev"
mknod -m 666 "$R/dev/null" c 1 3
mknod -m 666 "$R/dev/zero" c 1 5
mknod -m 666 "$R/dev/full" c 1 7
mknod -m 666 "$R/dev/random" c 1 8
mknod -m 666 "$R/dev/urandom" c 1 9
mknod -m 666 "$R/dev/tty" c 5 0
mkdir -m 755 "$R/dev/pts"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mkdir -m 1777 "$R/dev/shm"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
# pivot_root, not chroot: a chrooted process may not create user namespaces, and units
# with PrivateUsers=true (prometheus.service) then fail with 217/USER.
mkdir -p "$R/run/lab-oldroot"
cd "$R"
pivot_root . run/lab-oldroot
# From here on the commands are the image's own.
exec /bin/sh -c 'umount -l /run/lab-oldroot && rmdir /run/lab-oldroot && \
    exec /lib/systemd/systemd --log-target=console --show-status=no'
"""


def host_dir(name: str) -> Path:
    return config.lab_dir() / "hosts" / name


def root_dir(name: str) -> Path:
    return host_dir(name) / "root"


def cgroup_dir(name: str) -> Path:
    return cgroup.path(name)


def describe(name: str, ip: str, groups: list[str]) -> dict[str, Any]:
    """What the state file records for a host before any of it is made."""
    return {
        "name": name,
        "ip": ip,
        "groups": groups,
        "netns": net.netns_name(name),
        "veth": net.veth_name(name),
        "cgroup": str(cgroup_dir(name)),
        "root": str(root_dir(name)),
        "process": None,
    }


def is_mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as handle:
        return any(line.split()[4] == target for line in handle)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this mount namespace, deepest first."""
    prefix = str(path)
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    mine = [p for p in points if p == prefix or p.startswith(prefix + "/")]
    return sorted(set(mine), key=len, reverse=True)


def prepare_root(
    name: str, ip: str, image: Path, all_hosts: dict[str, str], host_key: str | None = None
) -> None:
    """Mount a tmpfs at the host's root and unpack the image into it, configured as `name`."""
    root = root_dir(name)
    root.mkdir(parents=True, exist_ok=True)
    if not is_mounted(root):
        options = f"size={config.HOST_TMPFS_SIZE},mode=755"
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(root)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    if not (root / "etc").exists():
        proc = subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-xf", str(image)],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if proc.returncode != 0:
            raise LabError(f"unpacking {image} for host {name} failed: {proc.stderr.strip()}")
    etc = root / "etc"
    (etc / "hostname").write_text(f"{name}\n")
    hosts = ["127.0.0.1\tlocalhost", f"127.0.1.1\t{name}", "::1\tlocalhost ip6-localhost"]
    hosts.append(f"{config.BRIDGE_IP}\t{config.GATEWAY_NAME}")
    hosts += [f"{other_ip}\t{other}" for other, other_ip in sorted(all_hosts.items())]
    (etc / "hosts").write_text("\n".join(hosts) + "\n")
    # Nothing answers DNS inside a host: refused at once on loopback instead of a timeout.
    # Apt needs no DNS (the proxy resolves the mirror); the hosts know each other by /etc/hosts.
    (etc / "resolv.conf").unlink(missing_ok=True)
    (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
    # A UTF-8 locale as on an installed server: services (and initdb's default encoding)
    # would otherwise fall back to POSIX/SQL_ASCII when no locale reaches them.
    for locale_file in ("default/locale", "locale.conf"):
        (etc / locale_file).write_text("LANG=C.UTF-8\n")
    (etc / "apt/apt.conf.d/01sparkops-lab-proxy").write_text(proxy.apt_conf())


def start(host: dict[str, Any], lab_state: dict[str, Any]) -> None:
    """Boot systemd in the host; records the launcher's pid in the state before returning."""
    if state.is_alive(host.get("process")):
        return
    name = host["name"]
    host_cgroup = cgroup.create(cgroup_dir(name))
    console = open(host_dir(name) / "console.log", "ab")  # noqa: SIM115 - handed to the child
    # The launcher enters its own cgroup before `unshare --cgroup`, so the host's cgroup
    # namespace (and the cgroup2 mount systemd sees) is rooted at that cgroup.
    launcher = (
        'echo $$ > "$LAB_CGROUP/cgroup.procs" && exec ip netns exec "$LAB_NETNS" '
        "unshare --mount --pid --uts --ipc --cgroup --fork --kill-child "
        '--propagation private sh -c "$LAB_BOOT"'
    )
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LAB_CGROUP": str(host_cgroup),
        "LAB_NETNS": host["netns"],
        "LAB_ROOT": str(root_dir(name)),
        "LAB_BOOT": _BOOT_SCRIPT,
        # systemd reads this to know it runs in a container (no udev, no consoles).
        "container": "sparkops-lab",
    }
    try:
        proc = subprocess.Popen(
            ["sh", "-c", launcher],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        console.close()
    host["process"] = state.record_process(proc.pid)
    state.save(lab_state)


def stop(host: dict[str, Any]) -> None:
    """Undo everything `start` and `prepare_root` made for this host; safe to repeat."""
    name = host["name"]
    state.kill(host.get("process"), what=f"lab host {name}")
    host["process"] = None
    cgroup.remove(Path(host["cgroup"]))
    for point in mounts_under(host_dir(name)):
        proc = subprocess.run(["umount", point], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise LabError(f"could not unmount {point}: {proc.stderr.strip()}")
    net.remove_host_link(name)
    subprocess.run(["rm", "-rf", "--one-file-system", str(host_dir(name))], check=False)
    if host_dir(name).exists():
        raise LabError(f"could not remove {host_dir(name)}")


def systemd_pid_alive(host: dict[str, Any]) -> bool:
    return state.is_alive(host.get("process")) and os.path.exists(host["cgroup"])
