"""etcd (Debian's etcd-server) on the hosts of group `etcd`: Patroni's distributed
configuration store, where the leader key lives. Three members tolerate one down; the
members may share hosts with other roles (the lab puts them on the db hosts and the monitor).
"""

from __future__ import annotations

from pyinfra import host, inventory
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.facts.server import Command
from pyinfra.operations import apt, files, systemd

from deploys import hacluster, support
from sparkops import defaults, layout

# Seconds a deploy waits for this member to be healthy (it needs a quorum of members up).
MEMBER_READY_TIMEOUT_SECONDS = 120


def members() -> list[hacluster.Member]:
    return [
        hacluster.Member(h.name, support.address(h))
        for h in inventory.get_group(hacluster.ETCD_GROUP, [])
    ]


def environment_text(host_) -> str:
    member = hacluster.Member(host_.name, support.address(host_))
    env = hacluster.etcd_environment(
        member, members(), token=f"{defaults.PATRONI_SCOPE}-{support.environment(host_)}"
    )
    return support.render("hacluster/etcd.default.j2", environment=env)


@operation(is_idempotent=False)
def member_healthy(timeout: int = MEMBER_READY_TIMEOUT_SECONDS):
    """Wait (bounded) until this member answers healthy: it has joined a quorum. Nothing to
    do (no change reported) when it already is."""
    endpoint = f"http://127.0.0.1:{defaults.ETCD_CLIENT_PORT}"
    check = f"ETCDCTL_API=3 etcdctl --endpoints={endpoint} endpoint health >/dev/null 2>&1"
    if (host.get_fact(Command, f"{check} && echo healthy || true") or "").strip() == "healthy":
        host.noop("the etcd member is healthy")
        return
    yield StringCommand(
        f"deadline=$(( $(date +%s) + {int(timeout)} )); "
        f"until ETCDCTL_API=3 etcdctl --endpoints={endpoint} endpoint health >/dev/null 2>&1; "
        'do [ "$(date +%s)" -ge "$deadline" ] && { '
        f"echo 'etcd on this host is not healthy after {int(timeout)} s (a quorum of the etcd "
        f"group must be up): journalctl -u {layout.ETCD_SERVICE}' >&2; exit 1; }}; "
        "sleep 1; done"
    )


@deploy("etcd")
def etcd() -> None:
    # Written before the package: its first start then already uses our members and data
    # directory (dpkg keeps an existing conffile under pyinfra's --force-confold).
    config = files.put(
        name="Configure the etcd member",
        src=support.rendered_text(environment_text(host)),
        dest=layout.ETCD_ENV_FILE,
        mode="644",
    )
    apt.packages(
        name="Install etcd",
        packages=["etcd-server", "etcd-client"],
        no_recommends=True,
    )
    started = systemd.service(
        name="Ensure etcd is running and enabled",
        service=layout.ETCD_SERVICE,
        running=True,
        enabled=True,
    )
    systemd.service(
        name="Restart etcd for its changed configuration",
        service=layout.ETCD_SERVICE,
        restarted=True,
        _if=lambda: config.did_change() and not started.did_change(),
    )
    member_healthy(name="Wait until the etcd member is healthy")
