"""SshExecutor's command construction through a real shell and a real `runuser`: an `ssh` on
PATH that runs its remote command on this machine (as sshd runs it through the user's shell)
stands in for the network hop, so quoting, user switching, environment and stdin are what a
real host would see. The db target is then driven through it: SQL, pgBackRest, pgBouncer's
admin console and a restore plan."""

from __future__ import annotations

import dataclasses

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
