"""The high-availability cluster's shape, from the inventory: pure functions, no pyinfra.

An inventory with a group `etcd` turns the db group into a Patroni cluster: etcd (Debian's
etcd-server) on the etcd hosts, Patroni (Debian's patroni) on every db host owning
PostgreSQL 15, pgBouncer in front of each node as on a single host, and on each app host a
database route (HAProxy, loopback only) sending writes to the node Patroni's REST API calls
primary. Without the group nothing here is used and a single db host works as before.

The functions return data (dicts, lines); deploys/etcd.py, deploys/patroni.py and
deploys/dbroute.py upload it, and the tests read it without a host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from deploys import support
from sparkops import defaults, layout

ETCD_GROUP = "etcd"
DB_GROUP = "db"

# Patroni's own roles, besides the app's (sparkops.dbroles): created by Patroni at bootstrap
# with the passwords in its configuration.
ROLE_REPLICATION = "replicator"
ROLE_REWIND = "rewinder"
PATRONI_RESTAPI_USER = "patroni"
# Secrets (sparkops/secrets.py) Patroni's configuration carries.
SECRET_SUPERUSER = "patroni_superuser"
SECRET_REPLICATION = "patroni_replication"
SECRET_REWIND = "patroni_rewind"
SECRET_RESTAPI = "patroni_restapi"

# Settings Patroni sets itself (from `postgresql.listen`, `data_dir`) or must not be given as
# parameters; the single-host deploy's derived settings drop these on the way through.
PATRONI_OWNED = frozenset({"listen_addresses", "port", "data_directory", "hba_file"})

DEFAULTS = {
    # Patroni's synchronous_mode: a commit returns only once a replica has it, so a failover
    # loses no acknowledged order. Costs a round trip to the replica per commit (measured in
    # docs/ha.md). `False` trades that guarantee for latency.
    "ha_synchronous_mode": True,
    # With synchronous_mode_strict, writes stop when no replica is there to confirm them;
    # off, the primary goes on alone (and says so: the replica-not-streaming alert).
    "ha_synchronous_mode_strict": False,
    # A replica further behind than this (bytes) is not promoted by an automatic failover.
    "ha_maximum_lag_on_failover": 1048576,
    "ha_ttl": defaults.PATRONI_TTL_SECONDS,
    "ha_loop_wait": defaults.PATRONI_LOOP_WAIT_SECONDS,
    "ha_retry_timeout": defaults.PATRONI_RETRY_TIMEOUT_SECONDS,
}


class ClusterError(ValueError):
    """An inventory that cannot make a cluster; the message names what to change."""


@dataclass(frozen=True)
class Member:
    name: str
    address: str


@dataclass(frozen=True)
class RestApiTls:
    """Patroni's REST API over HTTPS: the node's key pair, and the CA its clients (patronictl,
    the database route's checks, Prometheus, the deploy's probe) verify it against."""

    cert: str = layout.PATRONI_TLS_CERT
    key: str = layout.PATRONI_TLS_KEY
    ca: str = layout.TLS_CA_FILE


def rest_url(address: str, port: int = defaults.PATRONI_REST_PORT) -> str:
    return f"https://{address}:{port}"


def is_cluster(group_names: Sequence[str] | set[str]) -> bool:
    """True when the inventory's groups ask for a Patroni cluster (a non-empty etcd group)."""
    return ETCD_GROUP in set(group_names)


def check_topology(db: Sequence[Member], etcd: Sequence[Member]) -> None:
    """Refuse shapes that cannot fail over or cannot keep a quorum, before anything runs."""
    if len(db) < 2:
        raise ClusterError(
            f"a Patroni cluster needs at least 2 db hosts to fail over to, the inventory has "
            f"{len(db)}: add a db host, or remove the {ETCD_GROUP!r} group for a single host"
        )
    if len(etcd) % 2 == 0:
        raise ClusterError(
            f"etcd needs an odd number of members for a quorum, the inventory has {len(etcd)}: "
            f"use 3 (tolerates one member down) or 5"
        )
    for group, members in (("db", db), (ETCD_GROUP, etcd)):
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ClusterError(f"group {group!r} names a host twice: {names}")


def etcd_initial_cluster(members: Sequence[Member]) -> str:
    return ",".join(
        f"{m.name}=http://{m.address}:{defaults.ETCD_PEER_PORT}"
        for m in sorted(members, key=lambda m: m.name)
    )


def etcd_environment(member: Member, members: Sequence[Member], token: str) -> dict[str, str]:
    """/etc/default/etcd for one member (Debian's etcd.service reads it)."""
    client = f"http://{member.address}:{defaults.ETCD_CLIENT_PORT}"
    return {
        "ETCD_NAME": member.name,
        "ETCD_DATA_DIR": layout.ETCD_DATA_DIR,
        "ETCD_LISTEN_PEER_URLS": f"http://{member.address}:{defaults.ETCD_PEER_PORT}",
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": f"http://{member.address}:{defaults.ETCD_PEER_PORT}",
        # Loopback too, so etcdctl and Patroni on the same host need no address.
        "ETCD_LISTEN_CLIENT_URLS": f"{client},http://127.0.0.1:{defaults.ETCD_CLIENT_PORT}",
        "ETCD_ADVERTISE_CLIENT_URLS": client,
        "ETCD_INITIAL_CLUSTER": etcd_initial_cluster(members),
        # Read only when the data directory is empty: later starts rejoin as they were.
        "ETCD_INITIAL_CLUSTER_STATE": "new",
        "ETCD_INITIAL_CLUSTER_TOKEN": token,
        "ETCD_ENABLE_V2": "false",
    }


def etcd_hosts(members: Sequence[Member]) -> list[str]:
    return [
        f"{m.address}:{defaults.ETCD_CLIENT_PORT}" for m in sorted(members, key=lambda m: m.name)
    ]


def hba_lines(app_rules: list[dict], db: Sequence[Member]) -> list[str]:
    """pg_hba.conf lines for Patroni (it writes the file): the single-host rules (already
    expanded, deploys.postgresql.hba_rules) plus replication and rewind between the nodes."""
    lines = []
    for rule in app_rules:
        if rule["type"] == "local":
            lines.append(f"local {rule['database']} {rule['user']} {rule['method']}")
        else:
            fields = (rule["type"], rule["database"], rule["user"], rule["address"])
            lines.append(" ".join(fields) + f" {rule['method']}")
    for member in sorted(db, key=lambda m: m.name):
        peer = f"{member.address}/32"
        # TLS as for every network client (deploys/tls.py): libpq's default sslmode=prefer
        # makes Patroni's replication and pg_rewind connections use it.
        lines.append(f"hostssl replication {ROLE_REPLICATION} {peer} scram-sha-256")
        # pg_rewind reads the new primary's files through an ordinary connection.
        lines.append(f"hostssl postgres {ROLE_REWIND} {peer} scram-sha-256")
    # Patroni asks its own node over loopback (IDENTIFY_SYSTEM) for a replica's timeline;
    # refused, its /metrics printed `patroni_postgres_timeline None`, which Prometheus cannot
    # parse: every replica's target was down and the replica alerts blind.
    lines.append(f"hostssl replication {ROLE_REPLICATION} 127.0.0.1/32 scram-sha-256")
    return lines


def parameters(settings: dict) -> dict:
    """The deploy's PostgreSQL settings as Patroni parameters (Patroni owns the listen address
    and port; it needs hot_standby and hint bits for pg_rewind)."""
    result = {k: v for k, v in settings.items() if k not in PATRONI_OWNED}
    result.update({"hot_standby": True, "wal_log_hints": True})
    result.setdefault("max_replication_slots", 10)
    return {k: (("on" if v else "off") if isinstance(v, bool) else v) for k, v in result.items()}


def patroni_config(
    member: Member,
    db: Sequence[Member],
    etcd: Sequence[Member],
    *,
    settings: dict,
    hba_rules: list[dict],
    data: dict,
    secret: Callable[[str], str],
    rest_tls: RestApiTls = RestApiTls(),
) -> dict:
    """Patroni's config.yml for one db host, as a dict (yaml.safe_dump writes it).

    `settings` are the single-host deploy's PostgreSQL settings (derived_settings), so the
    archiving and logging the rest of the platform expects pass through Patroni unchanged;
    `secret(name)` reads the environment's secrets; `rest_tls` the REST API's key pair.
    """
    check_topology(db, etcd)
    pg = f"{member.address}:{defaults.POSTGRES_PORT}"
    return {
        "scope": defaults.PATRONI_SCOPE,
        "namespace": "/service/",
        "name": member.name,
        "restapi": {
            "listen": f"{member.address}:{defaults.PATRONI_REST_PORT}",
            "connect_address": f"{member.address}:{defaults.PATRONI_REST_PORT}",
            # Reads (health checks, /metrics) stay open to the network the firewall allows;
            # changes (switchover, restart, reinit) need these credentials.
            "authentication": {
                "username": PATRONI_RESTAPI_USER,
                "password": secret(SECRET_RESTAPI),
            },
            # HTTPS: the credentials above and the cluster's state never cross the network in
            # clear. Patroni reads the key pair again on reload when the certificate changed.
            "certfile": rest_tls.cert,
            "keyfile": rest_tls.key,
        },
        "ctl": {
            "authentication": {
                "username": PATRONI_RESTAPI_USER,
                "password": secret(SECRET_RESTAPI),
            },
            # patronictl verifies the node it asks (name and chain); Patroni's own calls to
            # the other nodes are encrypted but do not verify them (Patroni's code).
            "cacert": rest_tls.ca,
            "insecure": False,
        },
        "etcd3": {"hosts": etcd_hosts(etcd)},
        "bootstrap": {
            "dcs": {
                "ttl": int(data["ha_ttl"]),
                "loop_wait": int(data["ha_loop_wait"]),
                "retry_timeout": int(data["ha_retry_timeout"]),
                "maximum_lag_on_failover": int(data["ha_maximum_lag_on_failover"]),
                "synchronous_mode": bool(data["ha_synchronous_mode"]),
                "synchronous_mode_strict": bool(data["ha_synchronous_mode_strict"]),
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": parameters(settings),
                },
            },
            # Read at the first bootstrap only (postgresql.pg_hba below is what Patroni keeps
            # writing); Debian's Patroni 3.0.2 validator also insists on it.
            "pg_hba": hba_lines(hba_rules, db),
            "initdb": [
                {"encoding": "UTF8"},
                {"locale": "C.UTF-8"},
                "data-checksums",
                {"auth-local": "peer"},
                {"auth-host": "scram-sha-256"},
            ],
        },
        "postgresql": {
            "listen": f"127.0.0.1,{pg}",
            "connect_address": pg,
            "data_dir": layout.POSTGRES_DATA_DIR,
            "bin_dir": layout.POSTGRES_BINDIR,
            "pgpass": layout.PATRONI_PGPASS,
            "use_unix_socket": True,
            "authentication": {
                "superuser": {"username": "postgres", "password": secret(SECRET_SUPERUSER)},
                "replication": {
                    "username": ROLE_REPLICATION,
                    "password": secret(SECRET_REPLICATION),
                },
                "rewind": {"username": ROLE_REWIND, "password": secret(SECRET_REWIND)},
            },
            "parameters": {"unix_socket_directories": layout.SOCKET_DIR},
            "pg_hba": hba_lines(hba_rules, db),
            # A new primary makes sure its pgBackRest repository takes its WAL (the script).
            "callbacks": {"on_role_change": layout.PATRONI_ROLE_CHANGE_SCRIPT},
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    }


def role_change_script(log: str = layout.PATRONI_ROLE_CHANGE_LOG) -> str:
    """The on_role_change callback's text (pgBackRest reads PGBACKREST_CONFIG when set)."""
    return support.render(
        "hacluster/on-role-change.sh.j2", stanza=defaults.PGBACKREST_STANZA, log=log
    )


def route_servers(db: Sequence[Member], port: int) -> list[tuple[str, str, int]]:
    """(name, address, port) of each db node behind a route, sorted by name."""
    return [(m.name, m.address, port) for m in sorted(db, key=lambda m: m.name)]


# --- backups from a replica (pgBackRest's TLS server and backup-standby) --------------------
# The primary's backup starts and stops on the primary and copies the data files from a
# replica (pgBackRest's `backup-standby`), reached through the pgBackRest TLS server every node
# runs; each node's certificate (the environment's CA) is both its server and client
# certificate, its common name the node's name, which the others' `tls-server-auth` lists.


@dataclass(frozen=True)
class BackupNode:
    """Where one node's PostgreSQL and pgBackRest server are: the deploy's fixed places on
    hosts; the test kit moves them onto its own ports and directories."""

    member: Member
    tls_port: int = defaults.PGBACKREST_TLS_PORT
    pg_port: int = defaults.POSTGRES_PORT
    data_dir: str = layout.POSTGRES_DATA_DIR
    socket_dir: str = layout.SOCKET_DIR


@dataclass(frozen=True)
class BackupTls:
    cert: str = layout.PGBACKREST_TLS_CERT
    key: str = layout.PGBACKREST_TLS_KEY
    ca: str = layout.TLS_CA_FILE


def _others(me: BackupNode, nodes: Sequence[BackupNode]) -> list[BackupNode]:
    names = [n.member.name for n in nodes]
    if me.member.name not in names:
        raise ClusterError(f"{me.member.name} is not one of the cluster's nodes {names}")
    return sorted((n for n in nodes if n.member.name != me.member.name),
                  key=lambda n: n.member.name)  # fmt: skip


def pgbackrest_server_options(
    me: BackupNode, nodes: Sequence[BackupNode], tls: BackupTls = BackupTls()
) -> dict[str, str | list[str]]:
    """[global] options of `me`'s TLS server: on its private address, serving the stanza to
    the other nodes' certificates only (a list value: one line each)."""
    stanza = defaults.PGBACKREST_STANZA
    return {
        "tls-server-address": me.member.address,
        "tls-server-port": str(me.tls_port),
        "tls-server-cert-file": tls.cert,
        "tls-server-key-file": tls.key,
        "tls-server-ca-file": tls.ca,
        "tls-server-auth": [f"{n.member.name}={stanza}" for n in _others(me, nodes)],
    }


def pgbackrest_standby_hosts(
    me: BackupNode, nodes: Sequence[BackupNode], tls: BackupTls = BackupTls()
) -> dict[str, str]:
    """[stanza] options naming the other nodes as pg2, pg3 ... through their TLS servers
    (pg1 is the node itself, in pgbackrest.conf). pgBackRest checks a server's certificate
    against DNS names only, so `pgN-host` is the address the certificate carries as one."""
    options: dict[str, str] = {}
    for index, node in enumerate(_others(me, nodes), start=2):
        pg = f"pg{index}"
        options.update(
            {
                f"{pg}-host": node.member.address,
                f"{pg}-host-type": "tls",
                f"{pg}-host-port": str(node.tls_port),
                f"{pg}-host-ca-file": tls.ca,
                f"{pg}-host-cert-file": tls.cert,
                f"{pg}-host-key-file": tls.key,
                f"{pg}-path": node.data_dir,
                f"{pg}-port": str(node.pg_port),
                f"{pg}-socket-path": node.socket_dir,
            }
        )
    return options


def role_condition(
    role: str, socket_dir: str = layout.SOCKET_DIR, run_as: str | None = None
) -> str:
    """A unit's ExecCondition on a cluster node: exit 0 where Patroni made the node `role`
    ("primary" or "replica"), 1 elsewhere, so systemd skips the run there instead of failing
    it. A server that does not answer passes as "primary" (the run then fails where its alert
    sees it) and not as "replica". `run_as`: the user psql runs as, for a unit run by root."""
    tests = {"primary": "!= t", "replica": "= t"}
    if role not in tests:
        raise ValueError(f"role {role!r} is not one of {sorted(tests)}")
    psql = f'psql -XAtq -h {socket_dir} -d postgres -c "SELECT pg_is_in_recovery()"'
    if run_as:
        psql = f"runuser -u {run_as} -- {psql}"
    return f"/bin/sh -c 'test \"$({psql})\" {tests[role]}'"


def backup_script(
    *,
    socket_dir: str = layout.SOCKET_DIR,
    port: int = defaults.POSTGRES_PORT,
    standby_conf_dir: str = layout.PGBACKREST_STANDBY_CONF_DIR,
    source_file: str = layout.PGBACKREST_BACKUP_SOURCE_FILE,
) -> str:
    """The backup units' command on a cluster node (templates/pgbackrest/backup.sh.j2)."""
    return support.render(
        "pgbackrest/backup.sh.j2",
        stanza=defaults.PGBACKREST_STANZA,
        socket_dir=socket_dir,
        port=port,
        standby_conf_dir=standby_conf_dir,
        source_file=source_file,
        from_replica=defaults.BACKUP_SOURCE_REPLICA,
        from_primary=defaults.BACKUP_SOURCE_PRIMARY,
        fell_back=defaults.BACKUP_SOURCE_FELL_BACK,
    )
