"""The cluster's shape from the inventory (deploys/hacluster.py), checked by the real programs
that read it: Patroni's own validator, HAProxy's config check."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from deploys import dbroute, hacluster, postgresql, support
from sparkops import defaults, layout
from sparkops.localhost import free_port
from testkit.tls import make_tls_files

DB = [hacluster.Member("db2", "10.9.0.11"), hacluster.Member("db", "10.9.0.10")]
ETCD = [
    hacluster.Member("db", "10.9.0.10"),
    hacluster.Member("db2", "10.9.0.11"),
    hacluster.Member("monitor", "10.9.0.12"),
]
SECRETS = {
    name: f"secret-{name}"
    for name in (
        hacluster.SECRET_SUPERUSER,
        hacluster.SECRET_REPLICATION,
        hacluster.SECRET_REWIND,
        hacluster.SECRET_RESTAPI,
    )
}
APP_RULES = [
    {"type": "local", "database": "all", "user": "postgres", "method": "peer"},
    {
        "type": "hostssl",
        "database": "spark",
        "user": "spark_app",
        "address": "127.0.0.1/32",
        "method": "scram-sha-256",
    },
]


def _config(member=DB[1], **data) -> dict:
    return hacluster.patroni_config(
        member,
        DB,
        ETCD,
        settings=postgresql.derived_settings(member.address, {"max_connections": 300}),
        hba_rules=APP_RULES,
        data={**hacluster.DEFAULTS, **data},
        secret=SECRETS.__getitem__,
    )


@pytest.mark.parametrize(
    ("db", "etcd", "message"),
    [
        (DB[:1], ETCD, "at least 2 db hosts"),
        (DB, ETCD[:2], "odd number"),
        ([*DB, hacluster.Member("db", "10.9.0.99")], ETCD, "names a host twice"),
    ],
)
def test_shapes_that_cannot_fail_over_or_keep_a_quorum_are_refused(db, etcd, message):
    with pytest.raises(hacluster.ClusterError, match=message):
        hacluster.check_topology(db, etcd)


def test_a_cluster_is_asked_for_by_an_etcd_group_only():
    assert hacluster.is_cluster({"db", "app", "etcd"})
    assert not hacluster.is_cluster({"db", "app", "monitor"})


def test_etcd_members_know_each_other_and_listen_on_loopback_too():
    env = hacluster.etcd_environment(ETCD[1], ETCD, token="spark-lab")
    assert env["ETCD_NAME"] == "db2"
    assert env["ETCD_INITIAL_CLUSTER"] == (
        "db=http://10.9.0.10:2380,db2=http://10.9.0.11:2380,monitor=http://10.9.0.12:2380"
    )
    assert env["ETCD_LISTEN_CLIENT_URLS"] == "http://10.9.0.11:2379,http://127.0.0.1:2379"
    assert env["ETCD_DATA_DIR"] == layout.ETCD_DATA_DIR
    assert env["ETCD_ENABLE_V2"] == "false"


def test_the_deploys_settings_pass_through_patroni():
    config = _config()
    dcs = config["bootstrap"]["dcs"]
    params = dcs["postgresql"]["parameters"]
    # Archiving to pgBackRest and the group data's values, as on a single host.
    assert params["archive_command"].startswith("pgbackrest ")
    assert params["archive_mode"] == "on"
    assert params["max_connections"] == 300
    # Patroni owns these: given twice they would disagree.
    assert "listen_addresses" not in params and "port" not in params
    assert params["wal_log_hints"] == "on"
    assert params["ssl"] == "on" and params["ssl_cert_file"] == layout.POSTGRES_TLS_CERT
    assert dcs["synchronous_mode"] is True
    assert dcs["ttl"] == defaults.PATRONI_TTL_SECONDS
    assert config["postgresql"]["listen"] == "127.0.0.1,10.9.0.10:5432"
    assert config["postgresql"]["data_dir"] == layout.POSTGRES_DATA_DIR
    assert config["etcd3"]["hosts"] == ["10.9.0.10:2379", "10.9.0.11:2379", "10.9.0.12:2379"]
    assert _config(ha_synchronous_mode=False)["bootstrap"]["dcs"]["synchronous_mode"] is False


def test_the_rest_api_is_https_and_patronictl_verifies_it():
    config = _config()
    restapi, ctl = config["restapi"], config["ctl"]
    assert (restapi["certfile"], restapi["keyfile"]) == (
        layout.PATRONI_TLS_CERT,
        layout.PATRONI_TLS_KEY,
    )
    assert restapi["authentication"]["username"] == hacluster.PATRONI_RESTAPI_USER
    assert ctl["cacert"] == layout.TLS_CA_FILE and ctl["insecure"] is False
    assert hacluster.rest_url("10.9.0.10") == f"https://10.9.0.10:{defaults.PATRONI_REST_PORT}"


def test_pg_hba_keeps_the_app_rules_and_adds_replication_between_the_nodes_and_loopback():
    lines = _config()["postgresql"]["pg_hba"]
    assert lines[:2] == [
        "local all postgres peer",
        "hostssl spark spark_app 127.0.0.1/32 scram-sha-256",
    ]
    replication = [line for line in lines if " replication " in line]
    # Loopback: Patroni reads a replica's timeline from its own node (found on the lab: the
    # replica's /metrics said "None" and Prometheus marked it down).
    assert replication == [
        "hostssl replication replicator 10.9.0.10/32 scram-sha-256",
        "hostssl replication replicator 10.9.0.11/32 scram-sha-256",
        "hostssl replication replicator 127.0.0.1/32 scram-sha-256",
    ]
    assert all(line.endswith(("scram-sha-256", "peer")) for line in lines)


def test_patroni_accepts_the_configuration(tmp_path):
    path = tmp_path / "config.yml"
    config = _config()
    # The validator binds the addresses and checks the paths: point them at this machine's.
    config["postgresql"]["data_dir"] = str(tmp_path / "data")
    config["postgresql"]["pgpass"] = str(tmp_path / "pgpass")
    config["restapi"]["listen"] = f"127.0.0.1:{free_port()}"
    config["postgresql"]["listen"] = f"127.0.0.1:{free_port()}"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        ["patroni", "--validate-config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    config["bootstrap"]["dcs"]["ttl"] = "soon"
    path.write_text(yaml.safe_dump(config))
    refused = subprocess.run(
        ["patroni", "--validate-config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0


def test_the_route_sends_writes_to_the_primary_pgbouncer_and_haproxy_accepts_it(tmp_path):
    routes = {r.name: r for r in dbroute.routes(DB)}
    primary = routes["primary"]
    assert primary.port == defaults.DB_ROUTE_PRIMARY_PORT and primary.check == "/primary"
    assert [(s.name, s.port, s.check_port) for s in primary.servers] == [
        ("db", defaults.PGBOUNCER_PORT, defaults.PATRONI_REST_PORT),
        ("db2", defaults.PGBOUNCER_PORT, defaults.PATRONI_REST_PORT),
    ]
    assert routes["migrations"].servers[0].port == defaults.POSTGRES_PORT
    assert routes["replicas"].check == "/replica"
    text = dbroute.config_text(list(routes.values()), admin_socket=str(tmp_path / "admin.sock"))
    assert "bind 0.0.0.0" not in text and "bind 127.0.0.1:5000" in text
    assert "on-marked-down shutdown-sessions" in text
    # The checks speak HTTPS to Patroni and verify it against the environment's CA.
    servers = [line for line in text.splitlines() if line.strip().startswith("server ")]
    check = f"check-ssl verify required ca-file {layout.TLS_CA_FILE}"
    assert len(servers) == 6 and all(check in line for line in servers)
    # haproxy -c opens the CA file: a real one, here.
    text = text.replace(layout.TLS_CA_FILE, str(make_tls_files().ca))
    path = tmp_path / "route.cfg"
    path.write_text(text)
    done = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _backup_nodes(*names: str) -> list[hacluster.BackupNode]:
    return [
        hacluster.BackupNode(hacluster.Member(name, f"10.0.0.{i}"))
        for i, name in enumerate(names, start=1)
    ]


def test_each_node_serves_pgbackrest_to_the_other_nodes_only():
    nodes = _backup_nodes("db", "db2", "db3")
    server = hacluster.pgbackrest_server_options(nodes[1], nodes)
    assert server["tls-server-address"] == "10.0.0.2"  # its private address, not every one
    assert server["tls-server-port"] == str(defaults.PGBACKREST_TLS_PORT)
    assert server["tls-server-auth"] == ["db=spark", "db3=spark"]
    assert server["tls-server-ca-file"] == layout.TLS_CA_FILE
    # A list value is one line each in pgbackrest.conf (pgBackRest's repeated option).
    text = support.render("pgbackrest/pgbackrest.conf.j2", stanza="spark",
                          global_options=server, stanza_options={})  # fmt: skip
    assert "tls-server-auth=db=spark\ntls-server-auth=db3=spark\n" in text


def test_the_other_nodes_are_pgbackrest_hosts_through_their_tls_servers():
    nodes = _backup_nodes("db", "db2", "db3")
    hosts = hacluster.pgbackrest_standby_hosts(nodes[0], nodes)
    assert hosts["pg2-host"] == "10.0.0.2" and hosts["pg3-host"] == "10.0.0.3"
    assert "pg1-host" not in hosts and "pg4-host" not in hosts  # pg1 is the node itself
    for pg in ("pg2", "pg3"):
        assert hosts[f"{pg}-host-type"] == "tls"
        assert hosts[f"{pg}-host-cert-file"] == layout.PGBACKREST_TLS_CERT
        assert hosts[f"{pg}-path"] == layout.POSTGRES_DATA_DIR
    with pytest.raises(hacluster.ClusterError, match="not one of the cluster's nodes"):
        hacluster.pgbackrest_standby_hosts(_backup_nodes("elsewhere")[0], nodes)


def test_the_backup_script_refuses_an_unknown_type(tmp_path):
    script = tmp_path / "backup"
    script.write_text(hacluster.backup_script())
    done = subprocess.run(["sh", str(script), "weekly"], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 2 and "not full, diff or incr" in done.stderr
