"""The commands a runbook prints for an operator to type (TO UNDO, `to remove it`): over SSH
with a non-root login, every part of a compound command runs under sudo, not only the first
(the removal after a stop ran as the login user and failed on postgres' files)."""

from __future__ import annotations

import os
import shlex
import subprocess

from runbooks.executor import LocalExecutor, SshExecutor
from runbooks.restoring import on_host

COMPOUND = 'echo stopped >> "$OUT"; echo removed >> "$OUT"'


def _remote(printed: str) -> str:
    ssh, _login, remote = shlex.split(printed)
    assert ssh == "ssh"
    return remote


def _run_remote(remote: str, tmp_path) -> tuple[list[str], list[str]]:
    """The remote shell's work, with a `sudo` that records what it was given and runs it."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "sudo").write_text('#!/bin/sh\necho "$*" >> "$SUDO_LOG"\nshift\nexec "$@"\n')
    (shim / "sudo").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}",
           "OUT": str(tmp_path / "out"), "SUDO_LOG": str(tmp_path / "sudo.log")}  # fmt: skip
    subprocess.run(["sh", "-c", remote], env=env, check=True, timeout=10)
    sudo_log = tmp_path / "sudo.log"
    said = sudo_log.read_text().splitlines() if sudo_log.exists() else []
    return (tmp_path / "out").read_text().splitlines(), said


def test_a_sudo_login_runs_the_whole_compound_command_under_sudo(tmp_path):
    executor = SshExecutor(address="10.9.0.10", ssh_user="ops", sudo=True)
    printed = on_host(executor, COMPOUND)
    assert printed.startswith("ssh ops@10.9.0.10 ")
    out, sudo_calls = _run_remote(_remote(printed), tmp_path)
    assert out == ["stopped", "removed"]
    assert len(sudo_calls) == 1 and sudo_calls[0].startswith("-n sh -c ")
    assert "echo stopped" in sudo_calls[0] and "echo removed" in sudo_calls[0]


def test_a_root_login_and_this_machine_run_it_as_it_is(tmp_path):
    root = on_host(SshExecutor(address="10.9.0.10", ssh_user="root"), COMPOUND)
    assert _remote(root) == COMPOUND
    assert on_host(LocalExecutor(), COMPOUND) == COMPOUND
    out, sudo_calls = _run_remote(_remote(root), tmp_path)
    assert out == ["stopped", "removed"] and sudo_calls == []
