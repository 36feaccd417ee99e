"""The systemd sandbox of every unit Spark Ops writes, declared once (docs/hardening.md).

Each unit template renders `hardening` (a list of `Key=value` lines) into its [Service]
section; this module says which lines each service gets. The baseline is what Debian's own
prometheus.service does and more: no capabilities, a read-only system (ProtectSystem=strict)
with the few paths a service writes named in ReadWritePaths, no home directories, no devices,
no kernel knobs, hidden processes, native system calls of the @system-service set only, a
0077 umask. What a service needs beyond it is said where it is granted:

- the app, its key expiry job, the outbox dispatcher and the pgBouncer exporter: each its own
  system user, nothing written, network (IPv4, IPv6, Unix) only; a user namespace of their own
  (PrivateUsers) and their IPC removed when they stop;
- the database route of a Patroni cluster (HAProxy on each app host): a dynamic user;
- the pgBackRest backup and the WAL budget check (as postgres): the repository, spool and log
  directories;
- the restore drill (root, because it runs PostgreSQL's tools as postgres and writes the
  textfile metric): the capabilities to switch users and own files, the scratch cluster's
  directories; not PrivateUsers (it needs the host's users), not RemoveIPC (postgres' IPC is
  the real cluster's);
- pgBouncer (Debian's unit, as postgres, through a drop-in): its log and socket directories;
- Prometheus, Alertmanager, node_exporter and postgres_exporter (Debian's units, as
  prometheus, through drop-ins): their data directory; node_exporter sees the host's
  processes and reads /home (its mount and file system metrics), and asks the kernel for
  the network interfaces over netlink.

tests/deploys/test_hardening.py runs `systemd-analyze security --offline=yes` on the rendered
units and fails above EXPOSURE_THRESHOLD; the lab checks the loaded units the same way.
"""

from __future__ import annotations

from sparkops import layout

# Debian 12's own prometheus.service scores 4.0 ("OK"); every unit of ours must do better.
DEBIAN_PROMETHEUS_EXPOSURE = 4.0
# The drill (root, switching users) is the most exposed of ours at 3.1; the others are <= 1.9.
EXPOSURE_THRESHOLD = 3.5

NETWORK_FAMILIES = "AF_UNIX AF_INET AF_INET6"
# Debian's prometheus and prometheus-alertmanager keep their data here.
PROMETHEUS_DATA_DIR = "/var/lib/prometheus"
# Debian's units that get our sandbox as a drop-in (monitoring_service).
MONITORING_UNITS = (
    "prometheus.service",
    "prometheus-alertmanager.service",
    "prometheus-node-exporter.service",
    "prometheus-postgres-exporter.service",
)

BASELINE = (
    "NoNewPrivileges=yes",
    "UMask=0077",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "PrivateMounts=yes",
    "DevicePolicy=closed",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectProc=invisible",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallErrorNumber=EPERM",
)
REPLACEABLE = frozenset({"ProtectProc", "ProtectHome", "ProtectClock"})
# No capabilities at all: none of these services binds a port below 1024 (the app's socket
# is bound by systemd) or touches another user's files.
NO_CAPABILITIES = ("CapabilityBoundingSet=", "AmbientCapabilities=")


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0]


def _lines(*, families: str, capabilities: tuple[str, ...], extra: tuple[str, ...] = (),
           read_write: tuple[str, ...] = ()) -> list[str]:  # fmt: skip
    # An extra line for a key of REPLACEABLE takes the baseline's place (systemd would let the
    # later one win; the file then says one thing).
    replaced = {line.partition("=")[0] for line in extra} & REPLACEABLE
    baseline = [line for line in BASELINE if line.partition("=")[0] not in replaced]
    lines = [*baseline, f"RestrictAddressFamilies={families}", *capabilities, *extra]
    if read_write:
        lines.append("ReadWritePaths=" + " ".join(read_write))
    return lines


def app_service() -> list[str]:
    """The app, its oneshot key expiry, the outbox dispatcher, the pgBouncer exporter: Python
    that talks to pgBouncer, Redis or a webhook and writes nothing on disk (the journal gets
    its output). CPython and the wheels the release ships (psycopg's binary, uvloop,
    httptools, cryptography) need no writable executable memory."""
    return _lines(
        families=NETWORK_FAMILIES,
        capabilities=NO_CAPABILITIES,
        extra=(
            "SystemCallFilter=~@privileged @resources",
            "MemoryDenyWriteExecute=yes",
            "PrivateUsers=yes",
            "RemoveIPC=yes",
        ),
    )


def db_route_service() -> list[str]:
    """The database route on an app host of a Patroni cluster (HAProxy, deploys/dbroute.py):
    binds loopback ports above 1024 and checks the db hosts, so a dynamic user with no
    capability; its runtime directory (the admin socket) is its own. MemoryDenyWriteExecute
    holds because the route's configuration has no regular expression (HAProxy's PCRE2 JIT
    would need writable executable memory)."""
    return _lines(
        families=NETWORK_FAMILIES,
        capabilities=NO_CAPABILITIES,
        extra=(
            "SystemCallFilter=~@privileged",
            "MemoryDenyWriteExecute=yes",
            "DynamicUser=yes",
            "PrivateUsers=yes",
            "RemoveIPC=yes",
        ),
    )


def backup_service(repo_path: str | None, spool_dir: str) -> list[str]:
    """A pgBackRest backup as postgres: reads the cluster over its socket and data directory,
    writes the repository (a posix path; S3 needs only the network), spool and log.
    Not RemoveIPC: postgres' shared memory is the running cluster's."""
    writable = [f"-{repo_path}"] if repo_path else []
    writable += [f"-{spool_dir}", "-/var/log/pgbackrest"]
    return _lines(
        families=NETWORK_FAMILIES,
        capabilities=NO_CAPABILITIES,
        extra=("SystemCallFilter=~@privileged @resources", "MemoryDenyWriteExecute=yes"),
        read_write=tuple(writable),
    )


def pgbackrest_server_service() -> list[str]:
    """pgBackRest's TLS server as postgres (a cluster node): reads the data directory and
    talks to PostgreSQL on its socket for a backup copied from this node, writes its log."""
    return _lines(
        families=NETWORK_FAMILIES,
        capabilities=NO_CAPABILITIES,
        extra=("SystemCallFilter=~@privileged @resources", "MemoryDenyWriteExecute=yes"),
        read_write=("-/var/log/pgbackrest",),
    )


def drill_service(scratch_dir: str, evidence_dir: str, spool_dir: str) -> list[str]:
    """The restore drill (root): runuser to postgres for PostgreSQL's and pgBackRest's tools
    (so setuid/setgid, and the audit and chown a PAM session and a scratch cluster take), a
    scratch cluster beside the real one (the directory it is made in, with its log; the
    shared socket directory; the PostgreSQL log directory), the textfile metric, its evidence.
    Not PrivateUsers (it needs the host's users), not RemoveIPC (postgres' IPC is the real
    cluster's)."""
    return _lines(
        families=NETWORK_FAMILIES,
        capabilities=(
            "CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_CHOWN CAP_FOWNER "
            "CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_KILL CAP_AUDIT_WRITE CAP_SYS_PTRACE",
            "AmbientCapabilities=",
        ),
        # Its scratch-place check looks for a postgres process working in the directory
        # (runbooks/scratch.py): other users' processes stay visible, their cwd readable.
        # Not ~@resources: runuser's PAM session (pam_limits) sets resource limits.
        extra=("MemoryDenyWriteExecute=yes", "ProtectProc=default"),
        read_write=(
            f"-{_parent(scratch_dir)}",
            layout.SOCKET_DIR,
            f"-{_parent(layout.POSTGRES_LOG_FILE)}",
            "-/var/log/pgbackrest",
            f"-{spool_dir}",
            layout.NODE_EXPORTER_TEXTFILE_DIR,
            evidence_dir,
        ),
    )


def pgbouncer_service() -> list[str]:
    """pgBouncer (Debian's unit runs it as postgres): its log file's directory and the socket
    directory it shares with PostgreSQL; the pidfile's runtime directory is its own.
    Not RemoveIPC, for the same reason as the backup."""
    return _lines(
        families=NETWORK_FAMILIES,
        capabilities=NO_CAPABILITIES,
        extra=("SystemCallFilter=~@privileged @resources", "MemoryDenyWriteExecute=yes"),
        read_write=(layout.SOCKET_DIR, _parent(layout.PGBOUNCER_LOG_FILE)),
    )


def monitoring_service(unit: str) -> list[str]:
    """A drop-in over Debian's Prometheus, Alertmanager, node_exporter or postgres_exporter
    unit (Go programs, as the prometheus user): Prometheus and Alertmanager write their data
    under /var/lib/prometheus; node_exporter reads the host (mounts through /proc/1, so
    other processes stay visible; /home read-only, so its file system is measured; the
    clock's state through adjtimex)."""
    denied = "~@privileged @resources"
    if unit == "prometheus-node-exporter.service":
        denied = "~@resources"  # @privileged holds @clock: adjtimex (below)
    extra: tuple[str, ...] = (f"SystemCallFilter={denied}", "MemoryDenyWriteExecute=yes")
    writable: tuple[str, ...] = ()
    if unit in ("prometheus.service", "prometheus-alertmanager.service"):
        writable = (PROMETHEUS_DATA_DIR,)
    families = NETWORK_FAMILIES
    if unit == "prometheus-node-exporter.service":
        # ProtectClock forbids adjtimex, which its timex collector calls (read only).
        extra += (
            "ProtectProc=default",
            "ProtectHome=read-only",
            "ProtectClock=no",
            "SystemCallFilter=adjtimex",
        )
        families += " AF_NETLINK"  # its netdev collector reads the interfaces over netlink
    return _lines(families=families, capabilities=NO_CAPABILITIES, extra=extra, read_write=writable)
