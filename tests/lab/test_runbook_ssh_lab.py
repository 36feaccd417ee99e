"""The runbooks' SSH to a real host (runbooks.executor.SshExecutor against a lab host's
sshd): commands share one connection, and a command ends on the host when the runbook that
started it is interrupted or killed, multiplexed or not (tests/runbooks/test_ssh_connection.py
has the logic without a network)."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from runbooks import sites
from sparkops.wait import wait_until

pytestmark = [pytest.mark.lab]

REPO = Path(__file__).parents[2]


def _executor(lab_hosts):
    return sites.ssh_executor(lab_hosts[0]["name"], sites.load_inventory())


def test_commands_to_a_host_share_one_connection(lab_hosts):
    executor = _executor(lab_hosts)
    executor.run(["true"])
    argv = executor.ssh_argv(multiplex=True)
    check = subprocess.run([*argv[:-1], "-O", "check", argv[-1]], capture_output=True,
                           text=True, timeout=30)  # fmt: skip
    assert check.returncode == 0 and "Master running" in check.stderr, check
    # The same sshd process serves every command of the connection: the parent of the
    # remote shell that runs `timeout` that runs the command.
    sshd = 'shell=$(cut -d" " -f4 /proc/$PPID/stat); cut -d" " -f4 /proc/$shell/stat'
    parents = {executor.run(["sh", "-c", sshd]).stdout.strip() for _ in range(3)}
    assert len(parents) == 1, parents
    (pid,) = parents
    assert executor.run(["cat", f"/proc/{pid}/comm"]).stdout.strip() == "sshd"


def _running(executor, tag: str) -> bool:
    """The command that recorded its pid in /tmp/<tag>.pid still runs (under its tag)."""
    probe = f'tr "\\0" " " < /proc/$(cat /tmp/{tag}.pid)/cmdline | grep -q "^{tag} "'
    return executor.run(["sh", "-c", probe], check=False).ok


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_command_ends_on_the_host_when_its_runbook_is_gone(lab_hosts, sig):
    executor = _executor(lab_hosts)
    tag = f"sparkops-test-{uuid.uuid4().hex[:12]}"
    # The runbook's own process: SIGTERM is an interruption (the runbooks raise on it).
    code = (
        "import signal\n"
        "from runbooks import sites\n"
        "def stop(*_): raise KeyboardInterrupt\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        f"ex = sites.ssh_executor({lab_hosts[0]['name']!r}, sites.load_inventory())\n"
        f"ex.run(['bash', '-c', 'echo $$ > /tmp/{tag}.pid; exec -a {tag} sleep 300'],"
        " timeout=600)\n"
    )
    runbook = subprocess.Popen([sys.executable, "-c", code], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until(lambda: _running(executor, tag), timeout=60, what="the command on the host")
        runbook.send_signal(sig)
        runbook.wait(timeout=30)
        wait_until(lambda: not _running(executor, tag), timeout=15, what="the command to end")
    finally:
        if runbook.poll() is None:
            runbook.kill()
            runbook.wait()
        if _running(executor, tag):
            executor.run(["sh", "-c", f"kill -KILL $(cat /tmp/{tag}.pid)"], check=False)
        executor.run(["rm", "-f", f"/tmp/{tag}.pid"], check=False)
