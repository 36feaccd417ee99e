"""Hostile headers sent on a raw socket (an HTTP client library refuses to send them): header
injection through bare CR or LF and obsolete line folding, a forged X-Request-ID, and
oversized keys. Each is refused (or ignored) without a 5xx and writes nothing; the server
keeps serving."""

from __future__ import annotations

import json
import socket
import uuid

import httpx
import pytest

from tests.api.test_orders import ORDER, counts
from tests.conftest import AUTH, create_account

BODY = json.dumps(ORDER).encode()


def raw_request(server, header_lines: list[bytes], body: bytes = BODY) -> tuple[int, bytes]:
    """Send one request as these exact bytes; (status, whole answer)."""
    head = [b"POST /orders HTTP/1.1", b"Host: t", f"Content-Length: {len(body)}".encode(),
            b"Content-Type: application/json", f"Authorization: {AUTH['authorization']}".encode(),
            *header_lines]  # fmt: skip
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < 12:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


@pytest.mark.parametrize(
    "lines",
    [
        [b"Idempotency-Key: k-" + uuid.uuid4().hex.encode() + b"\nX-Injected: 1"],  # bare LF
        [b"Idempotency-Key: k-" + uuid.uuid4().hex.encode() + b"\rX-Injected: 1"],  # bare CR
        [b"Idempotency-Key: k-" + uuid.uuid4().hex.encode(), b" X-Injected: 1"],  # obs-fold
        [b"Idempotency-Key: k-" + uuid.uuid4().hex.encode() + b"\x00"],  # NUL
        [b"Idempotency-Key: " + b"k" * 200],  # a key over 128 characters
        [b"Idempotency-Key: " + b"k" * 70_000],  # a header over the server's limit
        [b"Idempotency-Key: k-" + uuid.uuid4().hex.encode(), b"Authorization: " + b"A" * 9000],
    ],
    ids=["bare-lf", "bare-cr", "obs-fold", "nul", "key-200", "key-70k", "two-auth-9k"],
)
def test_hostile_headers_are_refused_and_write_nothing(app_server, app_conn, lines):
    create_account(app_conn)
    status, answer = raw_request(app_server, lines)
    assert 400 <= status < 500, answer[:300]
    assert b"x-injected" not in answer.lower()
    assert counts(app_conn) == {"orders": 0, "outbox_events": 0, "positions": 0,
                                "idempotency_keys": 0}  # fmt: skip
    assert httpx.get(f"{app_server.url}/healthz").status_code == 200  # still serving


def test_a_forged_request_id_is_not_taken(app_server, app_conn):
    """X-Request-ID is the app's own: a client's (with an injection attempt) is ignored."""
    create_account(app_conn)
    key = f"k-{uuid.uuid4().hex}".encode()
    forged = b"X-Request-ID: forged%0d%0aSet-Cookie: x=1"
    status, answer = raw_request(app_server, [b"Idempotency-Key: " + key, forged])
    assert status == 201, answer[:300]
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert b"forged" not in head and b"set-cookie" not in head
    request_id = [line for line in head.split(b"\r\n") if line.startswith(b"x-request-id:")]
    assert len(request_id) == 1 and len(request_id[0].split(b":")[1].strip()) == 32
