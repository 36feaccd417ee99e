"""The programs the code runs on this machine, each with the Debian package it comes from.

"This machine" is where the tests, their fixtures (testkit/), the lab (lab/), the
runbooks' local executor, testkit/lab_s3.py and the benchmarks run. scripts/debian-packages.txt
lists every package named here and scripts/bootstrap installs it;
tests/unit/test_debian_packages.py finds the programs in the source, fails when one is not in
`PACKAGES` or its package is not listed, and checks each pairing with `dpkg -S`.
"""

from __future__ import annotations

import os
import shutil

from sparkops import layout

PACKAGE_LIST = "scripts/debian-packages.txt"

# program (argv[0]'s last path component) -> Debian 12 package
PACKAGES: dict[str, str] = {
    # PostgreSQL 15: the throwaway clusters, the runbooks' pg_ctl and psql, the benchmarks.
    "initdb": "postgresql-15",
    "pg_controldata": "postgresql-15",
    "pg_ctl": "postgresql-15",
    "pgbench": "postgresql-15",
    "pg_waldump": "postgresql-15",
    "postgres": "postgresql-15",  # `postgres -C`: a stopped server's settings
    "psql": "postgresql-client-15",
    "pgbackrest": "pgbackrest",
    # Debian's Python: the db hosts' scripts (the backup-time metric, the WAL budget check)
    # run under it there and in their tests.
    "python3": "python3-minimal",
    "pgbouncer": "pgbouncer",
    "haproxy": "haproxy",
    "redis-server": "redis-server",
    "redis-benchmark": "redis-tools",
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-node-exporter": "prometheus-node-exporter",
    "prometheus-postgres-exporter": "prometheus-postgres-exporter",
    # The header smoke test's browser check and the dashboard snapshot's PNG.
    "chromium": "chromium",
    # Alertmanager's configuration checks (tests; the monitoring deploy runs it on the host).
    "amtool": "prometheus-alertmanager",
    "wrk": "wrk",
    # The Patroni cluster in the test kit (testkit/hacluster.py): etcd, Patroni (the route's
    # HAProxy is listed with the load balancer's).
    "etcd": "etcd-server",
    "patroni": "patroni",
    "patronictl": "patroni",  # runbooks/cluster.py, on the db hosts and with the test kit
    # The units' exposure and syntax, offline on the rendered files (tests/deploys).
    "systemd-analyze": "systemd",
    # The firewall's ruleset, loaded in a throwaway network namespace (tests/deploys).
    "nft": "nftables",
    # The lab: images, namespaces, addresses, SSH, the apt proxy, the S3 endpoint.
    "apt-cacher-ng": "apt-cacher-ng",
    "apt-config": "apt",
    "debootstrap": "debootstrap",
    "ip": "iproute2",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "stunnel4": "stunnel4",
    "openssl": "openssl",
    "mount": "mount",
    "umount": "mount",
    "pivot_root": "util-linux",
    "runuser": "util-linux",
    "unshare": "util-linux",
    "getent": "libc-bin",
    "grep": "grep",
    "sed": "sed",
    "find": "findutils",
    "tar": "tar",
    "dpkg": "dpkg",
    "sh": "dash",
    # coreutils, in the lab's scripts and the runbooks' steps.
    "cat": "coreutils",
    "chmod": "coreutils",
    "chown": "coreutils",
    "chroot": "coreutils",
    "cp": "coreutils",
    "cut": "coreutils",
    "dirname": "coreutils",
    "du": "coreutils",
    "head": "coreutils",
    "env": "coreutils",
    "false": "coreutils",
    "id": "coreutils",
    "install": "coreutils",
    "ln": "coreutils",
    "ls": "coreutils",
    "mkdir": "coreutils",
    "mknod": "coreutils",
    "mktemp": "coreutils",
    "mv": "coreutils",
    "printf": "coreutils",
    "readlink": "coreutils",
    "rm": "coreutils",
    "rmdir": "coreutils",
    "sleep": "coreutils",
    "sync": "coreutils",
    "tail": "coreutils",
    "test": "coreutils",
    "tr": "coreutils",
    "true": "coreutils",
}

# Programs the code names but runs only on lab or production hosts (over SSH, or inside a lab
# host after it leaves this machine's root), where the lab image and the deploys install them.
ON_HOSTS_ONLY: dict[str, str] = {
    "systemctl": "runbooks/services.py SystemdService: units on a db or app host, over SSH",
    "journalctl": "runbooks/services.py SystemdService: a unit's log on its host, over SSH",
    "systemd": "lab/host.py: the lab host's PID 1, from the host image after pivot_root",
}

# Where programs live on Debian besides PATH: sbin for a non-root PATH, and PostgreSQL's
# versioned directory (the code calls its binaries by full path).
SEARCH_DIRS = ("/usr/sbin", "/sbin", layout.POSTGRES_BINDIR)


class ProgramMissing(RuntimeError):
    """A program the code needs is not installed; the message names its package."""


def package_of(program: str) -> str:
    try:
        return PACKAGES[program]
    except KeyError:
        raise KeyError(
            f"{program!r} is not in sparkops/programs.py PACKAGES: add it with its Debian "
            f"package (and the package to {PACKAGE_LIST})"
        ) from None


def missing_message(program: str) -> str:
    return (
        f"{program} is not installed: it comes from Debian's {package_of(program)} package, "
        f"listed in {PACKAGE_LIST}; run ./scripts/bootstrap (it installs what is missing)"
    )


def find(program: str) -> str | None:
    """The program's path, looking in PATH and then the sbin and PostgreSQL directories."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *SEARCH_DIRS])
    return shutil.which(program, path=search)


def require(program: str) -> str:
    """The program's path, or `ProgramMissing` naming the package that provides it."""
    path = find(program)
    if path is None:
        raise ProgramMissing(missing_message(program))
    return path
