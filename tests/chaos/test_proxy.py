"""The fault proxy itself: its API answers as Toxiproxy's does, and each toxic is measured by a
real client through a real echo server (time, bytes, the error the socket raises)."""

from __future__ import annotations

import socket
import socketserver
import subprocess
import sys
import threading
import time

import pytest

from chaos.api import ChaosServer
from chaos.client import Toxiproxy, ToxiproxyError
from testkit.proc import free_port


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except ConnectionResetError:
            pass  # reset_peer's doing


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture(scope="module")
def echo():
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def toxiproxy():
    with ChaosServer() as server:
        client = Toxiproxy(server.url)
        yield client
        client.close()


@pytest.fixture
def proxy(toxiproxy, echo, request):
    handle = toxiproxy.create(request.node.name[:60], echo)
    yield handle
    handle.delete()


def connect(proxy, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection((proxy.host, proxy.port), timeout=timeout)


def round_trip(sock: socket.socket, data: bytes = b"ping") -> float:
    """Seconds from sending `data` to having all of it echoed back."""
    start = time.monotonic()
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the echo came back"
        got += chunk
    assert got == data
    return time.monotonic() - start


def test_api_lists_creates_and_refuses_bad_input_changing_nothing(toxiproxy, echo):
    handle = toxiproxy.create("api", echo)
    try:
        assert toxiproxy.proxies()["api"]["upstream"] == echo
        assert handle.port > 0 and handle.host == "127.0.0.1"
        with pytest.raises(ToxiproxyError, match="409"):
            toxiproxy.create("api", echo)
        with pytest.raises(ToxiproxyError, match=r"400.*loopback only"):
            toxiproxy.create("public", echo, listen="0.0.0.0:0")
        with pytest.raises(ToxiproxyError, match=r"400.*unknown toxic type"):
            handle.add("packet_loss")
        with pytest.raises(ToxiproxyError, match=r"400.*non-negative integer"):
            handle.add("latency", latency=-5)
        with pytest.raises(ToxiproxyError, match="404"):
            handle.remove("latency_downstream")
        assert handle.toxics() == [] and "public" not in toxiproxy.proxies()
        handle.add("latency", latency=10)
        assert handle.toxics()[0]["attributes"] == {"latency": 10, "jitter": 0}
        toxiproxy.reset()
        assert handle.toxics() == []
    finally:
        handle.delete()
    assert "api" not in toxiproxy.proxies()


def test_latency_adds_its_delay_to_every_round_trip(proxy):
    with connect(proxy) as sock:
        base = min(round_trip(sock) for _ in range(5))
        with proxy.toxic("latency", latency=100):
            slow = [round_trip(sock) for _ in range(5)]
        after = round_trip(sock)
    print(f"\nround trip: {base * 1000:.1f} ms clean, {min(slow) * 1000:.1f} ms with 100 ms")
    assert base < 0.05
    assert min(slow) >= 0.1
    assert max(slow) < 0.5
    assert after < 0.05  # removed: the connection already open is fast again


def test_two_latency_toxics_add_up(proxy):
    proxy.add("latency", "downstream", name="first", latency=60)
    proxy.add("latency", "upstream", name="second", latency=50)
    proxy.add("latency", "upstream", name="third", latency=40)
    with connect(proxy) as sock:
        assert round_trip(sock) >= 0.15


def test_jitter_spreads_the_delay_around_the_latency(proxy):
    with connect(proxy) as sock, proxy.toxic("latency", streams=("upstream",),
                                             latency=100, jitter=80):  # fmt: skip
        trips = [round_trip(sock) for _ in range(20)]
    assert min(trips) >= 0.02
    assert max(trips) - min(trips) > 0.04  # 20 draws from 20-180 ms are not all alike


def test_bandwidth_bounds_the_rate(proxy):
    data = b"x" * 256 * 1024
    with connect(proxy, timeout=10) as sock, proxy.toxic("bandwidth", rate=512):  # KB/s
        seconds = round_trip(sock, data)
    rate = len(data) / 1024 / seconds
    print(f"\nbandwidth 512 KB/s: measured {rate:.0f} KB/s")
    assert rate <= 512 * 1.1
    assert rate > 512 / 3


def test_slow_close_delays_the_close(proxy):
    with proxy.toxic("slow_close", delay=400), connect(proxy) as sock:
        assert round_trip(sock) < 0.1
        sock.shutdown(socket.SHUT_WR)  # the echo server closes; the close comes late
        start = time.monotonic()
        assert sock.recv(10) == b""
        assert time.monotonic() - start >= 0.4


def test_timeout_black_holes_then_closes_after_its_timeout(proxy):
    with connect(proxy) as sock:
        start = time.monotonic()  # before the toxic: the proxy's clock starts as it is added
        with proxy.toxic("timeout", timeout=500):
            sock.sendall(b"lost?")
            assert sock.recv(10) == b""  # nothing came back, then the connection was closed
            assert 0.5 <= time.monotonic() - start < 2


def test_timeout_zero_holds_data_until_the_toxic_goes(proxy):
    with connect(proxy, timeout=0.5) as sock:
        with proxy.toxic("timeout", timeout=0):
            sock.sendall(b"held")
            with pytest.raises(TimeoutError):
                sock.recv(10)
        sock.settimeout(5)
        assert sock.recv(10) == b"held"


def test_new_connections_go_into_the_black_hole_too(proxy):
    with proxy.toxic("timeout", timeout=0), connect(proxy, timeout=0.5) as sock:
        sock.sendall(b"hello")
        with pytest.raises(TimeoutError):
            sock.recv(10)


def test_reset_peer_gives_econnreset(proxy):
    with connect(proxy) as sock:
        assert round_trip(sock) < 0.1
        with proxy.toxic("reset_peer", timeout=0), pytest.raises(ConnectionResetError):
            sock.sendall(b"x")
            sock.recv(10)


def test_reset_peer_after_its_timeout(proxy):
    # Timed from before the connection: the proxy starts the toxic's clock when it sees the
    # connection, which may be before create_connection returns here.
    start = time.monotonic()
    with proxy.toxic("reset_peer", timeout=300), connect(proxy) as sock:
        assert round_trip(sock) < 0.1  # works until the timeout
        with pytest.raises(ConnectionResetError):
            sock.recv(10)
        assert time.monotonic() - start >= 0.3


def test_limit_data_closes_after_that_many_bytes(proxy):
    with proxy.toxic("limit_data", bytes=1000), connect(proxy) as sock:
        sock.sendall(b"y" * 5000)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
        assert len(got) == 1000


def test_slicer_delivers_the_data_in_small_delayed_pieces(proxy):
    data = bytes(range(256)) * 4
    with connect(proxy) as sock, proxy.toxic("slicer", average_size=64, size_variation=16,
                                             delay=3000):  # fmt: skip
        start = time.monotonic()
        sock.sendall(data)
        pieces = []
        while sum(map(len, pieces)) < len(data):
            pieces.append(sock.recv(65536))
        seconds = time.monotonic() - start
    assert b"".join(pieces) == data
    assert len(pieces) >= 8  # 1 KB in ~64-byte slices 3 ms apart: not one read
    assert seconds >= 1024 / 80 * 0.003


def test_toxicity_picks_a_fraction_of_connections(proxy):
    with proxy.toxic("reset_peer", toxicity=0.5, timeout=0):
        outcomes = []
        for _ in range(40):
            try:
                with connect(proxy, timeout=2) as sock:
                    outcomes.append(round_trip(sock) < 1)
            except (ConnectionResetError, AssertionError):
                outcomes.append(False)
    print(f"\ntoxicity 0.5: {outcomes.count(False)} of 40 connections reset")
    assert 5 <= outcomes.count(False) <= 35


def test_disable_refuses_connections_and_enable_listens_again(proxy):
    with connect(proxy) as sock:
        proxy.set_enabled(False)
        assert sock.recv(10) == b""  # open connections are dropped
    with pytest.raises(ConnectionRefusedError):
        connect(proxy)
    proxy.set_enabled(True)
    with connect(proxy) as sock:
        assert round_trip(sock) < 0.1


def test_the_server_runs_on_its_own_and_stops_on_sigterm(echo):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "chaos", "--port", str(port)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert f"127.0.0.1:{port}" in proc.stdout.readline()
        api = Toxiproxy(f"http://127.0.0.1:{port}")
        handle = api.create("standalone", echo)
        with connect(handle) as sock:
            assert round_trip(sock) < 0.5
        api.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
