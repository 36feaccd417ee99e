#!/usr/bin/python3
"""HAProxy's runtime API, for draining an app host before it restarts: the protocol (pure,
unit-tested) and a small command line that runs on the load balancer host itself.

The runtime API is a unix socket (`stats socket ... level admin`, never on the network): one
command a line, the answer up to an empty line. What a switch does, per app host:

    drain: `set server app/<host> state drain` (no new requests; those in flight go on), then
           poll `show stat` until the server's current sessions (`scur`) are 0, by a deadline
    (the app host restarts, switches, passes its own health gate)
    ready: `set server app/<host> state ready`, then poll until HAProxy's health check says
           UP (so the next host is drained only once this one takes requests again)

Standard library only, importing nothing of ours: the deploy uploads this very file to every
lb host as `spark-lb-server` (deploys/haproxy.py), the deploy's switch and `sparkops rollback`
run it there over SSH (deploys/app.py, runbooks/balancer.py).

    spark-lb-server drain|ready|status SERVER --backend app --socket PATH [--timeout S]

Exit 0 when the server reached the state by the deadline, 1 when not (a line on stderr
says what was seen), 2 on bad usage or an unreachable socket.
"""

from __future__ import annotations

import argparse
import csv
import io
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

STATES = ("ready", "drain", "maint")


class RuntimeError_(Exception):
    """HAProxy answered something other than what a command expects."""


@dataclass(frozen=True)
class Server:
    backend: str
    name: str
    status: str  # UP, DOWN, DRAIN, MAINT, "UP 1/2", "no check", ...
    sessions: int  # scur: sessions (requests in flight, with HTTP) on it now
    admin_drain: bool  # weight 0 (drained by us, or by the runtime API)
    total: int = 0  # stot: sessions it has had since HAProxy started

    @property
    def up(self) -> bool:
        """HAProxy's check finds it healthy (it takes requests when not drained)."""
        return self.status.split(" ")[0] in ("UP", "DRAIN", "no")


def set_state(backend: str, server: str, state: str) -> str:
    """The command that puts a server in `state` (ready, drain, maint)."""
    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r}")
    for part in (backend, server):
        if not part or any(c in part for c in " /;\n"):
            raise ValueError(f"{part!r} is not a backend or server name")
    return f"set server {backend}/{server} state {state}"


SHOW_STAT = "show stat"


def parse_stat(text: str) -> list[Server]:
    """`show stat` (CSV, its header line starting with '# ') as servers (not FRONTEND/BACKEND)."""
    text = text.lstrip()
    if not text.startswith("# "):
        raise RuntimeError_(f"not a `show stat` answer: {text[:120]!r}")
    rows = csv.DictReader(io.StringIO(text[2:]))
    found = []
    for row in rows:
        name = row.get("svname") or ""
        if name in ("FRONTEND", "BACKEND", ""):
            continue
        found.append(
            Server(
                backend=row["pxname"],
                name=name,
                status=row.get("status") or "",
                sessions=int(row.get("scur") or 0),
                admin_drain=(row.get("weight") or "") == "0",
                total=int(row.get("stot") or 0),
            )
        )
    return found


def find(servers: list[Server], backend: str, server: str) -> Server:
    for s in servers:
        if s.backend == backend and s.name == server:
            return s
    raise RuntimeError_(f"HAProxy has no server {backend}/{server}")


def others_up(servers: list[Server], backend: str, server: str) -> list[Server]:
    """The backend's other servers that take requests (UP by their check, not drained)."""
    return [
        s
        for s in servers
        if s.backend == backend and s.name != server and s.status.split(" ")[0] == "UP"
    ]


def check_answer(command: str, answer: str) -> None:
    """`set server` answers nothing when it worked, a message when it did not."""
    if answer.strip():
        raise RuntimeError_(f"{command!r}: {answer.strip()}")


Send = Callable[[str], str]


def unix_sender(path: str, timeout: float = 5.0) -> Send:
    """Send one command over the runtime socket (a connection each) and return the answer."""

    def send(command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    return send


def status(send: Send, backend: str, server: str) -> Server:
    return find(parse_stat(send(SHOW_STAT)), backend, server)


def _poll(
    send: Send,
    backend: str,
    server: str,
    done: Callable[[Server], bool],
    timeout: float,
    interval: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> tuple[bool, Server]:
    deadline = clock() + timeout
    while True:
        seen = status(send, backend, server)
        if done(seen):
            return True, seen
        if clock() >= deadline:
            return False, seen
        sleep(interval)


def drain(
    send: Send,
    backend: str,
    server: str,
    timeout: float,
    interval: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[bool, Server]:
    """Stop new requests to the server, wait until none is in flight (by the deadline).

    Not when no other server of the backend is UP: HAProxy would answer 503 to every request
    meanwhile (one app host: its socket held across the restart serves better); the server is
    left as it is and the answer is (True, it, unchanged)."""
    if not others_up(parse_stat(send(SHOW_STAT)), backend, server):
        return True, status(send, backend, server)
    command = set_state(backend, server, "drain")
    check_answer(command, send(command))
    return _poll(send, backend, server, lambda s: s.sessions == 0, timeout, interval, clock, sleep)


def ready(
    send: Send,
    backend: str,
    server: str,
    timeout: float,
    interval: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[bool, Server]:
    """Let requests to the server again, wait until its health check finds it UP."""
    command = set_state(backend, server, "ready")
    check_answer(command, send(command))
    return _poll(
        send,
        backend,
        server,
        lambda s: s.status.split(" ")[0] == "UP" and not s.admin_drain,
        timeout,
        interval,
        clock,
        sleep,
    )


def tool_args(
    action: str, server: str, backend: str, socket_path: str, timeout: float
) -> list[str]:
    """The command line that runs `action` on an lb host (the tool as the deploy installs it
    is the first word; callers put its path in front)."""
    if action not in ("drain", "ready", "status"):
        raise ValueError(f"action must be drain, ready or status, not {action!r}")
    set_state(backend, server, "ready")  # the names' check
    return [action, server, "--backend", backend, "--socket", socket_path,
            "--timeout", f"{timeout:g}"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="spark-lb-server", description="Drain or ready an app host in HAProxy"
    )
    parser.add_argument("action", choices=("drain", "ready", "status"))
    parser.add_argument("server", help="the app host's name in the backend")
    # Given by the callers (sparkops.defaults, sparkops.layout): this file imports nothing.
    parser.add_argument("--backend", required=True)
    parser.add_argument("--socket", required=True, help="the runtime API's unix socket")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    send = unix_sender(args.socket)
    started = time.monotonic()
    try:
        if args.action == "status":
            ok, seen = True, status(send, args.backend, args.server)
        elif args.action == "drain":
            if not others_up(parse_stat(send(SHOW_STAT)), args.backend, args.server):
                print(f"{args.backend}/{args.server}: not drained, no other server is UP")
            ok, seen = drain(send, args.backend, args.server, args.timeout)
        else:
            ok, seen = ready(send, args.backend, args.server, args.timeout)
    except (OSError, RuntimeError_) as exc:
        print(f"spark-lb-server: {exc}", file=sys.stderr)
        return 2
    took = time.monotonic() - started
    said = (
        f"{args.backend}/{args.server}: {seen.status}, {seen.sessions} sessions "
        f"({seen.total} in all), "
        f"weight {'0 (drain)' if seen.admin_drain else '>0'} after {took:.2f}s"
    )
    print(said)
    if not ok:
        wanted = "0 sessions" if args.action == "drain" else "UP"
        print(
            f"spark-lb-server: {args.action}: not {wanted} in {args.timeout:.0f}s", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
