"""A copy's server asked to start by a run that stopped before recording its pid (SIGTERM or
a dropped connection in "Start PostgreSQL"): pg_ctl forks the postmaster into a session of
its own, so it comes up anyway. The teardown finds it in the directory the run restored and
stops it before removing anything (it used to remove the directory under it, leaving a
server on the copy's port serving a deleted cluster, found by the lab's interruption
matrix). A server killed under the copy leaves a stale postmaster.pid, which names no
server. A real PostgreSQL 15 in a scratch place made by runbooks.scratch."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from runbooks import scratch
from runbooks.executor import CommandFailed, LocalExecutor
from runbooks.services import PgCtlService
from sparkops import layout
from sparkops.localhost import free_port, make_workdir, service_user
from sparkops.wait import wait_until

OS_USER = service_user() or pwd.getpwuid(os.getuid()).pw_name


def _restored_place(base: Path) -> tuple[scratch.ScratchPlace, PgCtlService]:
    """A scratch place as a copy's run leaves it after "Restore": made by this run, a
    cluster in it (initdb stands for the restore), its server not started yet."""
    executor = LocalExecutor()
    place = scratch.inspect(
        executor, str(base / "copy" / "data"), free_port(), option="--scratch-dir",
        os_user=OS_USER,
    )  # fmt: skip
    scratch.make(executor, place, OS_USER)
    executor.run([f"{layout.POSTGRES_BINDIR}/initdb", "-D", place.resolved, "-A", "trust"],
                 user=OS_USER, timeout=120)  # fmt: skip
    place.wrote = True
    service = PgCtlService(
        executor, place.resolved, f"{place.parent}/log",
        options={"port": str(place.port), "listen_addresses": "127.0.0.1",
                 "unix_socket_directories": place.parent, "fsync": "off"},
        user=OS_USER, timeout=60,
    )  # fmt: skip
    return place, service


@pytest.fixture
def started():
    """Postmaster pids the test started; any still running at its end (the teardown under
    test failed to stop it) are ended by pid (SIGQUIT: their directory may be gone)."""
    pids: list[tuple[int, str]] = []
    yield pids
    for pid, datadir in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if datadir in cmdline:
            os.kill(pid, signal.SIGQUIT)
            wait_until(lambda pid=pid: _ended(pid), timeout=30, what=f"postmaster {pid} to end")


def _start(service: PgCtlService, place: scratch.ScratchPlace, started: list) -> None:
    service.start()
    pid = Path(place.resolved, "postmaster.pid").read_text().split("\n", 1)[0]
    started.append((int(pid), place.resolved))


def _ended(pid: int) -> bool:
    """Gone, or a zombie nobody has reaped yet (a dead process all the same)."""
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_server_started_but_not_recorded_is_stopped_before_its_directory_goes(started):
    base = make_workdir("scratch-start")
    place, service = _restored_place(base)
    place.start_issued = True
    _start(service, place, started)  # the run stopped right after: no record_start
    assert place.started_pid is None and _listening(place.port)
    done = scratch.teardown(LocalExecutor(), place, service.stop)
    assert any("found the copy's server" in line for line in done), done
    assert any("stopped the copy's server" in line for line in done), done
    assert not _listening(place.port)
    assert not (base / "copy").exists(), done


def test_a_start_still_in_flight_is_waited_for_then_stopped(started):
    base = make_workdir("scratch-start-late")
    place, service = _restored_place(base)
    place.start_issued = True
    # The start reaches the host a moment after the teardown began (a pg_ctl whose
    # connection was cut, still forking): the teardown waits for its postmaster.pid.
    outcomes: list[str] = []

    def start() -> None:
        try:
            _start(service, place, started)
            outcomes.append("started")
        except CommandFailed:  # pg_ctl -w saw the server stop under it (the teardown)
            outcomes.append("stopped while pg_ctl waited")

    late = threading.Timer(0.3, start)
    late.start()
    try:
        done = scratch.teardown(LocalExecutor(), place, service.stop)
    finally:
        late.join(timeout=90)
    assert outcomes, "the late start never ended"
    assert any("stopped the copy's server" in line for line in done), done
    assert not _listening(place.port)
    assert not (base / "copy").exists(), done


def test_a_start_that_never_ran_costs_the_settle_wait_and_removes_the_directory():
    base = make_workdir("scratch-start-never")
    place, service = _restored_place(base)
    place.start_issued = True
    began = time.monotonic()
    done = scratch.teardown(LocalExecutor(), place, service.stop)
    took = time.monotonic() - began
    assert not any("server" in line for line in done), done
    assert not (base / "copy").exists(), done
    assert took < scratch.START_SETTLE_SECONDS + 5, took


def test_a_server_killed_under_the_copy_leaves_a_stale_pid_file_and_the_copy_still_goes(started):
    """SIGKILL (the OOM killer) leaves postmaster.pid behind, naming a dead pid: that is no
    server, so the teardown says it had ended and removes the copy (it used to report the
    copy's server "still running" and leave the directory)."""
    base = make_workdir("scratch-start-killed")
    place, service = _restored_place(base)
    place.start_issued = True
    _start(service, place, started)
    scratch.record_start(LocalExecutor(), place)
    pid = place.started_pid
    assert pid is not None and _listening(place.port)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _ended(pid), timeout=30, what=f"{pid} to end")
    assert Path(place.resolved, "postmaster.pid").exists()  # stale: nobody removed it
    done = scratch.teardown(LocalExecutor(), place, service.stop)
    assert any(f"(pid {pid}) had already ended" in line for line in done), done
    assert not (base / "copy").exists(), done


def test_a_pid_file_naming_another_program_is_no_server(started):
    """The pid in a stale file reused by another process (here this test's own) is not
    taken for the copy's server: only a live postgres is."""
    base = make_workdir("scratch-start-reused")
    place, service = _restored_place(base)
    Path(place.resolved, "postmaster.pid").write_text(f"{os.getpid()}\n{place.resolved}\n")
    assert scratch._postmaster_pid(LocalExecutor(), place) == ""
    Path(place.resolved, "postmaster.pid").unlink()
    place.start_issued = True
    _start(service, place, started)
    assert scratch._postmaster_pid(LocalExecutor(), place) == str(started[-1][0])
    done = scratch.teardown(LocalExecutor(), place, service.stop)
    assert any("stopped the copy's server" in line for line in done), done
    assert not (base / "copy").exists(), done


class _HiddenProc(LocalExecutor):
    """Runs each command as `nobody` with /proc mounted `hidepid=2` (in a mount namespace of
    its own): other users' processes are invisible there, as on a hardened host where the
    runbook logs in as a user without root."""

    def _spawn(self, argv, *, user, env, input, timeout):
        wrapped = ["unshare", "-m", "sh", "-c",
                   'mount -t proc -o hidepid=2 proc /proc && exec setpriv --reuid=65534 '
                   '--regid=65534 --clear-groups "$@"', "hidden", *argv]  # fmt: skip
        return super()._spawn(wrapped, user=None, env=env, input=input, timeout=timeout)


def test_a_server_hidden_from_the_user_who_looks_counts_as_running():
    """Unreadable /proc entries are not taken for a dead server: only "No such process"
    is. Else the teardown would remove the copy under its running server."""
    base = make_workdir("scratch-hidden")
    base.chmod(0o755)
    place = scratch.ScratchPlace(str(base), str(base), free_port())
    alive = subprocess.Popen(["sleep", "60"])  # root's: hidden from nobody
    try:
        Path(base, "postmaster.pid").write_text(f"{alive.pid}\n{base}\n")
        Path(base, "postmaster.pid").chmod(0o644)
        assert scratch._postmaster_pid(_HiddenProc(), place) == str(alive.pid)
    finally:
        alive.kill()
        alive.wait()
    assert scratch._postmaster_pid(_HiddenProc(), place) == ""  # gone: "No such process"
