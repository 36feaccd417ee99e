"""The database route on each app host of a cluster inventory: HAProxy (Debian's), its own
instance, listening on loopback only. The app's DSNs name it instead of a db host:

    127.0.0.1:DB_ROUTE_PRIMARY_PORT     pgBouncer of the node Patroni calls primary
    127.0.0.1:DB_ROUTE_MIGRATIONS_PORT  PostgreSQL of that node (migrations go direct)
    127.0.0.1:DB_ROUTE_REPLICAS_PORT    pgBouncer of the streaming replicas (reads)

Why on each app host rather than on the load balancer: no extra host between the app and its
database, and no single route every app host shares (Patroni's own documentation draws it so).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra import inventory
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from deploys import hacluster, hardening, support
from sparkops import defaults, layout

ADMIN_SOCKET = "/run/spark-db-route/admin.sock"
BIND_ADDRESS = "127.0.0.1"
MAXCONN = 4000


@dataclass(frozen=True)
class Server:
    name: str
    address: str
    port: int
    check_port: int


@dataclass(frozen=True)
class Route:
    name: str
    port: int
    check: str  # Patroni's REST path answering 200 on the nodes that belong behind the route
    servers: tuple[Server, ...]
    what: str


def routes(db: list[hacluster.Member], check_port: int = defaults.PATRONI_REST_PORT) -> list[Route]:
    def servers(port: int) -> tuple[Server, ...]:
        return tuple(Server(n, a, p, check_port) for n, a, p in hacluster.route_servers(db, port))

    return [
        Route(
            "primary",
            defaults.DB_ROUTE_PRIMARY_PORT,
            "/primary",
            servers(defaults.PGBOUNCER_PORT),
            "writes: the primary's pgBouncer",
        ),
        Route(
            "migrations",
            defaults.DB_ROUTE_MIGRATIONS_PORT,
            "/primary",
            servers(defaults.POSTGRES_PORT),
            "migrations: the primary's PostgreSQL, direct (as on a single host)",
        ),
        Route(
            "replicas",
            defaults.DB_ROUTE_REPLICAS_PORT,
            "/replica",
            servers(defaults.PGBOUNCER_PORT),
            "reads that may lag: the streaming replicas' pgBouncers",
        ),
    ]


def config_text(
    route_list: list[Route],
    admin_socket: str = ADMIN_SOCKET,
    bind: str = BIND_ADDRESS,
    ca_file: str = hacluster.RestApiTls().ca,
) -> str:
    """`ca_file`: what the checks verify Patroni's REST API (HTTPS) against."""
    return support.render(
        "hacluster/db-route.cfg.j2",
        routes=route_list,
        admin_socket=admin_socket,
        bind_address=bind,
        ca_file=ca_file,
        maxconn=MAXCONN,
        check_interval_ms=defaults.DB_ROUTE_CHECK_INTERVAL_MS,
    )


@deploy("Database route")
def dbroute() -> None:
    db = [hacluster.Member(h.name, support.address(h)) for h in inventory.get_group("db", [])]
    apt.packages(name="Install HAProxy", packages=["haproxy"], no_recommends=True)
    cfg = files.put(
        name="Configure the database route",
        src=support.rendered_text(config_text(routes(db))),
        dest=layout.DB_ROUTE_CONFIG,
        mode="644",
    )
    unit = files.put(
        name="Install the database route's unit",
        src=support.rendered(
            "hacluster/spark-db-route.service.j2",
            config=layout.DB_ROUTE_CONFIG,
            hardening=hardening.db_route_service(),
        ),
        dest=f"/etc/systemd/system/{layout.DB_ROUTE_SERVICE}",
        mode="644",
    )
    systemd.daemon_reload(name="Reload systemd for the route's unit", _if=unit.did_change)
    systemd.service(
        name="Ensure the database route runs",
        service=layout.DB_ROUTE_SERVICE,
        running=True,
        enabled=True,
    )
    systemd.service(
        name="Reload the route for its changed configuration",
        service=layout.DB_ROUTE_SERVICE,
        reloaded=True,
        _if=lambda: cfg.did_change() and not unit.did_change(),
    )
