"""A throwaway Patroni cluster on loopback: etcd, Patroni nodes owning PostgreSQL 15, and the
database route (HAProxy), each a real Debian program run as the service user.

The Patroni configuration is the deploy's own (deploys/hacluster.patroni_config), with only
what a shared machine forces changed: every node on 127.0.0.1 with its own ports, data and
socket directories in a scratch directory, and no WAL archiving (no pgBackRest repository
here). The route's HAProxy configuration is the deploy's template, pointed at those ports.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg
import yaml

from app import migrate
from deploys import dbroute, hacluster, postgresql, support, tlsca
from runbooks import cluster
from runbooks.executor import LocalExecutor
from runbooks.services import (
    PatroniNodePostgres,
    PgCtlService,
    ServiceControl,
    alone_settings,
)
from runbooks.target import DbTarget
from sparkops import dbroles, defaults, layout
from sparkops.wait import wait_until
from testkit.localdb import write_pgbackrest_config
from testkit.proc import (
    chown_to_service_user,
    free_port,
    make_workdir,
    popen_as_service_user,
    port_open,
    run_as_service_user,
    service_user,
    stop_process,
    tail_file,
)
from testkit.stack import throwaway_passwords
from testkit.tls import scratch_ca

HOST = "127.0.0.1"
# Short leases so tests fail over in seconds; the deploy's defaults are in hacluster.DEFAULTS.
FAST = {"ha_ttl": 12, "ha_loop_wait": 2, "ha_retry_timeout": 5}
SUPERUSER_PASSWORD = "kit-superuser"
DBNAME = defaults.DATABASE_NAME
SECRETS = {
    hacluster.SECRET_SUPERUSER: SUPERUSER_PASSWORD,
    hacluster.SECRET_REPLICATION: "kit-replication",
    hacluster.SECRET_REWIND: "kit-rewind",
    hacluster.SECRET_RESTAPI: "kit-restapi",
}


@dataclass
class Node:
    name: str
    pg_port: int
    rest_port: int
    workdir: Path
    proc: subprocess.Popen | None = None
    # pgBackRest's TLS server (backup_standby) and its port.
    backup_server: subprocess.Popen | None = None
    backup_port: int = 0

    @property
    def rest(self) -> str:
        return hacluster.rest_url(HOST, self.rest_port)

    @property
    def rest_tls(self) -> hacluster.RestApiTls:
        """The REST API's key pair as the deploy's (deploys/tls.py issues it), and the CA."""
        return hacluster.RestApiTls(
            str(self.workdir / "rest.crt"), str(self.workdir / "rest.key"), str(rest_ca(self))
        )

    def state(self) -> dict:
        with _open(self, f"{self.rest}/patroni", timeout=3) as answer:
            return json.load(answer)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.workdir / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def conninfo(self, dbname: str = "postgres") -> str:
        return (
            f"host={HOST} port={self.pg_port} user=postgres password={SUPERUSER_PASSWORD} "
            f"dbname={dbname} connect_timeout=3"
        )


@dataclass
class HACluster:
    nodes_count: int = 2
    settings: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    workdir: Path | None = None
    etcd_port: int = 0
    etcd_peer_port: int = 0
    # How a node reaches etcd: HOST:port by default; a chaos test puts a fault proxy between
    # each node and etcd (called with the node's name and etcd's address, returns the one
    # the node is configured with).
    etcd_address_for: Callable[[str, str], str] | None = None
    etcd_proc: subprocess.Popen | None = None
    route_proc: subprocess.Popen | None = None
    route_ports: dict[str, int] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    # The app's roles and schema on the cluster (as the deploy makes them), reached by every
    # role through the route: for the app itself on the cluster (app_conninfo).
    app_schema: bool = False
    # WAL archiving from whichever node is primary through pgBackRest, a stanza and a full
    # backup once the cluster is up: "shared" (one posix repository in the kit's directory,
    # as an S3 bucket is between hosts) or "per-node" (each node's own, as a posix
    # repository on each db host); "" none.
    archiving: str = ""
    # Backups copied from a replica as the deploy sets them up: a pgBackRest TLS server per
    # node (certificates from the deploy's CA code), the other nodes named in an include
    # directory, the deploy's backup script (run_backup).
    backup_standby: bool = False
    passwords: dbroles.RolePasswords = field(default_factory=throwaway_passwords)

    # --- start ----------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> HACluster:
        self.workdir = make_workdir("hacluster")
        try:
            self._start_etcd()
            for index in range(self.nodes_count):
                self._add_node(f"n{index + 1}")
            if self.backup_standby:
                self._prepare_backup_servers()
            # The first node bootstraps alone, then the others clone it: as a deploy does.
            self._start_node(self.nodes[0])
            wait_until(lambda: self.leader(), timeout=timeout, what="a leader is elected")
            for node in self.nodes[1:]:
                self._start_node(node)
            wait_until(self._all_streaming, timeout=timeout, what="every replica streams")
            if {**hacluster.DEFAULTS, **self.data}["ha_synchronous_mode"]:
                wait_until(
                    self.sync_standby, timeout=timeout, what="a replica is the synchronous standby"
                )
            self._start_route()
            if self.app_schema:
                self._make_app_schema()
            if self.archiving:
                leader = self.node_target(self.node(self.leader()))
                leader.pgbackrest("stanza-create", timeout=120)
                leader.pgbackrest("backup", "--type=full", timeout=600)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_etcd(self) -> None:
        assert self.workdir is not None
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.start_etcd()

    def start_etcd(self) -> None:
        """Start etcd (again, after stop_etcd: same ports and data, as a member restarting)."""
        assert self.workdir is not None
        peer = self.etcd_peer_port
        log = open(self.workdir / "etcd.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.etcd_proc = popen_as_service_user(
            [
                "etcd",
                "--name=e1",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://{HOST}:{self.etcd_port}",
                f"--advertise-client-urls=http://{HOST}:{self.etcd_port}",
                f"--listen-peer-urls=http://{HOST}:{peer}",
                f"--initial-advertise-peer-urls=http://{HOST}:{peer}",
                f"--initial-cluster=e1=http://{HOST}:{peer}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        wait_until(
            lambda: _http_ok(f"http://{HOST}:{self.etcd_port}/health"),
            timeout=30,
            what="etcd answers healthy",
        )

    def _add_node(self, name: str) -> None:
        assert self.workdir is not None
        workdir = self.workdir / name
        workdir.mkdir(mode=0o700)
        os.chown(workdir, self.workdir.stat().st_uid, self.workdir.stat().st_gid)
        node = Node(name, free_port(), free_port(), workdir)
        self.nodes.append(node)
        self._issue_rest_tls(node)
        if self.archiving:
            assert self.archiving in ("shared", "per-node"), self.archiving
            repo = self.workdir / "repo" if self.archiving == "shared" else workdir / "repo"
            write_pgbackrest_config(
                workdir / "pgbackrest.conf",
                workdir,
                defaults.PGBACKREST_STANZA,
                workdir / "data",
                node.pg_port,
                workdir,
                repo=str(repo),
            )
            script = workdir / "on-role-change.sh"
            script.write_text(hacluster.role_change_script(log=str(workdir / "role-change.log")))
            script.chmod(0o755)

    def _issue_rest_tls(self, node: Node) -> None:
        """The node's REST API certificate from the deploy's CA code, for the names the deploy
        gives a host's (here: loopback); the CA beside, readable by every kit program."""
        assert self.workdir is not None
        with scratch_ca(self.workdir / "ca"):
            issued = tlsca.issue("hakit", f"{node.name}-patroni", dns_names=["localhost"],
                                 ip_addresses=[HOST])  # fmt: skip
        paths = node.rest_tls
        for path, text, mode in ((paths.cert, issued.chain_pem, 0o644),
                                 (paths.key, issued.key_pem, 0o600),
                                 (paths.ca, issued.ca_pem, 0o644)):  # fmt: skip
            Path(path).write_text(text)
            Path(path).chmod(mode)
            chown_to_service_user(Path(path))

    # --- backups copied from a replica ----------------------------------------------------
    def _backup_nodes(self) -> list[hacluster.BackupNode]:
        return [
            hacluster.BackupNode(
                hacluster.Member(n.name, HOST),
                tls_port=n.backup_port,
                pg_port=n.pg_port,
                data_dir=str(n.workdir / "data"),
                socket_dir=str(n.workdir),
            )
            for n in self.nodes
        ]

    def _backup_tls(self, node: Node) -> hacluster.BackupTls:
        tls = node.workdir / "tls"
        return hacluster.BackupTls(
            str(tls / "node.crt"), str(tls / "node.key"), str(tls / "ca.crt")
        )

    def _prepare_backup_servers(self) -> None:
        assert self.workdir is not None and self.archiving, "backup_standby needs archiving"
        for node in self.nodes:
            node.backup_port = free_port()
        nodes = self._backup_nodes()
        with scratch_ca(self.workdir / "ca"):
            for node, me in zip(self.nodes, nodes, strict=True):
                # As deploys/tls.py issues it: the node's name first (the common name the
                # others authorise), its address also as a DNS name.
                issued = tlsca.issue("hakit", f"{node.name}-pgbackrest",
                                     dns_names=[node.name, HOST], ip_addresses=[HOST],
                                     client=True)  # fmt: skip
                paths = self._backup_tls(node)
                (node.workdir / "tls").mkdir(mode=0o700)
                chown_to_service_user(node.workdir / "tls")
                for path, text in ((paths.cert, issued.chain_pem), (paths.key, issued.key_pem),
                                   (paths.ca, issued.ca_pem)):  # fmt: skip
                    Path(path).write_text(text)
                    Path(path).chmod(0o600)
                    chown_to_service_user(Path(path))
                conf = node.workdir / "pgbackrest.conf"
                server = hacluster.pgbackrest_server_options(me, nodes, paths)
                lines = [f"{k}={v}" for k, vs in server.items()
                         for v in ([vs] if isinstance(vs, str) else vs)]  # fmt: skip
                conf.write_text(
                    conf.read_text().replace(
                        "[global]\n", "[global]\n" + "\n".join(lines) + "\n", 1
                    )
                )
                standby = node.workdir / "standby.d"
                standby.mkdir(mode=0o700)
                chown_to_service_user(standby)
                (standby / "cluster.conf").write_text(
                    support.render(
                        "pgbackrest/pgbackrest.conf.j2",
                        stanza=defaults.PGBACKREST_STANZA,
                        global_options={},
                        stanza_options=hacluster.pgbackrest_standby_hosts(me, nodes, paths),
                    )
                )
                script = node.workdir / "pgbackrest-backup"
                script.write_text(
                    hacluster.backup_script(
                        socket_dir=str(node.workdir),
                        port=node.pg_port,
                        standby_conf_dir=str(standby),
                        source_file=str(self.backup_source_file(node)),
                    )
                )
                script.chmod(0o755)
                self.start_backup_server(node)

    @staticmethod
    def backup_source_file(node: Node) -> Path:
        """Where the node's backup script records its last backup's source."""
        return node.workdir / "last-backup-source"

    def start_backup_server(self, node: Node) -> None:
        """`pgbackrest server` for `node` (again, after stop_backup_server)."""
        log = open(node.workdir / "pgbackrest-server.log", "ab")  # noqa: SIM115 (the child keeps it)
        node.backup_server = popen_as_service_user(
            ["pgbackrest", f"--config={node.workdir / 'pgbackrest.conf'}", "server"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: port_open(HOST, node.backup_port), timeout=30,
                   what=f"{node.name}'s pgBackRest server listens")  # fmt: skip

    def stop_backup_server(self, node: Node) -> None:
        if node.backup_server is not None:
            stop_process(node.backup_server)
            node.backup_server = None

    def run_backup(self, node: Node, kind: str, **env: str) -> subprocess.CompletedProcess:
        """The deploy's backup script on `node`, as the backup unit runs it (`env`: more
        of pgBackRest's options as PGBACKREST_* variables)."""
        return run_as_service_user(
            [str(node.workdir / "pgbackrest-backup"), kind],
            env={**os.environ, "PGBACKREST_CONFIG": str(node.workdir / "pgbackrest.conf"),
                 "PGBACKREST_LOG_LEVEL_CONSOLE": "info", **env},
            check=False,
            timeout=300,
        )  # fmt: skip

    def config(self, node: Node) -> dict:
        """The deploy's Patroni configuration for `node`, moved onto this machine's ports."""
        members = [hacluster.Member(n.name, HOST) for n in self.nodes]
        settings = postgresql.derived_settings(HOST, {})
        # No host certificates here: no TLS; archiving only when asked for.
        settings.update({"archive_mode": bool(self.archiving), "ssl": False}, **self.settings)
        for name in ("archive_command", "ssl_cert_file", "ssl_key_file"):
            settings.pop(name, None)
        rules = [
            {"type": "local", "database": "all", "user": "postgres", "method": "peer"},
            {
                "type": "host",
                "database": "all",
                "user": "all" if self.app_schema else "postgres",
                "address": f"{HOST}/32",
                "method": "scram-sha-256",
            },
        ]
        data = {**hacluster.DEFAULTS, **FAST, **self.data}
        config = hacluster.patroni_config(
            hacluster.Member(node.name, HOST),
            members,
            [hacluster.Member("e1", HOST)],
            settings=settings,
            hba_rules=rules,
            data=data,
            secret=SECRETS.__getitem__,
            rest_tls=node.rest_tls,
        )
        # hacluster.check_topology wants an odd etcd; one member is odd, and enough here.
        etcd = f"{HOST}:{self.etcd_port}"
        if self.etcd_address_for is not None:
            etcd = self.etcd_address_for(node.name, etcd)
        config["etcd3"] = {"hosts": [etcd]}
        if self.etcd_address_for is not None:
            # Else Patroni discovers etcd's advertised address and goes round the proxy.
            config["etcd3"]["use_proxies"] = True
        config["restapi"]["listen"] = config["restapi"]["connect_address"] = (
            f"{HOST}:{node.rest_port}"
        )
        pg = config["postgresql"]
        pg["listen"] = pg["connect_address"] = f"{HOST}:{node.pg_port}"
        pg["data_dir"] = str(node.workdir / "data")
        pg["pgpass"] = str(node.workdir / "pgpass")
        pg["parameters"]["unix_socket_directories"] = str(node.workdir)
        if self.archiving:  # each node pushes with its own configuration (its data, spool)
            pg["parameters"]["archive_command"] = self._archive_command(node)
            pg["callbacks"] = {"on_role_change": str(node.workdir / "on-role-change.sh")}
        else:
            pg.pop("callbacks", None)
        # Without TLS here, the deploy's hostssl lines would match no connection.
        pg["pg_hba"] = [re.sub(r"^hostssl ", "host ", line) for line in pg["pg_hba"]]
        config["bootstrap"]["pg_hba"] = pg["pg_hba"]
        return config

    def _start_node(self, node: Node) -> None:
        path = node.workdir / "patroni.yml"
        path.write_text(yaml.safe_dump(self.config(node)))
        path.chmod(0o600)
        os.chown(path, node.workdir.stat().st_uid, node.workdir.stat().st_gid)
        log = open(node.workdir / "patroni.log", "ab")  # noqa: SIM115 (the child keeps it)
        # pgBackRest reads its configuration's path from the environment: the role-change
        # callback Patroni runs inherits it (on a host it is pgBackRest's default path).
        env = {
            **os.environ,
            "PGBACKREST_CONFIG": str(node.workdir / "pgbackrest.conf"),
            # For the callback's psql (on a host: the default socket and port).
            "PGHOST": str(node.workdir),
            "PGPORT": str(node.pg_port),
        }
        node.proc = popen_as_service_user(
            ["patroni", str(path)], stdout=log, stderr=subprocess.STDOUT, cwd=node.workdir, env=env
        )

    def _start_route(self) -> None:
        assert self.workdir is not None
        self.route_ports = {"primary": free_port(), "replicas": free_port()}
        members = [hacluster.Member(n.name, HOST) for n in self.nodes]
        by_name = {n.name: n for n in self.nodes}
        routes = []
        for route in dbroute.routes(members):
            if route.name not in self.route_ports:
                continue
            servers = tuple(
                replace(s, port=by_name[s.name].pg_port, check_port=by_name[s.name].rest_port)
                for s in route.servers
            )
            routes.append(replace(route, port=self.route_ports[route.name], servers=servers))
        cfg = self.workdir / "db-route.cfg"
        text = dbroute.config_text(
            routes,
            admin_socket=str(self.workdir / "route.sock"),
            bind=HOST,
            ca_file=str(rest_ca(self.nodes[0])),
        )
        cfg.write_text(text)
        log = open(self.workdir / "route.log", "ab")  # noqa: SIM115 (the child keeps it)
        # In its own directory: HAProxy goes back to the directory it started in after reading
        # its configuration, and the caller's (a checkout in a 0700 directory) may be closed to
        # the service user.
        self.route_proc = popen_as_service_user(
            ["haproxy", "-db", "-f", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        # HAProxy takes every server as up until its checks say otherwise: wait for them.
        wait_until(self.route_settled, timeout=30, what="the route's checks agree with Patroni")

    def _make_app_schema(self) -> None:
        """Roles, database and privileges as the deploy makes them (sparkops.dbroles), on the
        primary through the route; then the app's migrations as their owner."""
        with psycopg.connect(self.route_conninfo(), autocommit=True) as conn:
            for stmt in dbroles.role_statements(self.passwords):
                conn.execute(stmt)
            for stmt in dbroles.role_setting_statements():
                conn.execute(stmt)
            if not conn.execute(dbroles.database_exists_sql(DBNAME)).fetchone():
                conn.execute(dbroles.create_database_sql(DBNAME))
        with psycopg.connect(self.route_conninfo(dbname=DBNAME), autocommit=True) as conn:
            for stmt in dbroles.privilege_statements(DBNAME):
                conn.execute(stmt)
        migrate.upgrade(
            self._role_conninfo(defaults.ROLE_MIGRATIONS, self.passwords.migrations), "head"
        )

    def _role_conninfo(self, user: str, password: str) -> str:
        return (
            f"host={HOST} port={self.route_ports['primary']} user={user} password={password} "
            f"dbname={DBNAME} connect_timeout=3"
        )

    def app_conninfo(self) -> str:
        """The app role through the route, as the app on an app host connects."""
        return self._role_conninfo(defaults.ROLE_APP, self.passwords.app)

    def _archive_command(self, node: Node) -> str:
        conf = node.workdir / "pgbackrest.conf"
        return f"pgbackrest --config={conf} --stanza={defaults.PGBACKREST_STANZA} archive-push %p"

    def node_target(self, node: Node) -> DbTarget:
        """A node's PostgreSQL as a cluster restore sees it (runbooks/cluster_restore.py)."""
        executor = LocalExecutor()
        user = service_user() or "postgres"
        data = str(node.workdir / "data")
        # On hosts every node has the same port, socket and archive_command; here each has
        # its own, which the backup's postgresql.conf (another node's) does not know.
        options = {
            **alone_settings(data),
            "port": str(node.pg_port),
            "unix_socket_directories": str(node.workdir),
            "archive_command": self._archive_command(node),
        }
        alone = PgCtlService(
            executor, data, str(node.workdir / "alone.log"), options=options, user=user
        )
        return DbTarget(
            executor=executor,
            data_dir=str(node.workdir / "data"),
            service=PatroniNodePostgres(KitPatroni(self, node), alone),
            socket_dir=str(node.workdir),
            port=node.pg_port,
            os_user=user,
            pgbackrest_config=str(node.workdir / "pgbackrest.conf"),
            label=node.name,
        )

    def runbook_cluster(self) -> cluster.Cluster:
        """The kit as the cluster runbooks see it, Patroni and PostgreSQL controllable."""
        return cluster.Cluster(
            [
                cluster.Node(
                    n.name,
                    LocalExecutor(),
                    config=str(n.workdir / "patroni.yml"),
                    os_user=service_user() or "",
                    db=self.node_target(n),
                    patroni=KitPatroni(self, n),
                )
                for n in self.nodes
            ],
            label="kit",
        )

    def target_file(self, path: Path) -> Path:
        """The cluster as `sparkops cluster --target-file` reads it (runbooks.sites)."""
        path.write_text(
            json.dumps(
                {
                    "label": "kit",
                    "nodes": [
                        {
                            "name": n.name,
                            "config": str(n.workdir / "patroni.yml"),
                            "os_user": service_user() or "",
                        }
                        for n in self.nodes
                    ],
                }
            )
        )
        return path

    def route_status(self) -> dict[tuple[str, str], str]:
        """{(route, node): "UP" | "DOWN" | ...} from HAProxy's runtime API (`show stat`)."""
        assert self.workdir is not None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(3)
            sock.connect(str(self.workdir / "route.sock"))
            sock.sendall(b"show stat\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        lines = b"".join(chunks).decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        status = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("svname") not in (None, "FRONTEND", "BACKEND"):
                status[(row["pxname"], row["svname"])] = row["status"]
        return status

    def route_settled(self) -> bool:
        leader = self.leader()
        if leader is None:
            return False
        status = self.route_status()
        for (route, node), state in status.items():
            wanted = (node == leader) == (route == "primary")
            if wanted != (state == "UP"):
                return False
        return True

    # --- state ----------------------------------------------------------------------------
    def leader(self) -> str | None:
        for node in self.nodes:
            try:
                state = node.state()
            except OSError:
                continue
            if state.get("role") in ("master", "primary") and state.get("state") == "running":
                return node.name
        return None

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def _all_streaming(self) -> bool:
        leader = self.leader()
        replicas = [n for n in self.nodes if n.name != leader]
        return bool(leader) and all(
            n.proc is not None
            and n.state().get("state") == "running"
            and n.state().get("replication_state", "streaming") == "streaming"
            for n in replicas
        )

    def sync_standby(self) -> str | None:
        members = self.cluster().get("members", [])
        return next((m["name"] for m in members if m.get("role") == "sync_standby"), None)

    def route_conninfo(self, route: str = "primary", dbname: str = "postgres") -> str:
        return (
            f"host={HOST} port={self.route_ports[route]} user=postgres "
            f"password={SUPERUSER_PASSWORD} dbname={dbname} connect_timeout=3"
        )

    def route_target(self, route: str = "primary") -> str | None:
        """Which node a new connection through the route reaches (by its port), or None."""
        try:
            with psycopg.connect(self.route_conninfo(route), autocommit=True) as conn:
                port = conn.execute("SHOW port").fetchone()[0]
        except psycopg.Error:
            return None
        return next((n.name for n in self.nodes if str(n.pg_port) == str(port)), None)

    def cluster(self) -> dict:
        """Patroni's /cluster view from any node that answers."""
        for node in self.nodes:
            try:
                with _open(node, f"{node.rest}/cluster", timeout=3) as answer:
                    return json.load(answer)
            except OSError:
                continue
        return {}

    def switchover(self, candidate: str) -> None:
        """Planned switchover through Patroni's REST API (authenticated, as patronictl does)."""
        leader = self.leader()
        body = json.dumps({"leader": leader, "candidate": candidate}).encode()
        request = urllib.request.Request(
            f"{self.node(leader).rest}/switchover", data=body, method="POST"
        )
        with _open(self.node(leader), self._authorized(request), timeout=60) as answer:
            if answer.status != 200:
                raise RuntimeError(f"switchover refused: {answer.status} {answer.read()!r}")

    def _authorized(self, request: urllib.request.Request) -> urllib.request.Request:
        auth = f"{hacluster.PATRONI_RESTAPI_USER}:{SECRETS[hacluster.SECRET_RESTAPI]}"
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        request.add_header("Content-Type", "application/json")
        return request

    def set_synchronous(self, on: bool, timeout: float = 60.0) -> None:
        """Patroni's synchronous_mode on or off for the running cluster (PATCH /config, as
        `patronictl edit-config` does), waiting until the cluster reflects it."""
        body = json.dumps({"synchronous_mode": on}).encode()
        node = self.node(self.leader())
        request = urllib.request.Request(f"{node.rest}/config", data=body, method="PATCH")
        with _open(node, self._authorized(request), timeout=30):
            pass
        wait_until(
            lambda: (self.sync_standby() is not None) == on,
            timeout=timeout,
            what=f"synchronous mode {'on' if on else 'off'}",
        )

    # --- faults ---
    def stop_etcd(self) -> None:
        """etcd gone: the cluster's only member, so its quorum is lost."""
        if self.etcd_proc is not None:
            stop_process(self.etcd_proc)
            self.etcd_proc = None

    def primaries(self) -> list[str]:
        """Nodes whose REST API answers 200 to /primary right now (a split brain is two)."""
        found = []
        for node in self.nodes:
            try:
                if _http_ok(f"{node.rest}/primary", node):
                    found.append(node.name)
            except OSError:
                continue
        return found

    def kill_node(self, name: str) -> None:
        """The node's host dies: Patroni and its PostgreSQL killed at once (SIGKILL), no
        leader key released."""
        node = self.node(name)
        pg = node.postmaster_pid()
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait(timeout=10)
        if pg:
            try:
                os.killpg(os.getpgid(pg), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def log_tail(self, name: str) -> str:
        return tail_file(self.node(name).workdir, "patroni.log")

    # --- stop -----------------------------------------------------------------------------
    def stop(self) -> None:
        if self.route_proc is not None:
            stop_process(self.route_proc)
        for node in self.nodes:
            self.stop_backup_server(node)
        for node in self.nodes:
            if node.proc is not None:
                # The kit's data goes with its directory: no need to wait for a clean stop. A
                # primary whose synchronous standby is gone kept Patroni stopping for 30 s.
                stop_process(node.proc, timeout=5)
            pg = node.postmaster_pid()
            if pg and _alive(pg):
                subprocess.run(
                    [
                        f"{layout.POSTGRES_BINDIR}/pg_ctl",
                        "-D",
                        str(node.workdir / "data"),
                        "stop",
                        "-m",
                        "immediate",
                    ],
                    capture_output=True,
                    check=False,
                    user=node.workdir.stat().st_uid if os.geteuid() == 0 else None,
                )
        if self.etcd_proc is not None:
            stop_process(self.etcd_proc)
        if self.workdir is not None:
            subprocess.run(["rm", "-rf", str(self.workdir)], check=False)

    def __enter__(self) -> HACluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class KitPatroni(ServiceControl):
    """A kit node's Patroni as a service a runbook starts and stops (systemd's patroni.service
    on a host)."""

    kit: HACluster
    node: Node
    description: str = "the kit's Patroni"

    def start(self) -> None:
        if not self.is_active():
            self.kit._start_node(self.node)

    def stop(self) -> None:
        if self.node.proc is not None:
            stop_process(self.node.proc, timeout=60)  # SIGTERM: Patroni stops PostgreSQL
            self.node.proc = None

    def is_active(self) -> bool:
        return self.node.proc is not None and self.node.proc.poll() is None

    def start_command(self) -> str:
        return f"patroni {self.node.workdir / 'patroni.yml'}"

    def stop_command(self) -> str:
        return f"kill -TERM {self.node.proc.pid if self.node.proc else '<pid>'}"


def rest_ca(node: Node) -> Path:
    """The CA the REST API's certificates come from (one for the kit's cluster)."""
    return node.workdir.parent / "rest-ca.crt"


def _open(node: Node, url: str | urllib.request.Request, timeout: float):
    """A request to `node`'s REST API, its certificate verified as patronictl does."""
    context = ssl.create_default_context(cafile=str(rest_ca(node)))
    return urllib.request.urlopen(url, timeout=timeout, context=context)


def _http_ok(url: str, node: Node | None = None) -> bool:
    """200 from `url`: plain HTTP (etcd), or `node`'s REST API over HTTPS."""
    if node is not None:
        with _open(node, url, timeout=2) as answer:
            return answer.status == 200
    with urllib.request.urlopen(url, timeout=2) as answer:
        return answer.status == 200


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Writer:
    """Inserts numbered rows through the route, a new connection each (as a pooled client
    reconnects), and records which were acknowledged and which failed."""

    def __init__(self, conninfo: str, limit: float = 120.0) -> None:
        self.conninfo = conninfo
        self.limit = limit
        self.acked: list[int] = []
        self.acked_at: list[float] = []  # time.monotonic() of each acknowledgement
        self.failed: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    _ids = itertools.count(1)  # unique across writers: the module shares one table

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit  # bounded, whatever the caller does
        while not self._stop.is_set() and time.monotonic() < deadline:
            n = next(self._ids)
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    conn.execute("INSERT INTO acks (id) VALUES (%s)", (n,))
                self.acked.append(n)
                self.acked_at.append(time.monotonic())
            except psycopg.Error:
                self.failed.append((n, time.monotonic()))
                self._stop.wait(0.05)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def acked_since(self, count: int) -> bool:
        return len(self.acked) > count
