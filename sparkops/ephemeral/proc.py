"""Process helpers shared by the throwaway services."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
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


def run_as_service_user(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    user = service_user()
    kwargs.setdefault("check", True)
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    if user:
        kwargs.setdefault("user", user)
        kwargs.setdefault("group", pwd.getpwnam(user).pw_gid)
        kwargs.setdefault("extra_groups", [])
    return subprocess.run(args, **kwargs)


def popen_as_service_user(args: list[str], **kwargs) -> subprocess.Popen:
    user = service_user()
    if user:
        kwargs.setdefault("user", user)
        kwargs.setdefault("group", pwd.getpwnam(user).pw_gid)
        kwargs.setdefault("extra_groups", [])
    kwargs.setdefault("start_new_session", True)
    return subprocess.Popen(args, **kwargs)


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


def tail_file(workdir: Path | None, name: str, lines: int = 40) -> str:
    """The last `lines` lines of a service's log in its work directory, or "(no log)"."""
    if workdir is None:
        return "(no log)"
    try:
        return "\n".join((workdir / name).read_text().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a child we started: SIGTERM, then SIGKILL after `timeout`."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
