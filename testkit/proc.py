"""Process helpers shared by the throwaway services."""

from __future__ import annotations

import pwd
import subprocess
from pathlib import Path

from sparkops.localhost import (  # noqa: F401  (the kit's callers import them from here too)
    SERVICE_USER,
    chown_to_service_user,
    free_port,
    make_workdir,
    port_open,
    running_as_root,
    service_user,
)


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
