"""A throwaway redis-server (Debian's): loopback, free port, temporary directory.

No persistence unless asked (`persistent=True` turns on the append-only file). `stop()` then
`start()` brings it back on the same port, as an outage and recovery would; without
persistence the data is gone after a stop.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from sparkops import programs
from sparkops.wait import wait_until
from testkit.proc import (
    free_port,
    make_workdir,
    popen_as_service_user,
    stop_process,
    tail_file,
)

REDIS_SERVER = "redis-server"

LOG_NAME = "redis.log"


@dataclass
class RedisServer:
    host: str = "127.0.0.1"
    port: int = 0
    persistent: bool = False
    settings: dict[str, str] = field(default_factory=dict)
    # requirepass, as production's Redis has; client() then authenticates with it.
    password: str | None = None
    workdir: Path | None = None
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def logfile(self) -> Path:
        assert self.workdir is not None
        return self.workdir / LOG_NAME

    def _args(self) -> list[str]:
        assert self.workdir is not None
        options = {
            "bind": self.host,
            "port": str(self.port),
            "dir": str(self.workdir),
            "logfile": str(self.logfile),
            "daemonize": "no",
            "protected-mode": "yes",
            "save": "",
            "appendonly": "yes" if self.persistent else "no",
        }
        if self.password:
            options["requirepass"] = self.password
        options.update(self.settings)
        args = [REDIS_SERVER]
        for key, value in options.items():
            args += [f"--{key}", value]
        return args

    def start(self, timeout: float = 10.0) -> RedisServer:
        programs.require(REDIS_SERVER)
        if self.proc is not None and self.proc.poll() is None:
            return self
        if self.workdir is None:
            self.workdir = make_workdir("redis")
        if not self.port:
            self.port = free_port(self.host)
        self.proc = popen_as_service_user(
            self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(self._answers, timeout=timeout, what=f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited:\n{self.log_tail()}")
        return self.client().ping()

    def client(self, **kwargs) -> redis.Redis:
        kwargs.setdefault("socket_timeout", 5)
        if self.password:
            kwargs.setdefault("password", self.password)
        return redis.Redis(host=self.host, port=self.port, **kwargs)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Stop the server we started (by its pid); the port and directory are kept."""
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def remove(self) -> None:
        self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def log_tail(self, lines: int = 40) -> str:
        return tail_file(self.workdir, LOG_NAME, lines)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.remove()
