"""What every host gets: apt settings, base packages, and the one place that controls services.

Every host (production and lab alike) runs systemd, so services go through pyinfra's
`systemd.service`; `service()` below is the helper the component deploys use to start a
unit and restart or reload it only when its inputs changed.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.operations import apt, files, systemd

from deploys import support

APT_PROXY_CONF = "/etc/apt/apt.conf.d/02sparkops-proxy"
APT_LOCK_CONF = "/etc/apt/apt.conf.d/02sparkops-lock"

DEFAULTS = {
    # Packages every host gets (the components add their own).
    "common_packages": ["ca-certificates", "curl", "python3", "python3-venv"],
    # An apt proxy (e.g. "http://10.0.0.1:3142"), or None for direct mirror access.
    "common_apt_proxy": None,
    # apt-get update only when the package lists are older than this (seconds): a redeploy
    # inside this window changes nothing.
    "common_apt_cache_seconds": 6 * 3600,
}


@operation()
def barrier(what: str):
    """Do nothing, on every host, at one point of site.py.

    pyinfra orders operations per host and interleaves hosts whose operations differ: the
    app host's migrations could run before the db host has its roles. An operation that every
    host runs (same call site, so the same operation) is a node all hosts' chains pass
    through, so everything before it, on every host, runs before anything after it.
    """
    host.noop(what)
    return
    yield  # a generator, as pyinfra operations are


def service(unit: str, *, changed=(), reload_on=(), what: str | None = None) -> None:
    """Ensure `unit` runs and is enabled; restart it when an op in `changed` changed something,
    else reload it when an op in `reload_on` did. No change in, no restart out."""
    what = what or unit
    systemd.service(
        name=f"Ensure {what} is running and enabled", service=unit, running=True, enabled=True
    )
    if changed:
        systemd.service(
            name=f"Restart {what} for changed configuration",
            service=unit,
            restarted=True,
            _if=lambda: any(op.did_change() for op in changed),
        )
    if reload_on:
        systemd.service(
            name=f"Reload {what} for changed configuration",
            service=unit,
            reloaded=True,
            _if=[
                lambda: not any(op.did_change() for op in changed),
                lambda: any(op.did_change() for op in reload_on),
            ],
        )


@deploy("Common", data_defaults=DEFAULTS)
def common() -> None:
    files.put(
        name="Let apt wait for the dpkg lock and time out stalled downloads",
        src=support.rendered("common/apt-lock.conf.j2", seconds=300),
        dest=APT_LOCK_CONF,
        mode="644",
    )
    proxy = host.data.common_apt_proxy
    if proxy:
        files.put(
            name="Configure the apt proxy",
            src=support.rendered("common/apt-proxy.conf.j2", proxy=proxy),
            dest=APT_PROXY_CONF,
            mode="644",
        )
    else:
        files.file(name="No apt proxy from Spark Ops", path=APT_PROXY_CONF, present=False)
    apt.update(
        name="Refresh apt package lists",
        cache_time=host.data.common_apt_cache_seconds,
        # A stalled update is retried rather than holding the whole deploy.
        _timeout=300,
        _retries=2,
        # One host at a time: apt-cacher-ng answered a truncated InRelease (235 bytes) to one
        # of three hosts fetching it at once, and that host's apt-get hung (seen in the lab).
        _serial=True,
    )
    apt.packages(
        name="Install base packages", packages=host.data.common_packages, no_recommends=True
    )
