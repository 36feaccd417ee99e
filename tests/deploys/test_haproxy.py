"""The load balancer: the runtime-API protocol (sparkops/lbruntime.py) as pure logic, then the
deploy's rendered configuration through the real `haproxy -c`, and drain / ready / a failing
health check against a real HAProxy on loopback in front of two small HTTP servers."""

from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest

from deploys import haproxy, tlsca
from runbooks.balancer import Balancers
from runbooks.checklist import Run
from runbooks.executor import LocalExecutor
from sparkops import defaults, layout, lbruntime
from sparkops.localhost import free_port
from sparkops.wait import wait_until

STAT = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,\
wretr,wredis,status,weight,act
clients,FRONTEND,,,3,5,262144,40,0,0,0,0,0,,,,,OPEN,,
app,app,0,0,2,3,,20,0,0,,0,,0,0,0,0,UP,1,1
app,app2,0,0,0,2,,19,0,0,,0,,0,0,0,0,DRAIN,0,1
app,BACKEND,0,0,2,5,,39,0,0,0,0,,0,0,0,0,UP,1,2
"""


def test_show_stat_is_read_as_servers_only():
    servers = lbruntime.parse_stat(STAT)
    assert [(s.name, s.status, s.sessions, s.total, s.admin_drain) for s in servers] == [
        ("app", "UP", 2, 20, False),
        ("app2", "DRAIN", 0, 19, True),
    ]
    assert lbruntime.find(servers, "app", "app2").up
    with pytest.raises(lbruntime.RuntimeError_, match="no server app/app3"):
        lbruntime.find(servers, "app", "app3")
    with pytest.raises(lbruntime.RuntimeError_, match="not a `show stat` answer"):
        lbruntime.parse_stat("Unknown command.\n")


def test_commands_refuse_bad_names_and_states():
    assert lbruntime.set_state("app", "app2", "drain") == "set server app/app2 state drain"
    for backend, server, state in [("app", "a b", "drain"), ("app", "x;y", "ready"),
                                   ("", "app", "ready"), ("app", "app", "up")]:  # fmt: skip
        with pytest.raises(ValueError):
            lbruntime.set_state(backend, server, state)
    args = lbruntime.tool_args("drain", "app2", "app", "/run/x.sock", 15)
    assert args == [
        "drain",
        "app2",
        "--backend",
        "app",
        "--socket",
        "/run/x.sock",
        "--timeout",
        "15",
    ]
    with pytest.raises(lbruntime.RuntimeError_, match="No such server"):
        lbruntime.check_answer("set server app/x state drain", "No such server.\n")


class _FakeHAProxy:
    """Answers like the runtime API: sessions on the drained server go 2, 1, 0."""

    def __init__(self, sessions: list[int]):
        self.sessions, self.sent = sessions, []

    def __call__(self, command: str) -> str:
        self.sent.append(command)
        if command.startswith("set server"):
            return "\n"
        scur = self.sessions.pop(0) if len(self.sessions) > 1 else self.sessions[0]
        return STAT.replace("app,app2,0,0,0,", f"app,app2,0,0,{scur},")


def test_drain_waits_until_no_session_is_left():
    fake, now = _FakeHAProxy([2, 1, 0]), [0.0]
    ok, seen = lbruntime.drain(fake, "app", "app2", timeout=5, clock=lambda: now[0],
                               sleep=lambda s: now.__setitem__(0, now[0] + s))  # fmt: skip
    assert ok and seen.sessions == 0
    # another server is UP (app), so app2 is drained; then polled until 0
    assert fake.sent == ["show stat", "set server app/app2 state drain", "show stat", "show stat"]


def test_drain_gives_up_at_its_deadline():
    fake, now = _FakeHAProxy([3]), [0.0]
    ok, seen = lbruntime.drain(fake, "app", "app2", timeout=1, interval=0.25,
                               clock=lambda: now[0],
                               sleep=lambda s: now.__setitem__(0, now[0] + s))  # fmt: skip
    assert not ok and seen.sessions == 3
    assert len(fake.sent) == 2 + 5  # the check, the command, polls at 0, .25, .5, .75, 1.0


def test_the_only_server_up_is_not_drained():
    """With no other server to take them, a drain would turn every request into a 503."""
    fake = _FakeHAProxy([0])
    alone = STAT.replace(
        "app,app,0,0,2,3,,20,0,0,,0,,0,0,0,0,UP,", "app,app,0,0,2,3,,20,0,0,,0,,0,0,0,0,DOWN,"
    )
    ok, seen = lbruntime.drain(lambda c: fake(c) and alone, "app", "app2", timeout=1)
    assert ok and seen.name == "app2"
    assert not [c for c in fake.sent if c.startswith("set server")]


# --- the deploy's configuration, checked by HAProxy itself --------------------------------


def test_the_deploys_configuration_passes_haproxy_check(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKOPS_SECRETS_DIR", str(tmp_path / "secrets"))
    name = haproxy.cert_name("lb", "10.0.0.30")
    assert name == "lb-frontend-lb-10.0.0.30"
    assert haproxy.cert_name("LB_1", "2001:db8::1") == "lb-frontend-lb-1-2001-db8-1"
    issued = tlsca.issue("lab", name, dns_names=["lb"], ip_addresses=["10.0.0.30"])
    bundle = tmp_path / "frontend.pem"
    bundle.write_text(issued.bundle_pem)
    servers = [{"name": "app", "address": "10.0.0.11"}, {"name": "app2", "address": "10.0.0.21"}]
    text = haproxy.config_text(servers)
    assert "server app 10.0.0.11:8000" in text and "server app2 10.0.0.21:8000" in text
    assert f"stats socket {layout.HAPROXY_RUNTIME_SOCKET} mode 660 level admin" in text
    assert "http-check send meth GET uri /readyz" in text
    assert "redirect scheme https code 301 unless { ssl_fc }" in text
    assert "option forwardfor" in text and "del-header X-Forwarded-For" in text
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(text.replace(layout.HAPROXY_CERT_FILE, str(bundle)))
    checked = subprocess.run(["haproxy", "-c", "-f", str(conf)], capture_output=True,
                             text=True, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    conf.write_text(text.replace(layout.HAPROXY_CERT_FILE, str(tmp_path / "missing.pem")))
    refused = subprocess.run(["haproxy", "-c", "-f", str(conf)], capture_output=True,
                             text=True, check=False)  # fmt: skip
    assert refused.returncode != 0


def test_no_app_host_and_a_bad_bundle_are_refused(tmp_path):
    with pytest.raises(haproxy.HAProxyError, match="no app host"):
        haproxy.config_text([])
    half = tmp_path / "cert-only.pem"
    half.write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")

    class Host:
        name, data = "lb", {"haproxy_tls_bundle": str(half)}

    with pytest.raises(haproxy.HAProxyError, match="chain and its key"):
        haproxy.certificate_bundle(Host())


# --- a real HAProxy on loopback ------------------------------------------------------------


class _Backend:
    """An HTTP server answering /readyz (200, or 503 when told) and / with its own name."""

    def __init__(self, name: str):
        self.name, self.ready = name, True
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                code = 200 if self.path != "/readyz" or backend.ready else 503
                body = backend.name.encode()
                self.send_response(code)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def balancer(tmp_path):
    backends = {name: _Backend(name) for name in ("app", "app2")}
    port, sock = free_port(), str(tmp_path / "admin.sock")
    servers = "\n".join(f"    server {n} 127.0.0.1:{b.port}" for n, b in backends.items())
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(f"""global
    stats socket {sock} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    timeout check 1s
frontend clients
    bind 127.0.0.1:{port}
    default_backend {defaults.LB_BACKEND}
backend {defaults.LB_BACKEND}
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
    default-server check inter 200ms rise 1 fall 1
{servers}
""")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_until(lambda: Path(sock).exists() and _connects(port), timeout=10,
                   what="HAProxy to listen")  # fmt: skip
        send = lbruntime.unix_sender(sock)
        wait_until(
            lambda: all(lbruntime.status(send, defaults.LB_BACKEND, n).status == "UP"
                        for n in backends),
            timeout=10, what="both servers UP",
        )  # fmt: skip
        yield {"url": f"http://127.0.0.1:{port}", "socket": sock, "backends": backends}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for b in backends.values():
            b.close()


def _connects(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _who(url: str, n: int = 12) -> Counter:
    return Counter(httpx.get(url + "/", timeout=5).text for _ in range(n))


def _tool(balancer, action: str, server: str) -> int:
    args = lbruntime.tool_args(action, server, defaults.LB_BACKEND, balancer["socket"], 5)
    return lbruntime.main(args)


def test_a_drained_server_takes_no_new_request_and_comes_back_when_ready(balancer, capsys):
    assert set(_who(balancer["url"])) == {"app", "app2"}
    assert _tool(balancer, "drain", "app2") == 0
    assert "app/app2: DRAIN, 0 sessions" in capsys.readouterr().out
    assert _who(balancer["url"]) == Counter({"app": 12})
    assert _tool(balancer, "ready", "app2") == 0
    assert "app/app2: UP" in capsys.readouterr().out
    assert set(_who(balancer["url"])) == {"app", "app2"}


def test_a_failing_health_check_takes_a_server_out(balancer, capsys):
    balancer["backends"]["app2"].ready = False
    send = lbruntime.unix_sender(balancer["socket"])
    wait_until(lambda: lbruntime.status(send, "app", "app2").status.startswith("DOWN"),
               timeout=10, what="app2 DOWN")  # fmt: skip
    assert _who(balancer["url"]) == Counter({"app": 12})
    # ready does not override the check: not UP by its deadline, exit 1
    args = lbruntime.tool_args("ready", "app2", defaults.LB_BACKEND, balancer["socket"], 1)
    assert lbruntime.main(args) == 1
    assert "not UP in 1s" in capsys.readouterr().err


def test_an_unknown_server_or_socket_is_a_clear_error(balancer, tmp_path, capsys):
    assert _tool(balancer, "drain", "app9") == 2
    assert "app9" in capsys.readouterr().err
    args = lbruntime.tool_args("status", "app", "app", str(tmp_path / "none.sock"), 1)
    assert lbruntime.main(args) == 2


def test_haproxy_is_installed_by_bootstrap():
    assert shutil.which("haproxy"), "scripts/debian-packages.txt lists haproxy"


class _AsIfOnTheLb(LocalExecutor):
    """This machine standing in for an lb host: the tool and the socket where the test put
    them instead of where the deploy installs them (the command is otherwise unchanged)."""

    def __init__(self, socket_path: str):
        super().__init__(name="lb")
        self.socket_path, self.seen = socket_path, []

    def _spawn(self, argv, **kwargs):
        self.seen.append(list(argv))
        tool = [sys.executable, lbruntime.__file__]
        argv = [self.socket_path if a == layout.HAPROXY_RUNTIME_SOCKET else a for a in argv]
        return super()._spawn(tool + argv[1:] if argv[0] == layout.LB_SERVER_TOOL else argv,
                              **kwargs)  # fmt: skip


def test_the_runbooks_drain_a_host_around_its_switch_and_ready_it_after(balancer):
    lb = _AsIfOnTheLb(balancer["socket"])
    lbs, run = Balancers([lb]), Run("rollback", quiet=True)
    with pytest.raises(RuntimeError, match="the switch failed"), lbs.drained("app2", run):
        assert _who(balancer["url"]) == Counter({"app": 12})
        raise RuntimeError("the switch failed")  # readied all the same
    assert [a[:2] for a in lb.seen] == [[layout.LB_SERVER_TOOL, "drain"],
                                        [layout.LB_SERVER_TOOL, "ready"]]  # fmt: skip
    assert [c.ok for c in run.checks] == [True]
    assert "app2" in run.facts["lb_drain_seconds"]
    assert set(_who(balancer["url"])) == {"app", "app2"}
