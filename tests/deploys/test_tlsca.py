"""The deploy-time CA: made once, certificates reused until they no longer fit, and accepted
by real TLS peers (Python's ssl and openssl verify) for exactly the names they carry."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import stat
import subprocess
import threading

import pytest
from cryptography import x509

from deploys import tlsca


@pytest.fixture(autouse=True)
def _secrets_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKOPS_SECRETS_DIR", str(tmp_path / "secrets"))


def _sans(issued: tlsca.Issued) -> set[str]:
    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.DNSName)} | {
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    }


def test_issue_is_stable_and_keys_are_private():
    first = tlsca.issue("lab", "db-postgresql", dns_names=["db"], ip_addresses=["10.1.0.10"])
    again = tlsca.issue("lab", "db-postgresql", dns_names=["db"], ip_addresses=["10.1.0.10"])
    assert (again.cert_pem, again.key_pem) == (first.cert_pem, first.key_pem)
    assert _sans(first) == {"db", "10.1.0.10"}
    directory = tlsca.tls_dir("lab")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in ("ca.key", "db-postgresql.key"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in repr(first)


def test_changed_names_reissue_and_environments_do_not_share_a_ca():
    first = tlsca.issue("lab", "lb", dns_names=["lb"])
    moved = tlsca.issue("lab", "lb", dns_names=["lb", "spark.example"])
    assert moved.cert_pem != first.cert_pem
    assert _sans(moved) == {"lb", "spark.example"}
    assert tlsca.ca_pem("lab") != tlsca.ca_pem("staging")


def test_a_certificate_near_its_end_is_renewed(monkeypatch):
    first = tlsca.issue("lab", "app", dns_names=["app"])
    later = dt.datetime.now(dt.UTC) + dt.timedelta(
        days=tlsca.LEAF_VALID_DAYS - tlsca.RENEW_BEFORE_DAYS + 1
    )
    monkeypatch.setattr(tlsca, "_now", lambda: later)
    assert tlsca.issue("lab", "app", dns_names=["app"]).cert_pem != first.cert_pem


def test_a_certificate_from_another_ca_is_replaced():
    first = tlsca.issue("lab", "app", dns_names=["app"])
    directory = tlsca.tls_dir("lab")
    (directory / "ca.crt").unlink()
    (directory / "ca.key").unlink()
    fresh = tlsca.issue("lab", "app", dns_names=["app"])
    assert fresh.cert_pem != first.cert_pem
    assert fresh.ca_pem != first.ca_pem


def test_openssl_verifies_the_chain_and_the_purpose(tmp_path):
    issued = tlsca.issue(
        "lab", "pgbouncer", dns_names=["db"], ip_addresses=["10.1.0.10"], client=True
    )
    (tmp_path / "ca.pem").write_text(issued.ca_pem)
    (tmp_path / "leaf.pem").write_text(issued.cert_pem)
    for purpose in ("sslserver", "sslclient"):
        done = subprocess.run(
            ["openssl", "verify", "-purpose", purpose, "-CAfile", "ca.pem", "leaf.pem"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    server_only = tlsca.issue("lab", "web", dns_names=["web"])
    (tmp_path / "web.pem").write_text(server_only.cert_pem)
    refused = subprocess.run(
        ["openssl", "verify", "-purpose", "sslclient", "-CAfile", "ca.pem", "web.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0


def _handshake(tmp_path, issued: tlsca.Issued, server_hostname: str) -> str:
    """A real TLS handshake on loopback: a server with `issued`, a client trusting the CA and
    checking `server_hostname`. Returns the protocol version agreed."""
    (tmp_path / "chain.pem").write_text(issued.chain_pem)
    (tmp_path / "key.pem").write_text(issued.key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    client_ctx = ssl.create_default_context(cadata=issued.ca_pem)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
        ):
            version = tls.version()
            tls.sendall(b"x")
            return version or ""
    finally:
        thread.join(timeout=10)
        listener.close()


def test_a_client_checking_names_accepts_the_certificate_for_its_names_only(tmp_path):
    issued = tlsca.issue("lab", "lb-frontend", dns_names=["lb.lab"], ip_addresses=["127.0.0.1"])
    assert _handshake(tmp_path, issued, "lb.lab").startswith("TLS")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tmp_path, issued, "other.lab")


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("../etc", {"dns_names": ["x"]}, "names the files"),
        ("ca", {"dns_names": ["x"]}, "not 'ca'"),
        ("ok", {}, "at least one"),
        ("ok", {"ip_addresses": ["10.0.0.300"]}, "not an IP address"),
    ],
)
def test_bad_requests_are_refused_before_anything_is_written(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tlsca.issue("lab", name, **kwargs)
    assert not (tlsca.tls_dir("lab") / f"{name}.crt").exists()


def test_half_a_ca_is_an_error_not_a_new_ca():
    tlsca.ca_pem("lab")
    (tlsca.tls_dir("lab") / "ca.key").unlink()
    with pytest.raises(tlsca.CAError, match="remove both"):
        tlsca.ca_pem("lab")


def test_a_world_readable_key_is_refused():
    tlsca.ca_pem("lab")
    (tlsca.tls_dir("lab") / "ca.key").chmod(0o644)
    with pytest.raises(tlsca.CAError, match="chmod 600"):
        tlsca.ca_pem("lab")
