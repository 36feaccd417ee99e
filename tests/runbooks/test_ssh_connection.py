"""How SshExecutor's commands reach a host: one multiplexed connection per host, and a
command that ends on the host when the runbook that started it is gone (its held stdin
reaches EOF), whichever way it went. A `ssh` on PATH that runs the remote side on this
machine stands in for the network hop (tests/lab shows the real one)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from runbooks import executor as executor_module
from runbooks.executor import SshExecutor, run_group
from sparkops import defaults
from sparkops.wait import wait_until

# Unlike sshd, this `ssh` outlives the runbook when the runbook is killed (as a real one
# does: it runs in its own process group), and it stays the remote shell's parent: only the
# EOF of its stdin can tell the remote side that the runbook is gone.
LINGERING_SSH = """#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in *@*) shift; break;; *) shift;; esac; done
sh -c "$*"
"""


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch) -> Path:
    fake = tmp_path / "ssh"
    fake.write_text(LINGERING_SSH)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/sbin:/usr/bin:/sbin:/bin")
    return tmp_path


def test_a_held_stdin_stays_open_until_the_command_ends():
    script = (
        "read line; echo $line; if timeout 0.5 cat >/dev/null; then echo eof; else echo open; fi"
    )
    rc, out, _ = run_group(["sh", "-c", script], input="hi\n", timeout=30, hold_stdin=True)
    assert (rc, out.split()) == (0, ["hi", "open"])
    rc, out, _ = run_group(["sh", "-c", script], input="hi\n", timeout=30)
    assert (rc, out.split()) == (0, ["hi", "eof"])


def _runbook(pidfile: Path) -> subprocess.Popen:
    """A runbook process whose command on the "host" records its pid and sleeps."""
    code = textwrap.dedent(f"""
        from runbooks.executor import SshExecutor
        SshExecutor(name="fake-host", address="127.0.0.1").run(
            ["sh", "-c", "echo $$ > {pidfile}; exec sleep 300"], timeout=600)
    """)
    return subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[2])


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_command_ends_on_the_host_when_its_runbook_is_gone(fake_ssh, tmp_path, sig):
    pidfile = tmp_path / "pid"
    runbook = _runbook(pidfile)
    try:
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=30,
                   what="the remote command to start")  # fmt: skip
        pid = int(pidfile.read_text())
        assert _alive(pid)
        runbook.send_signal(sig)
        runbook.wait(timeout=30)
        wait_until(lambda: not _alive(pid), timeout=10, what="the remote command to end")
    finally:
        if runbook.poll() is None:
            runbook.kill()
            runbook.wait()
        if pidfile.exists() and _alive(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


@pytest.fixture
def short_dir():
    # pytest's tmp_path is too long a place for a unix socket.
    path = Path(tempfile.mkdtemp(prefix="sk", dir="/tmp"))
    yield path
    shutil.rmtree(path)


def test_commands_share_a_connection_per_host_and_login(tmp_path, short_dir, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(short_dir))
    known = tmp_path / "known_hosts"
    known.write_text("db,10.0.0.1 ssh-ed25519 AAAAone\n")
    ssh = SshExecutor(name="db", address="10.0.0.1", known_hosts=known)
    argv = ssh.ssh_argv(multiplex=True)
    options = dict(a.split("=", 1) for a in argv if "=" in a and not a.startswith("root@"))
    assert options["ControlMaster"] == "auto"
    assert options["ControlPersist"] == str(defaults.SSH_CONTROL_PERSIST_SECONDS)
    path = Path(options["ControlPath"])
    assert path.parent == short_dir / f"sparkops-ssh-{os.getuid()}"
    assert path.parent.stat().st_mode & 0o777 == 0o700
    # Same host and login: the same connection; another login or a rebuilt host (new host
    # keys at the same address) never reuses it.
    assert ssh.ssh_argv(multiplex=True) == argv
    other_user = SshExecutor(name="db", address="10.0.0.1", ssh_user="ops", known_hosts=known)
    assert f"ControlPath={path}" not in other_user.ssh_argv(multiplex=True)
    known.write_text("db,10.0.0.1 ssh-ed25519 AAAAtwo\n")
    assert f"ControlPath={path}" not in ssh.ssh_argv(multiplex=True)


def test_no_shared_connection_where_the_host_could_not_tell_the_runbook_is_gone(
    tmp_path, monkeypatch
):
    ssh = SshExecutor(name="db", address="10.0.0.1")
    # Not asked for (a command that reads input: its stdin is the input, not held open).
    assert ssh.ssh_argv()[-3:-1] == ["-o", "ControlPath=none"]
    # A socket directory others could reach is not used.
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    shared = tmp_path / f"sparkops-ssh-{os.getuid()}"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    assert executor_module.control_dir() is None
    assert "ControlPath=none" in ssh.ssh_argv(multiplex=True)
    # Turned off for this executor.
    shared.chmod(0o700)
    off = SshExecutor(name="db", address="10.0.0.1", multiplex=False)
    assert "ControlPath=none" in off.ssh_argv(multiplex=True)
    # A directory too deep for a unix socket's path (107 bytes): no socket, no failure.
    assert len(str(shared)) > 60
    assert "ControlPath=none" in ssh.ssh_argv(multiplex=True)


def test_the_remote_script_is_read_whole_before_it_runs():
    script = SshExecutor(name="db", address="10.0.0.1").remote_command(["true"], None, None)
    lines = script.strip().splitlines()
    # One brace group (parsed to its end before anything runs, so the watcher's `cat` finds
    # nothing of the script on stdin), left by `exit`, not by reading on.
    assert lines[0] == "{" and lines[-1] == "}"
    assert lines[-2].startswith("exit ")
    # The command itself does not hold the watched stdin.
    assert "true </dev/null 4<&-" in script
