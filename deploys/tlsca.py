"""The environment's own certificate authority, made at deploy time on the control machine.

Inside the private network (app -> pgBouncer -> PostgreSQL, the load balancer's frontend in
the lab, Prometheus and Alertmanager) the hosts present certificates signed by one CA per
environment. It lives beside the environment's other secrets
(`~/.config/sparkops/<environment>/tls/`, directory 0700, keys 0600; `SPARKOPS_SECRETS_DIR`
moves the parent) and is never committed. Only the CA's certificate and each host's own key
pair are uploaded.

A certificate is issued once and reused while it is signed by the current CA, names exactly
the same DNS names and addresses, and has more than RENEW_BEFORE_DAYS left, so a second
deploy uploads byte-identical files and restarts nothing. A user with an internal CA puts its
`ca.crt` and `ca.key` (an intermediate, ideally) in that directory before the first deploy.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sparkops import secrets

TLS_DIR_NAME = "tls"
CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
CA_VALID_DAYS = 3650
LEAF_VALID_DAYS = 397  # what public CAs may issue at most; renewed by the next deploy
RENEW_BEFORE_DAYS = 30
_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")


class CAError(RuntimeError):
    """The CA's files are unusable; the message says which file and what to do."""


@dataclass(frozen=True)
class Issued:
    """One certificate and its key, PEM text, with the CA that signed it."""

    name: str
    cert_pem: str
    key_pem: str
    ca_pem: str

    @property
    def chain_pem(self) -> str:
        """Leaf then CA: what a server presents when clients only hold the root."""
        return self.cert_pem + self.ca_pem

    @property
    def bundle_pem(self) -> str:
        """Leaf, CA and key in one file: HAProxy's `crt` format."""
        return self.cert_pem + self.ca_pem + self.key_pem

    def __repr__(self) -> str:  # never print the key
        return f"Issued({self.name!r})"


def tls_dir(environment: str) -> Path:
    return secrets.secrets_dir() / environment / TLS_DIR_NAME


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    if path.stat().st_mode & 0o077:
        raise CAError(f"{path} is readable by other users: run `chmod 600 {path}`")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise CAError(f"{path} is not an unencrypted PEM private key ({exc})") from exc
    return key  # type: ignore[return-value]


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise CAError(f"{path} is not a PEM certificate ({exc}): fix or remove it") from exc


def _make_ca(environment: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Spark Ops"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Spark Ops {environment} CA"),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def authority(environment: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The environment's CA (certificate, key), made and saved on first use."""
    directory = tls_dir(environment)
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    if cert_path.exists() != key_path.exists():
        present, absent = (cert_path, key_path) if cert_path.exists() else (key_path, cert_path)
        raise CAError(
            f"{present} exists but {absent} does not: restore the missing file, or remove both "
            "to make a new CA (every certificate is then reissued and clients must trust it)"
        )
    if cert_path.exists():
        return _load_cert(cert_path), _load_key(key_path)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert, key = _make_ca(environment)
    _write_private(key_path, _key_pem(key))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def ca_pem(environment: str) -> str:
    """The CA certificate clients trust (`sslrootcert`, `ca-file`)."""
    cert, _ = authority(environment)
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _sans(dns_names: Iterable[str], ip_addresses: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in sorted(set(dns_names))]
    for ip in sorted(set(ip_addresses)):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError as exc:
            raise ValueError(f"{ip!r} is not an IP address: {exc}") from exc
    return names


def _still_good(
    cert: x509.Certificate,
    ca_cert: x509.Certificate,
    wanted: list[x509.GeneralName],
    client: bool,
) -> bool:
    if cert.issuer != ca_cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    if cert.not_valid_after_utc - _now() < dt.timedelta(days=RENEW_BEFORE_DAYS):
        return False
    try:
        have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return set(have) == set(wanted) and (ExtendedKeyUsageOID.CLIENT_AUTH in usage) == client


def issue(
    environment: str,
    name: str,
    *,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str] = (),
    client: bool = False,
) -> Issued:
    """A certificate `name` (a file name: `db-postgresql`, `lb-frontend`) for these names.

    `client=True` also allows client authentication (a certificate a service presents to
    another). Reuses the saved one when it still fits (see the module's docstring).
    """
    if not _NAME.match(name) or name in ("ca",):
        raise ValueError(
            f"certificate name {name!r} must be lower-case letters, digits, '.' or '-' "
            "(it names the files) and not 'ca'"
        )
    dns_names, ip_addresses = list(dns_names), list(ip_addresses)
    if not dns_names and not ip_addresses:
        raise ValueError(f"certificate {name!r} needs at least one DNS name or IP address")
    wanted = _sans(dns_names, ip_addresses)
    ca_cert, ca_key = authority(environment)
    directory = tls_dir(environment)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    ca_text = ca_cert.public_bytes(serialization.Encoding.PEM).decode()
    if cert_path.exists() and key_path.exists():
        cert, key = _load_cert(cert_path), _load_key(key_path)
        if _still_good(cert, ca_cert, wanted, client) and (
            cert.public_key().public_numbers() == key.public_key().public_numbers()
        ):
            return Issued(name, cert_path.read_text(), key_path.read_text(), ca_text)
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    common_name = dns_names[0] if dns_names else ip_addresses[0]
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=LEAF_VALID_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(wanted), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_bytes = _key_pem(key)
    cert_bytes = cert.public_bytes(serialization.Encoding.PEM)
    _write_private(key_path, key_bytes)
    _write_private(cert_path, cert_bytes)
    return Issued(name, cert_bytes.decode(), key_bytes.decode(), ca_text)
