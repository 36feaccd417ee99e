"""SCRAM-SHA-256 verifiers (RFC 5802 / 7677), in PostgreSQL's stored format.

`make_verifier` writes pgBouncer auth-file entries without a round trip to the server;
`verifier_matches` lets a deploy decide whether a role's password must change, so a second
run issues no ALTER ROLE.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

ITERATIONS = 4096  # PostgreSQL's default scram_iterations


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return stored_key, server_key


def make_verifier(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt if salt is not None else os.urandom(16)
    stored_key, server_key = _keys(password, salt, iterations)
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def verifier_matches(verifier: str | None, password: str) -> bool:
    """True when `verifier` (as in pg_authid.rolpassword) was made from `password`."""
    if not verifier or not verifier.startswith("SCRAM-SHA-256$"):
        return False
    try:
        _, params, keys = verifier.split("$")
        iterations_s, salt_b64 = params.split(":")
        stored_b64, server_b64 = keys.split(":")
        salt = base64.b64decode(salt_b64)
        iterations = int(iterations_s)
    except ValueError:
        return False
    stored_key, server_key = _keys(password, salt, iterations)
    return hmac.compare_digest(base64.b64encode(stored_key).decode(), stored_b64) and (
        hmac.compare_digest(base64.b64encode(server_key).decode(), server_b64)
    )
