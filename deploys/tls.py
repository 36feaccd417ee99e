"""TLS inside: the environment's CA certificate on every host, each server's key pair, and
the connection parameters clients use to check the server they reach.

deploys/tlsca.py issues the certificates (on the control machine, stable across runs); this
module uploads them: the CA certificate (public) to layout.TLS_CA_FILE on every host, a
server's certificate and key (0600, owned by the server's user) beside its configuration.
A server's certificate names the host's name, its private address, and `localhost` and
127.0.0.1 (pgBouncer and postgres_exporter reach PostgreSQL over loopback, verified too).
"""

from __future__ import annotations

import ipaddress
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files

from deploys import secretfiles, support, tlsca
from sparkops import layout

LOOPBACK = ("localhost", "127.0.0.1")
# libpq's TLS parameters for every client of PostgreSQL and pgBouncer (sslrootcert: the CA
# every host holds); PostgreSQL direct also takes channel binding, pgBouncer does not offer it.
TLS_MIN_PROTOCOL = "TLSv1.3"


def libpq_params(*, channel_binding: bool = False) -> dict[str, str]:
    params = {"sslmode": "verify-full", "sslrootcert": layout.TLS_CA_FILE}
    if channel_binding:
        params["channel_binding"] = "require"
    return params


def with_tls(url: str, *, channel_binding: bool = False) -> str:
    """A libpq URL with verify-full against the environment's CA (its query string added)."""
    query = "&".join(f"{k}={v}" for k, v in libpq_params(channel_binding=channel_binding).items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


def server_names(host_) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) a server certificate for `host_` carries."""
    dns, ips = [host_.name, LOOPBACK[0]], [LOOPBACK[1]]
    address = support.address(host_)
    try:
        ipaddress.ip_address(address)
        ips.append(address)
    except ValueError:
        dns.append(address)
    return sorted(set(dns)), sorted(set(ips))


def issue_for(host_, service: str) -> tlsca.Issued:
    """The certificate `<host>-<service>` of this environment's CA, for the host's names."""
    dns, ips = server_names(host_)
    return tlsca.issue(
        support.environment(host_), f"{host_.name}-{service}", dns_names=dns, ip_addresses=ips
    )


def issue_for_pgbackrest(host_) -> tlsca.Issued:
    """A cluster node's pgBackRest certificate, server and client: its common name is the
    host's inventory name (what the other nodes' `tls-server-auth` lists), and its address is
    also a DNS name, because pgBackRest checks the host it reaches against DNS names only."""
    dns, ips = server_names(host_)
    names = [host_.name, support.address(host_)]
    names += [name for name in dns if name not in names]
    return tlsca.issue(
        support.environment(host_),
        f"{host_.name}-pgbackrest",
        dns_names=names,
        ip_addresses=ips,
        client=True,
    )


def key_pair(
    service: str, cert_dest: str, key_dest: str, owner: str, what: str,
    issued: tlsca.Issued | None = None,
) -> list:  # fmt: skip
    """Upload this host's certificate (chain: leaf then CA) and key for `service` (`issued`:
    one made otherwise, e.g. issue_for_pgbackrest); returns the two operations (a change
    restarts or reloads the server)."""
    issued = issued or issue_for(host, service)
    cert = files.put(
        name=f"Install {what}'s TLS certificate",
        src=StringIO(issued.chain_pem),
        dest=cert_dest,
        user=owner,
        group=owner,
        mode="644",
    )
    key = secretfiles.secret_file(
        name=f"Install {what}'s TLS key",
        src=StringIO(issued.key_pem),
        dest=key_dest,
        user=owner,
        group=owner,
        mode="600",
    )
    return [cert, key]


@deploy("TLS CA certificate")
def ca_certificate() -> None:
    """The environment's CA certificate on this host: what its clients verify servers with."""
    directory = layout.TLS_CA_FILE.rsplit("/", 1)[0]
    files.directory(name=f"Create {directory}", path=directory, mode="755")
    files.put(
        name="Install the environment's CA certificate",
        src=StringIO(tlsca.ca_pem(support.environment(host))),
        dest=layout.TLS_CA_FILE,
        mode="644",
    )
