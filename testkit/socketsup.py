"""What systemd's socket activation does, for hosts without systemd as PID 1 (this machine):
a supervisor that binds the app's listening socket itself, keeps it for its whole life, and
starts the app with it as fd 3 (LISTEN_FDS=1, LISTEN_PID=<the app's pid>), as
`spark-app.socket` + `spark-app.service` do on an app host. `restart()` stops the app
(SIGTERM, uvicorn's graceful shutdown) and starts a new one on the same socket, as
`systemctl restart spark-app.service` does: connections arriving in between wait in the
socket's backlog and the new process accepts them.

It is a `ServiceControl`, so the rollback runbook drives it as it drives systemd."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from app import migrate
from runbooks.executor import LocalExecutor
from runbooks.releases import AppTarget
from runbooks.services import ProcessService, _children
from sparkops import defaults, envvars, layout
from testkit.stack import DbStack

# The first fd systemd passes (SD_LISTEN_FDS_START).
LISTEN_FD = 3


def listening_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """Bound and listening, as systemd binds a ListenStream= socket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(defaults.APP_LISTEN_BACKLOG)
    return sock


@dataclass
class SocketActivatedService(ProcessService):
    """A ProcessService whose process inherits `sock` as fd 3 at every start."""

    sock: socket.socket | None = field(default=None, repr=False)
    description: str = "local process on a socket held by its supervisor (socket activation)"

    def start(self) -> None:
        assert self.sock is not None, "bind the socket first (listening_socket())"
        fd = self.sock.fileno()
        # Between fork and exec, what systemd sets up: the socket at fd 3, LISTEN_PID the
        # pid that execs the app (a shell's redirection would do, but takes one digit only).
        exec_on_fd3 = (
            f"import os, sys; fd = int(sys.argv[1]); os.dup2(fd, {LISTEN_FD}); "
            f"fd == {LISTEN_FD} or os.close(fd); os.environ['LISTEN_PID'] = str(os.getpid()); "
            "os.execv(sys.argv[2], sys.argv[2:])"
        )
        log = open(self.logfile, "ab") if self.logfile else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", exec_on_fd3, str(fd), *self.argv],
                env={**self._environment(), "LISTEN_FDS": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=(fd,),
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        Path(self.pidfile).write_text(f"{proc.pid}\n")
        _children[proc.pid] = proc

    def start_command(self) -> str:
        return f"LISTEN_FDS=1 {' '.join(shlex.quote(a) for a in self.argv)} {LISTEN_FD}<&..."

    def close(self) -> None:
        """Stop the app and release the socket (systemctl stop spark-app.socket)."""
        self.stop()
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def uvicorn_argv(python: str, keep_alive: int = defaults.APP_KEEP_ALIVE_SECONDS) -> list[str]:
    """The unit's ExecStart, on the inherited socket."""
    return [
        python,
        "-m",
        "app.serve",
        "--factory",
        "app.main:create_app",
        "--fd",
        str(LISTEN_FD),
        "--no-access-log",
        "--timeout-graceful-shutdown",
        str(defaults.APP_GRACEFUL_SHUTDOWN_SECONDS),
        "--timeout-keep-alive",
        str(keep_alive),
    ]


def app_target(stack: DbStack, workdir: Path) -> AppTarget:
    """testkit.localapp's local app host, its app started on a socket this process holds: the
    releases directory at `<workdir>/spark-app`, the real app (uvicorn --fd 3) of the release
    `current` points at. close() the service when done."""
    root = workdir / "spark-app"
    (root / "releases").mkdir(parents=True, exist_ok=True)
    sock = listening_socket()
    port = sock.getsockname()[1]
    service = SocketActivatedService(
        argv=uvicorn_argv(sys.executable),
        pidfile=workdir / "app.pid",
        logfile=workdir / "app.log",
        # No /metrics port: it would be one fixed port for every such app on the machine.
        env={envvars.DATABASE_URL: stack.app_conninfo(), envvars.METRICS_PORT: "0"},
        env_files=[root / "current" / layout.RELEASE_ENV_FILE_NAME],
        sock=sock,
    )
    return AppTarget(
        executor=LocalExecutor(),
        service=service,
        base_url=f"http://127.0.0.1:{port}",
        db_revision=lambda: migrate.current(stack.owner_conninfo()),
        root=str(root),
        label="local-app (socket activated)",
    )
