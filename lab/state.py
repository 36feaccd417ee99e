"""The lab's state file: what `up` made, written before each thing is made.

`down` reads it to undo exactly that, so a crash halfway through `up` still leaves a record
of everything that may exist. Processes are recorded with their kernel start time, so a
recycled pid is never mistaken for ours.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lab import config
from sparkops.wait import wait_until


def empty() -> dict[str, Any]:
    return {"bridge": None, "proxy": None, "hosts": {}}


def load() -> dict[str, Any]:
    path = config.state_file()
    if not path.exists():
        return empty()
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        # A torn write cannot happen (save() renames), but a hand-edited file can be broken:
        # fall back to what down can still find by name.
        return empty()
    return {**empty(), **data}


def save(state: dict[str, Any]) -> None:
    path = config.state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)


def clear() -> None:
    config.state_file().unlink(missing_ok=True)


def write_hosts(hosts: list[dict[str, Any]]) -> None:
    """The inventory's input (`inventories/lab.py` reads it)."""
    path = config.hosts_file()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(hosts, indent=2) + "\n")
    os.replace(tmp, path)


def read_hosts() -> list[dict[str, Any]] | None:
    path = config.hosts_file()
    if not path.exists():
        return None
    return json.loads(path.read_text())


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """One `up`/`down` at a time."""
    lab = config.lab_dir()
    lab.mkdir(parents=True, exist_ok=True)
    with open(lab / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# --- processes ------------------------------------------------------------------------------


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 2 (comm) may hold spaces and parentheses; the fields after the last ")" are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None  # a zombie holds nothing but its pid entry
    return int(fields[19])


def record_process(pid: int) -> dict[str, int]:
    started = start_time(pid)
    return {"pid": pid, "start_time": started if started is not None else -1}


def is_alive(record: dict[str, int] | None) -> bool:
    """True when the recorded process still runs (same pid and same start time)."""
    if not record:
        return False
    return start_time(record["pid"]) == record["start_time"]


def _reap(pid: int) -> None:
    """Collect the exit status when the process is a child of this Python process."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def kill(record: dict[str, int] | None, *, what: str, timeout: float = 15) -> None:
    """SIGKILL a recorded process of ours (if it is still the same one) and wait for it.

    SIGKILL, not SIGTERM: `unshare` ignores SIGTERM, and with --kill-child its death takes
    the whole PID namespace down.
    """
    if not is_alive(record):
        return
    try:
        os.kill(record["pid"], signal.SIGKILL)
    except ProcessLookupError:
        return

    def gone() -> bool:
        _reap(record["pid"])
        return not is_alive(record)

    wait_until(gone, timeout=timeout, what=f"{what} (pid {record['pid']}) to exit")
