"""How the control machine reaches Prometheus and Alertmanager: HTTPS, verified against the
environment's CA, with basic auth (their `--web.config.file`, deploys/monitoring.py).

The user and password are the environment's (`monitoring_web` in the secrets file,
sparkops/secrets.py); the hosts hold only the password's bcrypt hash, and Prometheus its
plain password in a file it alone reads (it scrapes itself and talks to Alertmanager). A
command that reaches a deployed monitor host registers the host's base URL once
(`register`); `get` and `client` then pass the credentials and the CA for URLs under it, and
nothing for others (a test's throwaway Prometheus on loopback).
"""

from __future__ import annotations

import base64
import hashlib
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from sparkops import secrets

USERNAME = "sparkops"
SECRET_NAME = "monitoring_web"
# Where deploys/tlsca.py keeps the environment's CA certificate (tlsca.tls_dir/CA_CERT_FILE;
# tests/deploys/test_tlsca.py checks they agree).
CA_SUBPATH = ("tls", "ca.crt")
BCRYPT_COST = 10
_BCRYPT_ALPHABET = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True)
class WebAccess:
    username: str
    password: str = field(repr=False)
    ca_file: Path

    def verify(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def ca_file(environment: str) -> Path:
    return secrets.secrets_dir() / environment / Path(*CA_SUBPATH)


def for_environment(environment: str) -> WebAccess:
    return WebAccess(USERNAME, secrets.load(environment)[SECRET_NAME], ca_file(environment))


def stable_bcrypt(password: str) -> str:
    """The password's bcrypt hash with a salt derived from it, so a re-rendered
    web.config.file is byte-identical (a random salt would rewrite it on every deploy)."""
    import bcrypt  # the control machine's (extra `control`), not in the app's release

    digest = hashlib.sha256(f"sparkops-web:{password}".encode()).digest()[:16]
    # bcrypt's base64 is base64's bit layout in another alphabet: 22 characters, 16 bytes.
    std = base64.b64encode(digest).rstrip(b"=")
    salt = std.translate(
        bytes.maketrans(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            _BCRYPT_ALPHABET,
        )
    )[:22]
    return bcrypt.hashpw(password.encode(), b"$2b$%02d$" % BCRYPT_COST + salt).decode()


_registered: dict[str, WebAccess] = {}


def register(base_url: str, access: WebAccess) -> None:
    """Send `access`'s credentials and CA to every URL under `base_url` (this process)."""
    _registered[base_url.rstrip("/")] = access


def access_for(url: str) -> WebAccess | None:
    for base, access in _registered.items():
        if url == base or url.startswith(base + "/"):
            return access
    return None


def _options(url: str) -> dict:
    access = access_for(url)
    if access is None:
        return {}
    return {"auth": (access.username, access.password), "verify": access.verify()}


def get(url: str, **kwargs) -> httpx.Response:
    """httpx.get, with the registered credentials and CA when `url` is under a registered base."""
    return httpx.get(url, **_options(url), **kwargs)


def client(base_url: str, **kwargs) -> httpx.Client:
    """An httpx.Client for requests under `base_url` (full URLs), credentials and CA included."""
    return httpx.Client(**_options(base_url.rstrip("/")), **kwargs)


def monitor_url(address: str, port: int, environment: str) -> str:
    """`https://<address>:<port>` of a deployed Prometheus or Alertmanager, registered with the
    environment's credentials and CA."""
    url = f"https://{address}:{port}"
    register(url, for_environment(environment))
    return url
