"""Where a runbook's commands run: this machine (optionally as another user) or a host over SSH.

Runbook logic talks only to an `Executor`, so the same restore runs against a throwaway
cluster in the tests and against a lab or production host. Environment values (passwords)
are passed to the process, never shown: `display()` masks them, and only the masked form
reaches logs and evidence.
"""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


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


@dataclass
class Executor:
    """Base: runs argv lists; subclasses say where."""

    name: str = "local"
    recorders: list[Recorder] = field(default_factory=list)

    def _spawn(self, argv, *, user, env, input, timeout) -> subprocess.CompletedProcess:
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
            proc = self._spawn(argv, user=user, env=env, input=input, timeout=timeout)
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired:
            rc, out, err = 124, "", f"timed out after {timeout:.0f}s"
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
        return subprocess.run(
            argv,
            env={**base, **(env or {})},
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )


@dataclass
class SshExecutor(Executor):
    """A host over SSH with the inventory's key and known_hosts (host keys checked)."""

    address: str = ""
    ssh_user: str = "root"
    key: Path | None = None
    known_hosts: Path | None = None
    port: int = 22
    connect_timeout: int = 5
    sudo: bool = False  # a non-root login (production's `--sudo`): commands run via sudo -n

    def ssh_argv(self) -> list[str]:
        argv = [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={self.connect_timeout}",
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
        return [*argv, f"{self.ssh_user}@{self.address}"]

    def remote_command(self, argv, user, env) -> str:
        command = " ".join(shlex.quote(a) for a in argv)
        if env:
            # Values go through the remote shell's environment, not the visible argv of ssh.
            exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
            command = f"export {exports}; {command}"
        if user and user != "root":
            # From /: the login's home (/root) is not readable by the other user.
            command = f"runuser -u {shlex.quote(user)} -- sh -c {shlex.quote('cd / && ' + command)}"
        if self.sudo:
            command = f"sudo -n sh -c {shlex.quote(command)}"
        return command

    def _spawn(self, argv, *, user, env, input, timeout):
        # The script goes on stdin when no input is given, so secrets stay off ssh's argv.
        script = self.remote_command(argv, user, env)
        if input is None:
            return subprocess.run(
                [*self.ssh_argv(), "sh -s"],
                input=script + "\n",
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        return subprocess.run(
            [*self.ssh_argv(), script],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def reachable(self) -> bool:
        return self.run(["true"], check=False, timeout=self.connect_timeout + 5).ok
