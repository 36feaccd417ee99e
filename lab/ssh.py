"""The lab's SSH material (one client key pair, a host key per host, known_hosts) and
running commands in a host over SSH with host keys checked."""

from __future__ import annotations

import subprocess
from pathlib import Path

from lab import config
from lab.errors import LabError

CONNECT_TIMEOUT_SECONDS = 3


def _keygen(path: Path, comment: str) -> None:
    proc = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if proc.returncode != 0:
        raise LabError(f"ssh-keygen failed for {path}: {proc.stderr.strip()}")


def ensure_client_key() -> Path:
    key = config.ssh_key()
    if not (key.exists() and key.with_suffix(".pub").exists()):
        key.unlink(missing_ok=True)
        key.with_suffix(".pub").unlink(missing_ok=True)
        key.parent.mkdir(parents=True, exist_ok=True)
        _keygen(key, "sparkops-lab")
    return key


def install_host_keys(root: Path, name: str) -> str:
    """A fresh host key for the host rooted at `root`; returns the public key text."""
    key = root / "etc/ssh/ssh_host_ed25519_key"
    key.unlink(missing_ok=True)
    key.with_suffix(".pub").unlink(missing_ok=True)
    _keygen(key, f"root@{name}")
    client_pub = ensure_client_key().with_suffix(".pub").read_text()
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(client_pub)
    (ssh_dir / "authorized_keys").chmod(0o600)
    pub = key.with_suffix(".pub").read_text().split()
    return f"{pub[0]} {pub[1]}"


def write_known_hosts(entries: dict[tuple[str, str], str]) -> None:
    """`entries` maps (name, ip) to the host's public key."""
    lines = [f"{name},{ip} {key}" for (name, ip), key in sorted(entries.items())]
    config.known_hosts().write_text("\n".join(lines) + "\n")


def ssh_argv(ip: str, *, tty: bool = False) -> list[str]:
    return [
        "ssh",
        "-i",
        str(config.ssh_key()),
        "-o",
        f"UserKnownHostsFile={config.known_hosts()}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={CONNECT_TIMEOUT_SECONDS}",
        "-o",
        "LogLevel=ERROR",
        "-p",
        str(config.SSH_PORT),
        *(["-t"] if tty else []),
        f"{config.SSH_USER}@{ip}",
    ]


def run(ip: str, command: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a shell command in a host; never raises for a non-zero exit."""
    try:
        return subprocess.run(
            [*ssh_argv(ip), command],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(exc.cmd, 255, "", f"timed out after {timeout}s")


def answers(ip: str) -> bool:
    return run(ip, "true", timeout=CONNECT_TIMEOUT_SECONDS + 5).returncode == 0
