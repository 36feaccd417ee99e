"""A runbook's restart of systemd units (runbooks.services.SystemdService) first flushes
systemd's start rate limit, in the same command: a rollback right after a few quick restarts
is not refused as "attempted too often" (tests/lab/test_runbooks_e2e.py shows it on a host)."""

from __future__ import annotations

import os
import shlex

import pytest

from runbooks.executor import CommandFailed, Executor, LocalExecutor
from runbooks.services import SystemdService
from sparkops import layout


class _Recording(Executor):
    def __init__(self) -> None:
        super().__init__()
        self.ran: list[list[str]] = []

    def _spawn(self, argv, *, user, env, input, timeout):
        self.ran.append(list(argv))
        return 0, "", ""


def test_a_restart_resets_the_start_limit_of_its_units_and_socket_then_restarts():
    executor = _Recording()
    units = (layout.APP_SERVICE, layout.OUTBOX_SERVICE)
    SystemdService(executor, units, also_reset=(layout.APP_SOCKET,)).restart()
    (argv,) = executor.ran  # one command: one round trip on a host
    assert argv[:2] == ["sh", "-c"]
    reset, restart = (shlex.split(part.replace("2>/dev/null", "")) for part in argv[2].split(";"))
    assert reset[:2] == ["systemctl", "reset-failed"]
    assert set(units) | {layout.APP_SOCKET} <= set(reset)
    assert restart == ["systemctl", "restart", *units]  # the socket itself is not restarted


def _stub_systemctl(directory, reset_rc: int, restart_rc: int) -> None:
    stub = directory / "systemctl"
    stub.write_text(
        "#!/bin/sh\n"
        f'case "$1" in reset-failed) echo "no such unit" >&2; exit {reset_rc} ;; '
        f'restart) echo "restart $*" >&2; exit {restart_rc} ;; esac\n'
    )
    stub.chmod(0o755)


def test_the_restart_decides_the_outcome_not_the_reset(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    _stub_systemctl(tmp_path, reset_rc=1, restart_rc=0)  # a unit that is not loaded: fine
    SystemdService(LocalExecutor(), (layout.APP_SERVICE,), also_reset=("gone.socket",)).restart()
    _stub_systemctl(tmp_path, reset_rc=0, restart_rc=1)
    with pytest.raises(CommandFailed, match="restart"):
        SystemdService(LocalExecutor(), (layout.APP_SERVICE,)).restart()
