"""A TCP proxy whose connections suffer the toxics set on it, changed while they run.

Each accepted connection opens one to the upstream and pumps both directions; before a
chunk goes on, the toxics of that direction that apply to this connection act on it. Toxics
are read afresh for every chunk, so adding one affects connections already open (a pooled
database connection goes into the black hole with everything else), as in Toxiproxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import struct
import time

from chaos.toxics import Toxic

CHUNK = 32 * 1024
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class ProxyError(ValueError):
    """A proxy definition is malformed or not allowed (answered with 400)."""


def split_address(text: str, *, listen: bool) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not host or int(port) > 65535:
        raise ProxyError(f"address must be HOST:PORT; got {text!r}")
    if listen and host not in LOOPBACK and not _is_loopback(host):
        raise ProxyError(f"the proxy listens on loopback only; got {host!r}")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Proxy:
    def __init__(self, name: str, listen: str, upstream: str, enabled: bool = True):
        self.name = name
        self.host, self.port = split_address(listen, listen=True)
        self.upstream = upstream
        self.upstream_addr = split_address(upstream, listen=False)
        self.enabled = enabled
        self.toxics: dict[str, Toxic] = {}
        self.connections: set[Connection] = set()
        self.accepted = 0  # connections, and how they ended by a toxic: for a run's notes
        self.ended_by: dict[str, int] = {"reset_peer": 0, "timeout": 0, "limit_data": 0}
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.port}"

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [t.to_json() for t in self.toxics.values()],
        }

    async def start(self) -> None:
        """Listen (when enabled); the port chosen for port 0 is kept across disable/enable."""
        if not self.enabled or self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection (Toxiproxy's disable)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self.connections):
            conn.close(reset=False)

    def changed(self) -> None:
        """Wake every connection to look at the toxics again."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_changed(self, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The top of a connection's task: cancelled when the server stops, it ends quietly
        # (asyncio's stream server would report a cancelled handler as an error).
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream_addr)
        except OSError:
            _reset(writer)  # the upstream refused: the client sees its connection reset
            return
        if self._server is None:  # disabled while this connection was being set up
            writer.close()
            up_writer.close()
            return
        conn = Connection(self, reader, writer, up_reader, up_writer)
        self.accepted += 1
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)


class Connection:
    """One client connection and its upstream connection, pumped both ways."""

    def __init__(self, proxy: Proxy, reader, writer, up_reader, up_writer) -> None:
        self.proxy = proxy
        self.ends = {
            "upstream": (reader, up_writer),  # client -> server
            "downstream": (up_reader, writer),  # server -> client
        }
        self.writers = (writer, up_writer)
        # Keyed by id(toxic), holding the toxic so the id is not reused: a toxic removed and
        # added again is a new draw and a new clock.
        self.applies: dict[int, tuple[Toxic, bool]] = {}  # drawn once per connection
        self.seen: dict[int, tuple[Toxic, float]] = {}  # when a time toxic first applied
        self.sent = {"upstream": 0, "downstream": 0}
        self.ended: set[str] = set()  # directions that reached end of stream
        self.done = asyncio.Event()

    def active(self, stream: str) -> list[Toxic]:
        toxics = []
        for toxic in self.proxy.toxics.values():
            if toxic.stream != stream:
                continue
            if id(toxic) not in self.applies:
                self.applies[id(toxic)] = (toxic, random.random() < toxic.toxicity)
            if self.applies[id(toxic)][1]:
                toxics.append(toxic)
        return toxics

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._pump("upstream")),
            asyncio.create_task(self._pump("downstream")),
            asyncio.create_task(self._watch()),
        ]
        try:
            await self.done.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.close(reset=False)

    def close(self, *, reset: bool) -> None:
        for writer in self.writers:
            if reset:
                _reset(writer)
            else:
                writer.close()
        self.done.set()

    async def _pump(self, stream: str) -> None:
        reader, writer = self.ends[stream]
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:  # a half close goes on (late under slow_close)
                    await self._slow_close(stream)
                    if writer.can_write_eof():
                        writer.write_eof()
                    self.ended.add(stream)
                    if len(self.ended) < 2:
                        return
                    break
                if not await self._forward(stream, data, writer):
                    break
        except (OSError, asyncio.IncompleteReadError):
            pass
        self.close(reset=False)

    async def _forward(self, stream: str, data: bytes, writer) -> bool:
        """Send one chunk through the toxics; False when the connection is to end."""
        while any(t.type == "timeout" for t in self.active(stream)):
            # The black hole: nothing passes while the toxic is on (the watcher closes the
            # connection after its timeout, if it has one); held data goes on once removed.
            await self.proxy.wait_changed(None)
        # Several toxics of one type chain as in Toxiproxy: latencies add up, the lowest
        # rate and the smallest limit win, the last slicer cuts.
        by_type: dict[str, list[dict]] = {}
        for toxic in self.active(stream):
            by_type.setdefault(toxic.type, []).append(toxic.attributes)
        delay = sum(a["latency"] + random.uniform(-a["jitter"], a["jitter"])
                    for a in by_type.get("latency", []))  # fmt: skip
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        keep_open = True
        for limit in by_type.get("limit_data", []):
            room = max(0, limit["bytes"] - self.sent[stream])
            if len(data) >= room:
                data, keep_open = data[:room], False
                self.proxy.ended_by["limit_data"] += 1
        rates = [a["rate"] for a in by_type.get("bandwidth", []) if a["rate"]]
        rate = min(rates) * 1024 if rates else 0  # bytes per second
        slicer = by_type["slicer"][-1] if "slicer" in by_type else None
        for piece, pause in _slices(data, slicer, max_size=int(rate / 10)):
            if rate:  # each piece waits its time on the wire before it goes
                await asyncio.sleep(len(piece) / rate)
            writer.write(piece)
            await writer.drain()
            self.sent[stream] += len(piece)
            if pause:
                await asyncio.sleep(pause)
        return keep_open

    async def _slow_close(self, stream: str) -> None:
        for toxic in self.active(stream):
            if toxic.type == "slow_close" and toxic.attributes["delay"]:
                await asyncio.sleep(toxic.attributes["delay"] / 1000)

    async def _watch(self) -> None:
        """Time toxics: timeout closes, reset_peer resets, once their time has run."""
        while True:
            now = time.monotonic()
            next_due = None
            for stream in ("upstream", "downstream"):
                for toxic in self.active(stream):
                    if toxic.type not in ("timeout", "reset_peer"):
                        continue
                    wait = toxic.attributes["timeout"] / 1000
                    if toxic.type == "timeout" and wait == 0:
                        continue  # a black hole for as long as it is on
                    due = self.seen.setdefault(id(toxic), (toxic, now))[1] + wait
                    if due <= now:
                        self.proxy.ended_by[toxic.type] += 1
                        self.close(reset=toxic.type == "reset_peer")
                        return
                    next_due = due if next_due is None else min(next_due, due)
            await self.proxy.wait_changed(None if next_due is None else next_due - now)


def _slices(data: bytes, slicer: dict | None, max_size: int = 0):
    """(piece, pause after it in seconds): the slicer's pieces, else the whole chunk; none
    larger than `max_size` when given (bandwidth sends a tenth of a second's worth at a time).
    """
    avg, var, pause = 0, 0, 0.0
    if slicer and slicer["average_size"]:
        avg, var = slicer["average_size"], slicer["size_variation"]
        pause = slicer["delay"] / 1_000_000
    while data:
        size = max(1, avg + random.randint(-var, var)) if avg else len(data)
        if max_size:
            size = min(size, max(1, max_size))
        yield data[:size], pause
        data = data[size:]


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0): the peer reads ECONNRESET."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
