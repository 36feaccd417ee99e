"""The apt proxy: Debian's apt-cacher-ng on the bridge address, started and stopped by us.

Its cache lives in the image cache directory, so packages fetched once are served locally
on every later `lab up`; its configuration and logs live in the lab directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from typing import Any

from lab import cgroup, config, state
from lab.errors import LabError
from sparkops.wait import wait_until

START_TIMEOUT_SECONDS = 15


def url() -> str:
    return f"http://{config.BRIDGE_IP}:{config.PROXY_PORT}"


def apt_conf() -> str:
    return f'Acquire::http::Proxy "{url()}";\n'


def _listening() -> bool:
    try:
        with socket.create_connection((config.BRIDGE_IP, config.PROXY_PORT), timeout=0.5):
            return True
    except OSError:
        return False


def ensure(lab_state: dict[str, Any]) -> None:
    """Start the proxy unless ours is already running; records it in the state first."""
    if state.is_alive(lab_state.get("proxy")) and _listening():
        return
    binary = shutil.which("apt-cacher-ng") or "/usr/sbin/apt-cacher-ng"
    if not os.path.exists(binary):
        raise LabError("apt-cacher-ng is not installed: apt-get install -y apt-cacher-ng")
    if _listening():
        raise LabError(
            f"something else already listens on {config.BRIDGE_IP}:{config.PROXY_PORT}; "
            "stop it or run `sparkops lab down`"
        )
    home = config.lab_dir() / "proxy"
    (home / "conf").mkdir(parents=True, exist_ok=True)
    (home / "log").mkdir(parents=True, exist_ok=True)
    cache = config.proxy_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    (home / "conf/acng.conf").write_text(
        "# managed by Spark Ops lab\n"
        f"CacheDir: {cache}\n"
        f"LogDir: {home / 'log'}\n"
        f"Port: {config.PROXY_PORT}\n"
        f"BindAddress: {config.BRIDGE_IP}\n"
        f"SocketPath: {home / 'socket'}\n"
        "ForeGround: 1\n"
        "ExThreshold: 4\n"
        "ReportPage: acng-report.html\n"
    )
    log = open(home / "log/stdout.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        # Started inside its own cgroup, so a teardown after a lost state file still finds it.
        proxy_cgroup = cgroup.create(cgroup.path(cgroup.PROXY))
        proc = subprocess.Popen(
            [
                "sh",
                "-c",
                'echo $$ > "$1/cgroup.procs" && exec "$2" -c "$3"',
                "sh",
                str(proxy_cgroup),
                binary,
                str(home / "conf"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()
    lab_state["proxy"] = state.record_process(proc.pid)
    state.save(lab_state)
    try:
        wait_until(_listening, timeout=START_TIMEOUT_SECONDS, what="apt-cacher-ng to listen")
    except TimeoutError as exc:
        raise LabError(f"apt-cacher-ng did not start; see {home / 'log'}") from exc


def stop(lab_state: dict[str, Any]) -> None:
    state.kill(lab_state.get("proxy"), what="apt-cacher-ng")
    lab_state["proxy"] = None
    cgroup.remove(cgroup.path(cgroup.PROXY))
