"""SshExecutor's command construction through a real shell and a real `runuser`: an `ssh` on
PATH that runs its remote command on this machine (as sshd runs it through the user's shell)
stands in for the network hop, so quoting, user switching, environment and stdin are what a
real host would see. The db target is then driven through it: SQL, pgBackRest, pgBouncer's
admin console and a restore plan."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest

from runbooks import pitr
from runbooks.checklist import Run
from runbooks.executor import SshExecutor

FAKE_SSH = """#!/bin/sh
# Drop ssh's options up to user@host; run the rest as sshd would: through the login shell.
while [ $# -gt 0 ]; do case "$1" in *@*) shift; break;; *) shift;; esac; done
exec sh -c "$*"
"""


@pytest.fixture
def ssh(tmp_path, monkeypatch):
    fake = tmp_path / "ssh"
    fake.write_text(FAKE_SSH)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/sbin:/usr/bin:/sbin:/bin")
    return SshExecutor(name="fake-host", address="127.0.0.1")


def test_quoting_users_environment_and_stdin(ssh):
    awkward = ["a b", "c'd", 'e"f', "$HOME", "g;h"]
    assert ssh.run(["printf", "%s|", *awkward]).stdout == "|".join(awkward) + "|"
    assert ssh.run(["id", "-un"], user="postgres").stdout.strip() == "postgres"
    secret = "p'a ss$word"
    shown = ssh.run(["sh", "-c", 'printf %s "$PGPASSWORD"'], user="postgres",
                    env={"PGPASSWORD": secret})  # fmt: skip
    assert shown.stdout == secret and secret not in shown.shown
    assert ssh.run(["cat"], input="from stdin\n").stdout == "from stdin\n"
    assert ssh.run(["false"], check=False).returncode == 1
    assert ssh.reachable()


def test_db_target_over_ssh(ssh, backed_db):
    target = dataclasses.replace(backed_db.target, executor=ssh, label="fake-host")
    assert target.psql("SELECT current_user") == "postgres"
    assert target.is_up()
    assert "PgBouncer" in target.bouncer_admin("SHOW VERSION").stdout
    assert '"name":"spark"' in target.pgbackrest("info", "--output=json").stdout
    run = Run("plan")
    plan = pitr.prepare(target, pitr.Request(kind="latest"), run)
    assert plan.primary_up and plan.backup.label in "\n".join(plan.lines)


# sudo as `sudo -n` runs a command: its environment reset (env_reset), so a value reaches the
# command only through what the command itself sets up.
FAKE_SUDO = """#!/bin/sh
[ "$1" = -n ] && shift
exec env -i PATH="$PATH" SUDO_USER=operator "$@"
"""


def _command_lines() -> list[str]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
    return lines


@pytest.mark.parametrize("sudo", [False, True], ids=["root-login", "sudo"])
def test_a_password_reaches_the_command_and_no_command_line(ssh, tmp_path, sudo):
    """While the remote command runs, every process's argv on this machine (ssh, the remote
    shell, sudo, runuser, the command) is sampled: the password is in none of them."""
    fake_sudo = tmp_path / "sudo"
    fake_sudo.write_text(FAKE_SUDO)
    fake_sudo.chmod(0o755)
    ssh = dataclasses.replace(ssh, sudo=sudo)
    secret = "s3cr3t-value-4-ps"
    seen: list[str] = []
    done = threading.Event()

    def sample() -> None:
        deadline = time.monotonic() + 30
        while not done.is_set() and time.monotonic() < deadline:
            seen.extend(line for line in _command_lines() if secret in line)
            done.wait(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        script = 'sleep 1; printf %s "$PGPASSWORD"'
        result = ssh.run(["sh", "-c", script], user="postgres", env={"PGPASSWORD": secret})
    finally:
        done.set()
        sampler.join()
    assert result.stdout == secret
    assert not seen, seen
