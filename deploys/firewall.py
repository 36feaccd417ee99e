"""The host firewall, from the inventory: nftables (Debian's package and unit) on every host.

Inbound is dropped unless it is a flow the host groups imply (`flows()`); loopback and
answers to connections the host opened (established/related) pass, outbound is not filtered.

    every host   control machine -> SSH
    lb hosts     clients -> HTTPS (443) and HTTP (80, redirected)
    app hosts    clients -> the app port; with lb hosts in the inventory, the lb hosts and
                 the control machine (the runbooks' health gates) only, unless
                 firewall_app_clients names others;
                 monitor -> the app's metrics, the outbox's metrics, the pgBouncer exporter
    db hosts     app -> pgBouncer; app -> PostgreSQL (migrations: pg_hba's group:app rule
                 for the schema owner); monitor -> postgres_exporter, node_exporter
    monitor      control machine -> Prometheus, Alertmanager (operators, validate, watch)
    a Patroni cluster (an etcd group): db <-> db PostgreSQL (replication, pg_rewind) and
                 pgBackRest's TLS server (backups copied from a replica);
                 db, app, monitor -> Patroni's REST API on the db hosts; db, etcd, monitor ->
                 etcd's client port and etcd <-> etcd its peer port

The pgBackRest repository is local (posix) or S3, which the db host reaches outbound, so it
needs no inbound rule. Ports come from sparkops/defaults.py, addresses from the inventory.
The rules live in their own table (`inet sparkops`), replaced as a whole on every load, so
other tables on the host are left alone.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from io import StringIO

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server

from deploys import support
from deploys.common import service
from sparkops import defaults

CONF = "/etc/nftables.conf"
TABLE = "sparkops"

DEFAULTS = {
    # False: the deploy leaves the host's firewall alone (e.g. where a cloud security group
    # filters instead); rules an earlier deploy loaded stay until
    # `nft delete table inet sparkops` and /etc/nftables.conf is replaced.
    "firewall_enabled": True,
    # Addresses or networks of the machines that run deploys and runbooks (SSH to every
    # host) and that operators read Prometheus and Alertmanager from. Must not be empty
    # while the firewall is enabled: a deploy would lock itself out.
    "firewall_control_addresses": [],
    # Who may reach the app port besides the lb hosts: addresses or networks, or None: any
    # address when the inventory has no lb host (clients straight to the app hosts), the
    # control machine only when it has (clients go through the load balancer).
    "firewall_app_clients": None,
    # Who may reach the load balancer (lb hosts, 443 and 80): None for any address.
    "firewall_lb_clients": None,
    # More inbound flows, each {"port": 443, "sources": ["10.0.0.0/8"], "what": "..."}.
    "firewall_extra_rules": [],
}


class FirewallError(ValueError):
    """Bad firewall parameters: nothing is changed on the host."""


@dataclass(frozen=True)
class Flow:
    """Inbound TCP to `port` from `sources` (None: from anywhere)."""

    port: int
    sources: tuple[str, ...] | None
    what: str


def networks(values, name: str) -> tuple[str, ...]:
    """Addresses or networks, checked and in canonical form ("10.0.0.5" -> "10.0.0.5/32")."""
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise FirewallError(f"{name} must be a list of addresses or networks, not {values!r}")
    found = []
    for value in values:
        try:
            found.append(str(ipaddress.ip_network(str(value), strict=False)))
        except ValueError:
            raise FirewallError(f"{name}: {value!r} is not an address or network") from None
    return tuple(dict.fromkeys(found))


def flows(groups, data, group_addresses) -> list[Flow]:
    """The inbound flows a host in `groups` accepts. `data` is the host's data (a mapping);
    `group_addresses(group)` gives the addresses of a group's hosts."""

    def hosts(group: str) -> tuple[str, ...]:
        return networks(list(group_addresses(group)), f"the {group} group's addresses")

    control = networks(data.get("firewall_control_addresses") or [], "firewall_control_addresses")
    if not control:
        raise FirewallError(
            "firewall_control_addresses is empty: name the control machine's address in group "
            "data (the firewall would shut SSH to the deploy itself), or set "
            "firewall_enabled = False"
        )
    clients = data.get("firewall_app_clients")
    clients = None if clients is None else networks(clients, "firewall_app_clients")
    balancers = hosts("lb")
    if balancers:  # clients go through the load balancer; runbooks gate from the control
        clients = tuple(dict.fromkeys((*balancers, *(control if clients is None else clients))))
    lb_clients = data.get("firewall_lb_clients")
    lb_clients = None if lb_clients is None else networks(lb_clients, "firewall_lb_clients")
    result = [Flow(defaults.SSH_PORT, control, "SSH from the control machine")]
    if "lb" in groups:
        result.append(Flow(defaults.LB_HTTPS_PORT, lb_clients, "the load balancer, HTTPS"))
        result.append(Flow(defaults.LB_HTTP_PORT, lb_clients, "the load balancer, HTTP"))
    if "app" in groups:
        what = "the app, from the load balancer" if balancers else "the app, from its clients"
        result.append(Flow(defaults.APP_PORT, clients, what))
        monitor = hosts("monitor")
        result.append(Flow(defaults.APP_METRICS_PORT, monitor, "the app's metrics"))
        if data.get("app_outbox_enabled") is not False:
            result.append(Flow(defaults.OUTBOX_METRICS_PORT, monitor, "the outbox's metrics"))
        if data.get("app_pgbouncer_exporter_enabled") is not False:
            result.append(Flow(defaults.PGBOUNCER_EXPORTER_PORT, monitor, "pgBouncer exporter"))
    if "db" in groups:
        app, monitor = hosts("app"), hosts("monitor")
        result.append(Flow(defaults.PGBOUNCER_PORT, app, "pgBouncer, from the app"))
        result.append(Flow(defaults.POSTGRES_PORT, app, "PostgreSQL, the app's migrations"))
        result.append(Flow(defaults.POSTGRES_EXPORTER_PORT, monitor, "postgres_exporter"))
        result.append(Flow(defaults.NODE_EXPORTER_PORT, monitor, "node_exporter"))
    # A Patroni cluster (an etcd group, deploys/hacluster.py): the nodes replicate and ask each
    # other's REST API before a promotion; the app hosts' routes check it; etcd keeps quorum.
    etcd = hosts("etcd") if list(group_addresses("etcd")) else ()
    if etcd and "db" in groups:
        db, app, monitor = hosts("db"), hosts("app"), hosts("monitor")
        result.append(Flow(defaults.POSTGRES_PORT, db, "PostgreSQL replication between nodes"))
        result.append(
            Flow(
                defaults.PGBACKREST_TLS_PORT,
                db,
                "pgBackRest's TLS server (backups copied from a replica)",
            )
        )
        result.append(
            Flow(defaults.PATRONI_REST_PORT, db + app + monitor, "Patroni's REST API (checks)")
        )
    if etcd and "etcd" in groups:
        db, monitor = hosts("db"), hosts("monitor")
        result.append(Flow(defaults.ETCD_CLIENT_PORT, db + etcd + monitor, "etcd's clients"))
        result.append(Flow(defaults.ETCD_PEER_PORT, etcd, "etcd's peers"))
    if "monitor" in groups:
        result.append(Flow(defaults.PROMETHEUS_PORT, control, "Prometheus, for operators"))
        result.append(Flow(defaults.ALERTMANAGER_PORT, control, "Alertmanager, for operators"))
    for index, rule in enumerate(data.get("firewall_extra_rules") or []):
        name = f"firewall_extra_rules[{index}]"
        if not isinstance(rule, dict) or set(rule) - {"port", "sources", "what"}:
            raise FirewallError(f"{name} must be {{port, sources, what}}: {rule!r}")
        port = rule.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise FirewallError(f"{name}: port must be 1-65535, not {port!r}")
        sources = networks(rule.get("sources") or [], f"{name}.sources")
        if not sources:
            raise FirewallError(f"{name}: sources is empty")
        result.append(Flow(port, sources, str(rule.get("what") or f"extra rule {index}")))
    return [flow for flow in result if flow.sources is None or flow.sources]


def rule_lines(flow: Flow) -> list[str]:
    """nft statements for one flow (an IPv4 and an IPv6 line where the sources need both)."""
    comment = f'comment "{flow.what}"'
    if flow.sources is None:
        return [f"tcp dport {flow.port} accept {comment}"]
    lines = []
    for family, version in (("ip", 4), ("ip6", 6)):
        nets = [s for s in flow.sources if ipaddress.ip_network(s).version == version]
        if nets:
            lines.append(
                f"{family} saddr {{ {', '.join(nets)} }} tcp dport {flow.port} accept {comment}"
            )
    return lines


def ruleset(flows_: list[Flow]) -> str:
    return support.render(
        "firewall/nftables.conf.j2",
        table=TABLE,
        rules=[line for flow in flows_ for line in rule_lines(flow)],
    )


def host_flows(host_, inventory_) -> list[Flow]:
    data = {name: host_.data.get(name) for name in (*DEFAULTS, "app_outbox_enabled",
                                                    "app_pgbouncer_exporter_enabled")}  # fmt: skip
    for name, value in DEFAULTS.items():
        if data[name] is None and value is not None:
            data[name] = value
    return flows(host_.groups, data, lambda g: support.group_addresses(inventory_, g))


@deploy("Firewall", data_defaults=DEFAULTS)
def firewall() -> None:
    """nftables on every host: default drop inbound, the flows of `flows()` allowed."""
    if not host.data.firewall_enabled:
        return
    text = ruleset(host_flows(host, inventory))
    apt.packages(name="Install nftables", packages=["nftables"], no_recommends=True)
    conf = files.put(
        name="Configure the firewall (nftables)", src=StringIO(text), dest=CONF, mode="644"
    )
    server.shell(
        name="Check the firewall rules (nft -c)",
        commands=[f"nft -c -f {CONF}"],
        _if=conf.did_change,
    )
    service("nftables.service", reload_on=[conf], what="the firewall (nftables)")
