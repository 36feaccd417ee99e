"""testkit/lab_s3.py on loopback: moto behind stunnel4 answers S3 over TLS with a certificate
for the lab name, signed by the lab CA (what pgBackRest on the db host checks)."""

from __future__ import annotations

import json
import socket
import ssl

import pytest

from testkit import lab_s3
from testkit.proc import free_port


@pytest.fixture(scope="module")
def endpoint():
    s3 = lab_s3.LabS3("127.0.0.1", tls_port=free_port()).start()
    try:
        yield s3
    finally:
        s3.stop()


def test_s3_over_tls_with_the_lab_name_and_ca(endpoint):
    data = json.loads(endpoint.data_file.read_text())
    assert data["endpoint"] == lab_s3.LAB_S3_NAME and data["port"] == endpoint.tls_port
    context = ssl.create_default_context(cafile=data["ca_cert_src"])
    with context.wrap_socket(
        socket.create_connection(("127.0.0.1", endpoint.tls_port), timeout=10),
        server_hostname=lab_s3.LAB_S3_NAME,
    ) as tls:
        tls.sendall(
            f"PUT /{lab_s3.LAB_S3_BUCKET} HTTP/1.1\r\nHost: {lab_s3.LAB_S3_NAME}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]


def test_a_wrong_name_fails_the_handshake(endpoint):
    data = json.loads(endpoint.data_file.read_text())
    context = ssl.create_default_context(cafile=data["ca_cert_src"])
    sock = socket.create_connection(("127.0.0.1", endpoint.tls_port), timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        context.wrap_socket(sock, server_hostname="127.0.0.1")
    sock.close()
