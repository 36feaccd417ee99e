"""The load balancer tier: HAProxy (Debian's package and unit) on the hosts of group `lb`.

    clients --HTTPS :443--> HAProxy --HTTP--> every app host's app port (/readyz checked)
            --HTTP  :80 --> 301 to HTTPS

TLS ends here. The certificate is either the deploy's CA's (deploys/tlsca.py, the default:
the lab, an internal network; it names the lb host's name and address plus `haproxy_tls_names`)
or, in production, a file the user provides (`haproxy_tls_bundle`: the certificate chain
and its key in one PEM file on the control machine). HAProxy says who the client is in
X-Forwarded-For (a client's own is dropped); the app trusts it from the lb hosts only
(uvicorn --forwarded-allow-ips, deploys/app.py), so its per-address rate limit sees clients.

The runtime API is a unix socket (admin level, never on the network). `spark-lb-server`
(sparkops/lbruntime.py, uploaded) drains an app host through it before a switch restarts the
host and readies it after its health gate: the deploy's switch (deploys/app.py) and
`sparkops rollback` (runbooks/balancer.py) call it, one app host at a time.
"""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server

from deploys import support, tlsca
from deploys.common import service
from sparkops import defaults, layout, lbruntime

CERT_NAME = "lb-frontend"

DEFAULTS = {
    # A PEM file on the control machine with the frontend's certificate, its chain and its
    # key (HAProxy's crt format), e.g. "/secure/spark/lb.example.com.pem"; None: a
    # certificate from the deploy's CA (deploys/tlsca.py), which clients must trust.
    "haproxy_tls_bundle": None,
    # More DNS names for the CA's certificate (the host's name and address are always in it).
    "haproxy_tls_names": [],
    # Where HAProxy listens ("*": every address of the host).
    "haproxy_bind_address": "*",
}


class HAProxyError(ValueError):
    """Bad load balancer parameters: nothing is changed on the host."""


def backend_servers(app_hosts) -> list[dict[str, str]]:
    """The backend's servers: each app host by its inventory name and private address."""
    return [{"name": h.name, "address": support.address(h)} for h in app_hosts]


def config_text(servers: list[dict[str, str]], bind_address: str = "*") -> str:
    if not servers:
        raise HAProxyError("the inventory has lb hosts but no app host for them to route to")
    return support.render(
        "haproxy/haproxy.cfg.j2",
        servers=servers,
        bind_address=bind_address,
        https_port=defaults.LB_HTTPS_PORT,
        http_port=defaults.LB_HTTP_PORT,
        app_port=defaults.APP_PORT,
        backend=defaults.LB_BACKEND,
        check_host="localhost",
        check_inter_ms=defaults.LB_CHECK_INTER_MS,
        check_rise=defaults.LB_CHECK_RISE,
        check_fall=defaults.LB_CHECK_FALL,
        hsts_max_age=defaults.LB_HSTS_MAX_AGE_SECONDS,
        app_request_timeout=defaults.APP_REQUEST_TIMEOUT_SECONDS,
    )


def certificate_bundle(host_) -> str:
    """The frontend's PEM bundle: the user's file, or one the deploy's CA issues."""
    given = host_.data.get("haproxy_tls_bundle")
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise HAProxyError(f"haproxy_tls_bundle: {path} is not a file on this machine")
        text = path.read_text()
        if "PRIVATE KEY-----" not in text or "BEGIN CERTIFICATE" not in text:
            raise HAProxyError(
                f"haproxy_tls_bundle: {path} must hold the certificate chain and its key (PEM)"
            )
        return text
    names = [host_.name, *(host_.data.get("haproxy_tls_names") or [])]
    issued = tlsca.issue(
        support.environment(host_),
        cert_name(host_.name, support.address(host_)),
        dns_names=list(dict.fromkeys(names)),
        ip_addresses=[support.address(host_)],
    )
    return issued.bundle_pem


def cert_name(host_name: str, address: str) -> str:
    """The CA's file name for one lb host's certificate: its own per host and address, so two
    lb hosts (or two labs sharing the environment's CA) never reissue each other's."""
    name = re.sub(r"[^a-z0-9.-]+", "-", f"{CERT_NAME}-{host_name}-{address}".lower())
    return name[:63].rstrip(".-")


@deploy("Load balancer (HAProxy)", data_defaults=DEFAULTS)
def haproxy() -> None:
    """HAProxy on an lb host: TLS, redirect, /readyz checks, every app host, runtime API."""
    text = config_text(
        backend_servers(inventory.get_group("app", [])), host.data.haproxy_bind_address
    )
    bundle = certificate_bundle(host)
    apt.packages(name="Install HAProxy", packages=["haproxy"], no_recommends=True)
    files.directory(
        name="Create HAProxy's certificate directory",
        path=str(Path(layout.HAPROXY_CERT_FILE).parent),
        user="root",
        group="root",
        mode="700",
    )
    cert = files.put(
        name="Install the frontend's certificate and key",
        src=StringIO(bundle),
        dest=layout.HAPROXY_CERT_FILE,
        user="root",
        group="root",
        mode="600",
    )
    conf = files.put(
        name="Configure HAProxy",
        src=StringIO(text),
        dest=layout.HAPROXY_CONF,
        user="root",
        group="root",
        mode="644",
    )
    server.shell(
        name="Check HAProxy's configuration (haproxy -c)",
        commands=[f"haproxy -c -q -f {layout.HAPROXY_CONF}"],
        _if=[lambda: conf.did_change() or cert.did_change()],
    )
    files.put(
        name="Install spark-lb-server (drain and ready an app host)",
        src=lbruntime.__file__,
        dest=layout.LB_SERVER_TOOL,
        user="root",
        group="root",
        mode="755",
    )
    # A reload keeps established connections and the servers' drain states are re-read
    # from the configuration (all ready): deploys change it only with the app hosts.
    service(layout.HAPROXY_SERVICE, reload_on=[conf, cert], what="HAProxy")
