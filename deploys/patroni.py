"""PostgreSQL 15 under Patroni on every db host of a cluster inventory (one with an etcd group).

Patroni (Debian's package) owns the cluster: it runs initdb on the first node to take the
leader key, clones the others with pg_basebackup, writes postgresql.conf and pg_hba.conf
from its configuration, and promotes a replica when the primary is gone. Our settings (WAL
archiving to pgBackRest, logging, SCRAM rules) come from the single-host deploy's functions
(deploys/postgresql.py) and pass through Patroni's configuration, so the rest of the
platform sees the same database. The app's roles and database are made on the primary only;
a replica receives them by replication.
"""

from __future__ import annotations

import yaml
from pyinfra import host, inventory
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.facts.server import Command
from pyinfra.operations import apt, files, server, systemd

from deploys import hacluster, postgresql, support, tls
from deploys.facts import PostgresInRecovery
from sparkops import defaults, layout, secrets

VERSION = defaults.POSTGRES_VERSION
# Seconds a deploy waits for this node to run (leader elected, or replica streaming).
NODE_READY_TIMEOUT_SECONDS = 300


def members(group: str) -> list[hacluster.Member]:
    return [hacluster.Member(h.name, support.address(h)) for h in inventory.get_group(group, [])]


def config_text(host_) -> str:
    """config.yml for `host_` (tests render it without a host connection)."""
    creds = secrets.load(support.environment(host_))
    data = {key: host_.data.get(key) for key in {**postgresql.DEFAULTS, **hacluster.DEFAULTS}}
    member = hacluster.Member(host_.name, support.address(host_))
    body = hacluster.patroni_config(
        member,
        members(hacluster.DB_GROUP),
        members(hacluster.ETCD_GROUP),
        settings=postgresql.derived_settings(member.address, data["postgresql_settings"]),
        hba_rules=postgresql.hba_rules(data["postgresql_hba_rules"], inventory),
        data=data,
        secret=lambda name: creds[name],
    )
    return support.render(
        "hacluster/patroni.yml.j2", body=yaml.safe_dump(body, sort_keys=True, width=1000)
    )


_PROBE = (
    "import json, ssl, sys, urllib.request\n"
    "tls = ssl.create_default_context(cafile='{ca}')\n"
    "try:\n"
    "    with urllib.request.urlopen('{url}/patroni', timeout=3, context=tls) as r:\n"
    "        state = json.load(r)\n"
    "except Exception:\n"
    "    sys.exit(1)\n"
    "role, running = state.get('role'), state.get('state') == 'running'\n"
    "ok = running and (role in ('master', 'primary') or\n"
    "    state.get('replication_state', 'streaming') == 'streaming')\n"
    "sys.exit(0 if ok else 1)\n"
)


@operation(is_idempotent=False)
def node_ready(address: str, timeout: int = NODE_READY_TIMEOUT_SECONDS):
    """Wait (bounded) until Patroni says this node runs: the primary, or a streaming replica.
    A cloning replica can take minutes on a large database; the timeout says so."""
    probe = _PROBE.format(url=hacluster.rest_url(address), ca=hacluster.RestApiTls().ca)
    ran = host.get_fact(Command, f"python3 -c {_shell_quote(probe)} && echo running || true")
    if (ran or "").strip() == "running":
        host.noop("Patroni runs this node")
        return
    yield StringCommand(
        f"deadline=$(( $(date +%s) + {int(timeout)} )); "
        f"until python3 -c {_shell_quote(probe)}; do "
        '[ "$(date +%s)" -ge "$deadline" ] && { '
        f"echo 'Patroni on this node is not running after {int(timeout)} s: "
        f"journalctl -u {layout.PATRONI_SERVICE}' >&2; exit 1; }}; sleep 1; done"
    )


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


@operation()
def on_primary(op, **kwargs):
    """Run `op` (an operation of deploys/postgresql.py) only where PostgreSQL accepts writes;
    on a replica it would fail, and replication brings the result anyway."""
    in_recovery = host.get_fact(PostgresInRecovery)
    if in_recovery is None:
        raise RuntimeError(
            "PostgreSQL does not answer on this node after Patroni reported it running: "
            f"see journalctl -u {layout.PATRONI_SERVICE}"
        )
    if in_recovery:
        host.noop("a replica: the primary does this, replication brings it here")
        return
    yield from op._inner(**kwargs)


@deploy("PostgreSQL under Patroni", data_defaults={**postgresql.DEFAULTS, **hacluster.DEFAULTS})
def patroni() -> dict:
    """Returns {"role_settings": [op]} like deploys.postgresql.postgresql()."""
    hacluster.check_topology(members(hacluster.DB_GROUP), members(hacluster.ETCD_GROUP))
    files.put(
        name="Keep Debian from creating its own cluster (Patroni makes it)",
        src=support.rendered("postgresql/createcluster.conf.j2", create_main_cluster=False),
        dest="/etc/postgresql-common/createcluster.conf",
        mode="644",
    )
    apt.packages(
        name=f"Install PostgreSQL {VERSION} and Patroni",
        # python3-idna: urllib3 needs it to verify a certificate (patronictl asking the REST
        # API over HTTPS); Debian has it only as a Recommends, which deploys leave out.
        packages=[*host.data.postgresql_packages, "patroni", "python3-etcd", "python3-idna"],
        no_recommends=True,
    )
    key_pair = tls.key_pair(
        "postgresql",
        layout.POSTGRES_TLS_CERT,
        layout.POSTGRES_TLS_KEY,
        owner="postgres",
        what="PostgreSQL",
    )
    rest_tls = hacluster.RestApiTls()
    rest_key_pair = tls.key_pair(
        "patroni", rest_tls.cert, rest_tls.key, owner="postgres", what="Patroni's REST API"
    )
    files.put(
        name="Install Patroni's role-change callback (a new primary's pgBackRest stanza)",
        src=support.rendered_text(hacluster.role_change_script()),
        dest=layout.PATRONI_ROLE_CHANGE_SCRIPT,
        mode="755",
    )
    config = files.put(
        name="Configure Patroni",
        src=support.rendered_text(config_text(host)),
        dest=layout.PATRONI_CONFIG,
        user="postgres",
        group="postgres",
        mode="600",
    )
    started = systemd.service(
        name="Ensure Patroni is running and enabled",
        service=layout.PATRONI_SERVICE,
        running=True,
        enabled=True,
    )
    # Patroni rereads its file on reload (and its REST API's certificate, when it changed);
    # settings under bootstrap.dcs only apply at the cluster's first start (later:
    # patronictl edit-config, docs/ha.md).
    systemd.service(
        name="Reload Patroni for its changed configuration",
        service=layout.PATRONI_SERVICE,
        reloaded=True,
        # Not right after starting it: a SIGHUP before Patroni has set its handlers kills it.
        _if=lambda: (
            (config.did_change() or any(op.did_change() for op in rest_key_pair))
            and not started.did_change()
        ),
    )
    node_ready(
        name="Wait until this node runs (primary, or replica streaming)",
        address=support.address(host),
    )
    server.shell(
        name="Reload PostgreSQL for its changed TLS key pair",
        commands=["runuser -u postgres -- psql -XAtq -d postgres -c 'SELECT pg_reload_conf()'"],
        _if=lambda: any(op.did_change() for op in key_pair) and not started.did_change(),
    )
    on_primary(
        name="Ensure the app's roles and passwords (on the primary)",
        op=postgresql.roles,
        environment=support.environment(host),
    )
    settings_op = on_primary(
        name="Bound the app role's statements and idle transactions (on the primary)",
        op=postgresql.role_settings,
    )
    on_primary(
        name=f"Ensure database {defaults.DATABASE_NAME}, grants and amcheck (on the primary)",
        op=postgresql.database,
    )
    return {"role_settings": [settings_op]}
