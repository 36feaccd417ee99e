"""Where a runbook's commands run: this machine (optionally as another user) or a host over SSH.

Runbook logic talks only to an `Executor`, so the same restore runs against a throwaway
cluster in the tests and against a lab or production host. Environment values (passwords)
are passed to the process, never shown: `display()` masks them, and only the masked form
reaches logs and evidence.

Every command is bounded where it runs, not only here: a local command runs in its own
process group, killed as a whole when its deadline passes or the runbook is interrupted; a
remote command runs under the host's own `timeout`, and is also ended when the runbook that
started it goes away (its stdin, held open by the runbook, reaches EOF), so a dropped
connection or an interrupted or killed runbook cannot leave a `PAUSE` or a `pgbackrest
restore` running on the host. Commands to a host share one SSH connection.
"""

from __future__ import annotations

import hashlib
import math
import os
import pwd
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sparkops import defaults

EXIT_TIMED_OUT = 124  # as coreutils' timeout reports it
KILL_AFTER_SECONDS = 5
# This side waits this much longer than the command's deadline, so the host ends the command
# itself (and says so) before this side gives up on the connection.
LOCAL_GRACE_SECONDS = KILL_AFTER_SECONDS + 10


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    shown: str  # the command as logged (secrets masked)
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def timed_out(self) -> bool:
        return self.returncode == EXIT_TIMED_OUT

    def output(self) -> str:
        return (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).strip()


class CommandFailed(RuntimeError):
    def __init__(self, result: Result):
        self.result = result
        tail = "\n".join(result.output().splitlines()[-15:])
        super().__init__(f"`{result.shown}` exited {result.returncode}:\n{tail}")


Recorder = Callable[[Result], None]


def display(argv: list[str], env: dict[str, str] | None, user: str | None) -> str:
    shown = " ".join(shlex.quote(a) for a in argv)
    if env:
        shown = " ".join(f"{k}=***" for k in env) + " " + shown
    if user:
        shown = f"[{user}] {shown}"
    return shown


def run_group(
    argv: list[str], *, input: str | None, timeout: float, hold_stdin: bool = False, **popen
) -> tuple[int, str, str]:
    """Run `argv` in a process group of its own; on its deadline, or when this process is
    interrupted (a signal handler raising), end the whole group: TERM, then KILL.
    `hold_stdin`: `input` is written to the command's stdin, which then stays open until the
    command has ended: its EOF tells an `ssh` (and the host behind it) that this process is
    gone, even when it was killed with SIGKILL (the kernel closes the pipe)."""
    from runbooks.checklist import deferred  # lazy: the checklist imports this module

    proc: subprocess.Popen | None = None
    held: int | None = None
    try:
        # An interruption must not land inside Popen: the child would run on with nobody
        # holding its pid. Deferred, it is raised here, with `proc` known and ended below.
        with deferred():
            if hold_stdin:
                reader, held = os.pipe()  # not inherited by other children (PEP 446)
                stdin: int = reader
            else:
                stdin = subprocess.PIPE if input is not None else subprocess.DEVNULL
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                    **popen,
                )
            finally:
                if hold_stdin:
                    os.close(reader)
        if held is not None:
            _write_all(held, input or "")
            input = None
        out, err = proc.communicate(input, timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        _end_group(proc)
        out, err = proc.communicate()
        return EXIT_TIMED_OUT, out, (err or "") + f"\ntimed out after {timeout:.0f}s"
    except BaseException:
        if proc is not None:
            _end_group(proc)
        raise
    finally:
        if held is not None:
            os.close(held)


def _write_all(fd: int, text: str) -> None:
    data = text.encode()
    try:
        while data:
            data = data[os.write(fd, data) :]
    except BrokenPipeError:
        pass  # the command ended without reading it all: its exit status says why


def _end_group(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, KILL_AFTER_SECONDS), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Executor:
    """Base: runs argv lists; subclasses say where."""

    name: str = "local"
    recorders: list[Recorder] = field(default_factory=list)

    def _spawn(self, argv, *, user, env, input, timeout) -> tuple[int, str, str]:
        raise NotImplementedError

    def run(
        self,
        argv: list[str],
        *,
        user: str | None = None,
        env: dict[str, str] | None = None,
        input: str | None = None,
        timeout: float = 120.0,
        check: bool = True,
    ) -> Result:
        start = time.monotonic()
        try:
            rc, out, err = self._spawn(argv, user=user, env=env, input=input, timeout=timeout)
        except FileNotFoundError as exc:
            rc, out, err = 127, "", str(exc)
        result = Result(
            tuple(argv),
            display(argv, env, user),
            rc,
            out or "",
            err or "",
            time.monotonic() - start,
        )
        for record in self.recorders:
            record(result)
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def shell(self, script: str, **kwargs) -> Result:
        return self.run(["sh", "-c", script], **kwargs)

    def exists(self, path: str) -> bool:
        return self.run(["test", "-e", path], check=False).ok

    def read_text(self, path: str) -> str | None:
        result = self.run(["cat", path], check=False)
        return result.stdout if result.ok else None


@dataclass
class LocalExecutor(Executor):
    """This machine; `user=` drops to that user (PostgreSQL tools refuse root)."""

    name: str = "local"

    def _spawn(self, argv, *, user, env, input, timeout):
        kwargs: dict = {}
        if user and os.geteuid() == 0 and user != "root":
            entry = pwd.getpwnam(user)
            kwargs.update(user=user, group=entry.pw_gid, extra_groups=[], cwd="/")
            base = {"HOME": entry.pw_dir, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        else:
            base = dict(os.environ)
        return run_group(argv, input=input, timeout=timeout, env={**base, **(env or {})}, **kwargs)


# The remote side of every SSH command: the command runs under the host's `timeout` (which
# ends its whole process group), and watchers end it when the runbook that started it is
# gone. The script arrives on stdin, which the runbook then holds open until the command
# has ended (run_group's hold_stdin): its EOF means the runbook's ssh is gone (interrupted,
# killed, or the connection dropped), on a connection of its own or multiplexed. Without
# that (a command that reads input), $PPID, sshd's session process, going away does (it
# exits when the connection drops; such commands get a connection of their own).
# The script is one brace group, so the shell has read all of it before anything runs and
# the EOF watcher's `cat` finds nothing of it left on stdin; it ends with `exit` rather than
# reading on.
# With a non-root login the whole script runs under `sudo -n sh -s`: the session is then the
# first ancestor that is not sudo (sudo's monitor process included).
# Environment values (passwords) are exported by the script itself, which arrives on stdin:
# they reach the command's environment and no process's argv (`ps`) or sudo's log.
_REMOTE_WRAPPER = """\
{{
sparkops_session=$PPID
while [ "$(cat /proc/$sparkops_session/comm 2>/dev/null)" = sudo ]; do
  sparkops_session=$(cut -d' ' -f4 /proc/$sparkops_session/stat)
done
{exports}
{stdin_setup}
timeout -k {kill_after} {seconds} {command} {stdin} &
sparkops_cmd=$!
( while kill -0 "$sparkops_session" 2>/dev/null && kill -0 "$sparkops_cmd" 2>/dev/null; do
    sleep 1
  done
  kill -TERM "$sparkops_cmd" 2>/dev/null ) </dev/null >/dev/null 2>&1 &
{eof_watch}
wait "$sparkops_cmd"
sparkops_rc=$?
{eof_unwatch}
exit $sparkops_rc
}}
"""
_EOF_WATCH = """\
( cat <&4 >/dev/null 2>&1; kill -TERM "$sparkops_cmd" 2>/dev/null ) </dev/null >/dev/null 2>&1 &
sparkops_eof=$!"""
# A held stdin must take the whole script at once (a pipe holds 64 KiB on Linux): a longer
# one goes the old way, written and closed, on a connection of its own.
_HELD_SCRIPT_MAX_BYTES = 60_000
# A unix socket's path holds 107 bytes, and ssh binds the master's at the path plus a
# 17-byte temporary suffix first.
_CONTROL_PATH_MAX_BYTES = 107 - 17


def control_dir() -> Path | None:
    """Where the multiplexing sockets live: a directory of this user's, mode 0700 (a socket
    there is a logged-in session to a host). None when it cannot be made safe."""
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp")
    path = base / f"sparkops-ssh-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
    except OSError:
        return None
    if not path.is_dir() or path.is_symlink() or info.st_uid != os.getuid():
        return None
    if info.st_mode & 0o077:
        return None
    return path


@dataclass
class SshExecutor(Executor):
    """A host over SSH with the inventory's key and known_hosts (host keys checked).

    Commands share one connection per host (OpenSSH multiplexing, kept
    `SSH_CONTROL_PERSIST_SECONDS` after the last one): a command is then a channel on it,
    about 10 ms, not a new connection and key exchange (0.2 s on the lab, more across a
    network), and a restore runs some 30 commands."""

    address: str = ""
    ssh_user: str = "root"
    key: Path | None = None
    known_hosts: Path | None = None
    port: int = 22
    connect_timeout: int = 5
    sudo: bool = False  # a non-root login (production's `--sudo`): commands run via sudo -n
    multiplex: bool = True

    def ssh_argv(self, *, multiplex: bool = False) -> list[str]:
        argv = [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={self.connect_timeout}",
            # A host that stops answering is noticed in 15 s, not at the command's deadline.
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
            "-o",
            "LogLevel=ERROR",
            "-p",
            str(self.port),
        ]
        if self.key:
            argv += ["-i", str(self.key)]
        if self.known_hosts:
            argv += [
                "-o",
                f"UserKnownHostsFile={self.known_hosts}",
                "-o",
                "StrictHostKeyChecking=yes",
            ]
        argv += self._control_options(multiplex)
        return [*argv, f"{self.ssh_user}@{self.address}"]

    def _control_options(self, multiplex: bool) -> list[str]:
        directory = control_dir() if multiplex and self.multiplex else None
        path = directory / self._control_name() if directory else None
        if path is None or len(str(path).encode()) > _CONTROL_PATH_MAX_BYTES:
            # Explicitly not: a ControlMaster in the user's ssh_config would share a
            # connection that the $PPID watcher cannot see go away.
            return ["-o", "ControlPath=none"]
        return [
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={path}",
            "-o",
            f"ControlPersist={defaults.SSH_CONTROL_PERSIST_SECONDS}",
        ]

    def _control_name(self) -> str:
        # One connection per login, key and host key: a host rebuilt at the same address
        # (a new lab) has new host keys, so it never gets a connection made to the old one.
        identity = hashlib.sha256()
        for part in (self.ssh_user, self.address, str(self.port), str(self.key), self.sudo):
            identity.update(f"{part}\0".encode())
        if self.known_hosts:
            try:
                identity.update(Path(self.known_hosts).read_bytes())
            except OSError:
                identity.update(b"unreadable")
        return identity.hexdigest()[:24]

    def remote_command(
        self, argv, user, env, timeout: float = 120.0, with_input: bool = False
    ) -> str:
        command = " ".join(shlex.quote(a) for a in argv)
        if env and with_input:
            raise ValueError("SshExecutor: env and input together would put env on argv")
        # Values go through the remote shell's environment (runuser keeps it), exported by
        # the script that arrives on stdin: never on an argv on either side.
        exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in (env or {}).items())
        if user and user != "root":
            # From /: the login's home (/root) is not readable by the other user.
            command = f"runuser -u {shlex.quote(user)} -- sh -c {shlex.quote('cd / && ' + command)}"
        if self.sudo and with_input:
            # The script is ssh's argument here (stdin is the input): sudo for the command
            # alone; it carries no environment values (refused above).
            command = f"sudo -n sh -c {shlex.quote(command)}"
        # A background command's stdin is /dev/null unless redirected: with `input`, the
        # command reads the session's stdin (fd 3); the `sh -s` form has the script there,
        # and then the watcher's EOF (fd 4, which the command does not keep).
        return _REMOTE_WRAPPER.format(
            kill_after=KILL_AFTER_SECONDS,
            seconds=max(1, math.ceil(timeout)),
            command=command,
            exports=exports or ":",
            stdin_setup="exec 3<&0" if with_input else "exec 4<&0",
            stdin="<&3" if with_input else "</dev/null 4<&-",
            eof_watch=":" if with_input else _EOF_WATCH,
            eof_unwatch=":" if with_input else 'kill "$sparkops_eof" 2>/dev/null',
        )

    def _spawn(self, argv, *, user, env, input, timeout):
        script = self.remote_command(argv, user, env, timeout, with_input=input is not None)
        local_timeout = timeout + LOCAL_GRACE_SECONDS
        if input is None:
            # The script goes on stdin, so secrets stay off every argv (ssh's, sshd's, sudo's).
            shell = "sudo -n sh -s" if self.sudo else "sh -s"
            held = len(script.encode()) < _HELD_SCRIPT_MAX_BYTES
            return run_group(
                [*self.ssh_argv(multiplex=held), shell],
                input=script + "\n",
                timeout=local_timeout,
                hold_stdin=held,
            )
        return run_group([*self.ssh_argv(), script], input=input, timeout=local_timeout)

    def reachable(self) -> bool:
        return self.run(["true"], check=False, timeout=self.connect_timeout + 5).ok
