"""This machine: its free ports, and directories an ordinary user can run PostgreSQL in.

Used by the local drill and the local restore target (a scratch cluster beside the
caller) as much as by the test kit, so it sits in the foundation.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import tempfile
from pathlib import Path

# PostgreSQL and pgBouncer refuse to run as root; when we are root we run them as this
# ordinary user (created by Debian's postgresql-common package).
SERVICE_USER = os.environ.get("SPARKOPS_SERVICE_USER", "postgres")


def running_as_root() -> bool:
    return os.geteuid() == 0


def service_user() -> str | None:
    """The user to drop to, or None when we already are an ordinary user."""
    if not running_as_root():
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError as exc:
        raise RuntimeError(
            f"running as root and user {SERVICE_USER!r} does not exist: install postgresql-15 "
            "(it creates it) or set SPARKOPS_SERVICE_USER to an ordinary user"
        ) from exc
    return SERVICE_USER


def make_workdir(prefix: str) -> Path:
    """A temporary directory owned by the service user."""
    path = Path(tempfile.mkdtemp(prefix=f"sparkops-{prefix}-"))
    user = service_user()
    if user:
        shutil.chown(path, user=user, group=pwd.getpwnam(user).pw_gid)
    path.chmod(0o700)
    return path


def chown_to_service_user(path: Path) -> None:
    user = service_user()
    if user:
        shutil.chown(path, user=user, group=pwd.getpwnam(user).pw_gid)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
