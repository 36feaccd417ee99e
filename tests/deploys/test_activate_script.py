"""spark-app-activate's logic, run here: the script rendered with a temporary root and
stand-ins for `systemctl`, `curl` and `journalctl` on PATH (what they stand for is the host's
systemd and the app's /readyz, exercised on the lab by tests/lab/test_two_app_hosts.py).

The promise under test: `current` is never left on a release that did not answer /readyz,
whether the gate fails, the script is interrupted (SIGTERM, SIGINT, SIGHUP) at any point,
or the SSH session that ran it is gone (its output closed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from deploys import hardening, support
from sparkops import defaults, envvars, layout
from sparkops.wait import wait_until

SERVICES = "spark-app.service spark-outbox.service"
PREFLIGHT_PORT = defaults.APP_PREFLIGHT_PORT

# systemctl: logs every call in calls.log, and "restart <release current now>" in
# systemctl.log; with $STUBS/slow-restart present, the first restart after it appeared hangs
# (a unit slow to stop) until killed. The preflight's unit is active unless
# $STUBS/preflight-dead exists (its app exited).
SYSTEMCTL = f"""#!/bin/sh
echo "$*" >> "$STUBS/calls.log"
case "$1" in
    is-active)
        case "$*" in *{layout.APP_PREFLIGHT_UNIT}*) [ ! -e "$STUBS/preflight-dead" ] ;; esac
        exit ;;
    restart) ;;
    *) exit 0 ;;
esac
echo "restart $(readlink "$ROOT/current")" >> "$STUBS/systemctl.log"
if [ -e "$STUBS/slow-restart" ]; then
    rm -f "$STUBS/slow-restart"
    echo $$ > "$STUBS/slow.pid"
    exec sleep 60
fi
"""
# curl: the live app's /readyz answers when $STUBS/ready-<release now current> exists; the
# preflight's (its port) when $STUBS/ready-<release> or $STUBS/preflight-ready-<release>
# exists for the release systemd-run started (a release may pass its preflight and still fail
# under the real unit).
CURL = f"""#!/bin/sh
case "$*" in
    *:{PREFLIGHT_PORT}/*)
        started="$(cat "$STUBS/preflight-release")"
        [ -e "$STUBS/ready-$started" ] || [ -e "$STUBS/preflight-ready-$started" ] ;;
    *)
        current="$(readlink "$ROOT/current")"
        [ -e "$STUBS/ready-${{current##*/}}" ] ;;
esac
"""
# systemd-run: records which release the preflight started (its working directory) and
# what it was asked to run.
SYSTEMD_RUN = """#!/bin/sh
echo "$*" >> "$STUBS/systemd-run.log"
printf '%s\\n' "$@" > "$STUBS/systemd-run.args"
for arg; do
    case "$arg" in --working-directory=*) echo "${arg##*/}" > "$STUBS/preflight-release" ;; esac
done
"""
JOURNALCTL = "#!/bin/sh\necho 'journal lines'\n"
# logger: what the script keeps in the journal, here in a file.
LOGGER = """#!/bin/sh
while [ "$1" != -- ]; do shift; done; shift
echo "$*" >> "$STUBS/journal"
"""


def _default_signals() -> None:
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


@pytest.fixture
def host(tmp_path):
    """A temporary app root with releases A (current) and B, the script, and the stubs."""
    root, stubs = tmp_path / "root", tmp_path / "stubs"
    for release in ("A", "B"):
        (root / "releases" / release).mkdir(parents=True)
        (root / "releases" / release / ".installed").touch()
    (root / "current").symlink_to("releases/A")
    stubs.mkdir()
    stand_ins = {
        "systemctl": SYSTEMCTL,
        "curl": CURL,
        "journalctl": JOURNALCTL,
        "logger": LOGGER,
        "systemd-run": SYSTEMD_RUN,
    }
    for name, text in stand_ins.items():
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    script = tmp_path / "spark-app-activate"
    script.write_text(
        support.render(
            "app/spark-app-activate.sh.j2",
            root=str(root),
            current=str(root / "current"),
            port=8000,
            preflight_port=PREFLIGHT_PORT,
            user="spark",
            env_file="/etc/spark-app/app.env",
            hardening=hardening.app_service(),
            ready_timeout=30,
            services=SERVICES,
        )
    )
    script.chmod(0o755)
    env = dict(os.environ, ROOT=str(root), STUBS=str(stubs), PATH=f"{stubs}:{os.environ['PATH']}")
    host = Host(root, stubs, script, env)
    yield host
    host.cleanup()


class Host:
    def __init__(self, root: Path, stubs: Path, script: Path, env: dict) -> None:
        self.root, self.stubs, self.script, self.env = root, stubs, script, env
        self.procs: list[subprocess.Popen] = []

    def current(self) -> str:
        return os.readlink(self.root / "current")

    def restarts(self) -> list[str]:
        log = self.stubs / "systemctl.log"
        return log.read_text().splitlines() if log.exists() else []

    def ready(self, release: str) -> None:
        (self.stubs / f"ready-{release}").touch()

    def passes_preflight_only(self, release: str) -> None:
        """Answers /readyz beside the live app, never once switched to (its unit's sandbox)."""
        (self.stubs / f"preflight-ready-{release}").touch()

    def calls(self) -> list[str]:
        log = self.stubs / "calls.log"
        return log.read_text().splitlines() if log.exists() else []

    def preflights(self) -> list[str]:
        log = self.stubs / "systemd-run.log"
        return log.read_text().splitlines() if log.exists() else []

    def run(self, release: str, timeout: str = "30", **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.script), release],
            env={**self.env, "APP_READY_TIMEOUT": timeout, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def start(self, release: str, timeout: str = "30", **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(
            [str(self.script), release],
            env={**self.env, "APP_READY_TIMEOUT": timeout},
            text=True,
            start_new_session=True,  # its own group: the cleanup ends what it left behind
            # A shell cannot trap a signal ignored when it started (POSIX), and a test run
            # under nohup ignores SIGHUP: the script gets the dispositions a host gives it.
            preexec_fn=_default_signals,
            **kwargs,
        )
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        pidfile = self.stubs / "slow.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_release_that_gets_ready_goes_live(host):
    host.ready("B")
    result = host.run("B")
    assert result.returncode == 0, result.stderr
    assert host.current() == "releases/B"
    assert host.restarts() == ["restart releases/B"]
    assert "release B is live" in result.stderr
    assert not (host.root / "releases/B/BAD").exists()
    assert (host.stubs / "journal").read_text().splitlines() == [
        "preflight: release B answered /readyz beside releases/A",
        "switching to release B from releases/A",
        "release B is live",
    ]
    # Tried first beside the live app: the app's user and settings, B's own release.env, the
    # preflight port on loopback, no metrics port; stopped before the switch.
    [started] = host.preflights()
    for part in (
        f"--unit={layout.APP_PREFLIGHT_UNIT}",
        "--uid=spark",
        "--property=EnvironmentFile=/etc/spark-app/app.env",
        f"--property=EnvironmentFile={host.root}/releases/B/release.env",
        f"--working-directory={host.root}/releases/B",
        f"{envvars.METRICS_PORT}=0 {host.root}/releases/B/venv/bin/python -m app.serve",
        f"--host 127.0.0.1 --port {PREFLIGHT_PORT}",
    ):
        assert part in started, (part, started)
    # The service's sandbox, each line one property (one argument, spaces and all).
    args = (host.stubs / "systemd-run.args").read_text().splitlines()
    for line in hardening.app_service():
        assert f"--property={line}" in args, line
    calls = host.calls()
    assert calls.index(f"stop {layout.APP_PREFLIGHT_UNIT}", 1) < calls.index(f"restart {SERVICES}")


def test_a_release_that_fails_its_preflight_is_refused_before_anything_switches(host):
    """Not ready beside the live app: marked BAD, exit 1, `current` untouched and nothing
    restarted, so the live release never stopped serving; the preflight's log is shown."""
    host.ready("A")
    result = host.run("B", timeout="1")
    assert result.returncode == 1, result.stderr
    assert host.current() == "releases/A"
    assert host.restarts() == []
    assert (host.root / "releases/B/BAD").read_text().startswith("health gate failed in preflight")
    assert "journal lines" in result.stderr  # journalctl -u <the preflight unit>
    assert f"journalctl -u {layout.APP_PREFLIGHT_UNIT}" not in result.stderr
    assert (host.stubs / "journal").read_text().splitlines() == [
        "release B failed its preflight (not ready in 1s): nothing switched, nothing "
        "restarted; current stays on releases/A"
    ]
    assert host.calls()[-2:] == [
        f"stop {layout.APP_PREFLIGHT_UNIT}",
        f"reset-failed {layout.APP_PREFLIGHT_UNIT}",
    ]


def test_app_preflight_only_tries_the_release_and_switches_nothing(host):
    """What the deploy runs before draining a host behind a load balancer."""
    host.ready("B")
    result = host.run("B", APP_PREFLIGHT="only")
    assert result.returncode == 0, result.stderr
    assert len(host.preflights()) == 1
    assert host.current() == "releases/A" and host.restarts() == []
    assert "APP_PREFLIGHT=only: nothing switched; current stays on releases/A" in result.stderr
    assert not (host.root / "releases/B/BAD").exists()
    # Then the switch itself, without a second preflight.
    result = host.run("B", APP_PREFLIGHT="no")
    assert result.returncode == 0, result.stderr
    assert len(host.preflights()) == 1
    assert host.current() == "releases/B" and host.restarts() == ["restart releases/B"]


def test_app_preflight_only_refuses_a_release_that_fails_it(host):
    result = host.run("B", timeout="1", APP_PREFLIGHT="only")
    assert result.returncode == 1
    assert host.current() == "releases/A" and host.restarts() == []
    assert (host.root / "releases/B/BAD").read_text().startswith("health gate failed in preflight")
    assert "nothing switched, nothing restarted; current stays on releases/A" in result.stderr


@pytest.mark.parametrize("current", ["B", None], ids=["release-current", "no-live-release"])
def test_app_preflight_only_with_nothing_to_try_beside_does_nothing(host, current):
    (host.root / "current").unlink()
    if current:
        (host.root / "current").symlink_to(f"releases/{current}")
    result = host.run("B", APP_PREFLIGHT="only")
    assert result.returncode == 0, result.stderr
    assert "nothing to" in result.stderr
    assert host.preflights() == [] and host.restarts() == [] and host.calls() == []
    assert os.path.lexists(host.root / "current") == bool(current)


def test_an_unknown_app_preflight_value_is_refused_and_nothing_changes(host):
    result = host.run("B", APP_PREFLIGHT="maybe")
    assert result.returncode == 2
    assert "APP_PREFLIGHT is maybe: say yes, no or only" in result.stderr
    assert host.current() == "releases/A" and host.calls() == [] and host.preflights() == []


def test_a_preflight_whose_app_exits_is_not_waited_for(host):
    (host.stubs / "preflight-dead").touch()
    started = time.monotonic()
    result = host.run("B", timeout="30")
    assert result.returncode == 1 and host.restarts() == []
    assert time.monotonic() - started < 10, "waited for an app that had exited"
    assert "release B failed its preflight (its app exited)" in result.stderr
    assert (
        (host.root / "releases/B/BAD")
        .read_text()
        .startswith("health gate failed in preflight: its app exited")
    )


def test_the_first_release_and_app_preflight_no_switch_without_a_preflight(host):
    host.ready("B")
    result = subprocess.run(
        [str(host.script), "B"],
        env={**host.env, "APP_PREFLIGHT": "no"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert host.preflights() == [] and host.restarts() == ["restart releases/B"]
    # No live release to protect: the gate alone decides.
    (host.root / "current").unlink()
    host.ready("A")
    assert host.run("A").returncode == 0
    assert host.preflights() == [] and host.current() == "releases/A"


def test_interrupted_during_the_preflight_stops_it_and_changes_nothing(host):
    proc = host.start("B")  # B never answers, beside the live app or after a switch
    wait_until(lambda: host.preflights(), timeout=10, what="the preflight")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 143, err
    assert host.current() == "releases/A" and host.restarts() == []
    assert f"stop {layout.APP_PREFLIGHT_UNIT}" in host.calls()
    assert "interrupted; current is releases/A" in err
    assert not (host.root / "releases/B/BAD").exists()


def test_a_release_that_never_gets_ready_is_switched_back_and_marked_bad(host):
    host.ready("A")
    host.passes_preflight_only("B")
    result = host.run("B", timeout="1")
    assert result.returncode == 1
    assert host.current() == "releases/A"
    assert host.restarts() == ["restart releases/B", "restart releases/A"]
    # It returns once the previous release answers again, and says so.
    assert "switched back to releases/A (ready)" in result.stderr
    assert (host.root / "releases/B/BAD").read_text().startswith("health gate failed")


def test_switched_back_to_a_release_that_does_not_answer_says_so(host):
    host.passes_preflight_only("B")
    result = host.run("B", timeout="1")
    assert result.returncode == 1
    assert host.current() == "releases/A"
    assert "switched back to releases/A, but it is NOT ready after 1s" in result.stderr


def test_the_current_release_is_restarted_through_the_gate_and_never_marked_bad(host):
    host.ready("A")
    assert host.run("A").returncode == 0
    (host.stubs / "ready-A").unlink()
    result = host.run("A", timeout="1")
    assert result.returncode == 1
    assert "check its settings" in result.stderr
    assert host.current() == "releases/A"
    assert host.restarts() == ["restart releases/A"] * 2
    assert not (host.root / "releases/A/BAD").exists()


def test_an_unknown_release_is_refused_and_nothing_changes(host):
    result = host.run("C")
    assert result.returncode == 2 and "release C is not installed" in result.stderr
    assert host.current() == "releases/A" and host.restarts() == []


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)]
)
def test_interrupted_during_the_gate_switches_back(host, sig, code):
    host.passes_preflight_only("B")
    proc = host.start("B")  # B never answers /readyz once switched to
    wait_until(lambda: host.restarts() == ["restart releases/B"], timeout=10, what="the switch")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == code, err
    assert host.current() == "releases/A"
    assert host.restarts() == ["restart releases/B", "restart releases/A"]
    assert "interrupted: switched back to releases/A" in err


def test_interrupted_during_a_slow_restart_switches_back_at_once(host):
    (host.stubs / "slow-restart").touch()
    host.passes_preflight_only("B")
    # To a file: the stuck restart keeps a pipe open after the script is gone.
    errors = host.root.parent / "stderr"
    with open(errors, "w") as out:
        proc = host.start("B", stdout=out, stderr=out)
    wait_until(lambda: (host.stubs / "slow.pid").exists(), timeout=10, what="the slow restart")
    proc.send_signal(signal.SIGTERM)
    # Not after the minute the stuck restart would take: the trap runs at once.
    assert proc.wait(timeout=10) == 143, errors.read_text()
    assert "interrupted: switched back to releases/A" in errors.read_text()
    assert host.current() == "releases/A"
    assert host.restarts()[-1] == "restart releases/A"


def test_the_ssh_session_gone_the_gate_still_decides(host):
    """No terminal, so no SIGHUP: the output pipes just close. The script must not die of
    SIGPIPE half way (which would leave `current` on the release it was testing)."""
    host.passes_preflight_only("B")
    proc = host.start("B", timeout="2")
    wait_until(lambda: host.restarts() == ["restart releases/B"], timeout=10, what="the switch")
    proc.stdout.close()
    proc.stderr.close()
    assert proc.wait(timeout=20) == 1
    assert host.current() == "releases/A"
    assert host.restarts() == ["restart releases/B", "restart releases/A"]
    assert (host.root / "releases/B/BAD").exists()


def test_the_serial_switch_stops_after_a_host_whose_switch_failed(monkeypatch):
    """deploys.app.activated runs host by host (_serial): on each, it looks at the other app
    hosts, and a failed switch on one already done (switched back there) stops the rollout."""
    from types import SimpleNamespace

    from deploys import app

    def meta(error: bool | None):
        complete = error is not None
        return SimpleNamespace(
            operation_meta=SimpleNamespace(
                is_complete=lambda: complete, did_error=lambda: bool(error)
            )
        )

    class Host:  # hashable, as pyinfra's hosts are
        executing_op_hash = "op"

        def __init__(self, name: str) -> None:
            self.name = name

    hosts = [Host(n) for n in ("app", "app2", "app3")]
    monkeypatch.setattr(app, "inventory", SimpleNamespace(get_group=lambda *_: hosts))
    monkeypatch.setattr(app, "state", SimpleNamespace(ops={hosts[0]: {"op": meta(True)}}))
    monkeypatch.setattr(app, "host", hosts[2])
    assert app._failed_earlier() == ["app"]
    monkeypatch.setattr(app, "host", hosts[1])  # pyinfra's order need not be the inventory's
    assert app._failed_earlier() == ["app"]
    monkeypatch.setattr(app, "host", hosts[0])  # its own result is not an earlier one
    assert app._failed_earlier() == []
    monkeypatch.setattr(
        app, "state", SimpleNamespace(ops={hosts[0]: {"op": meta(False)}, hosts[1]: {}})
    )
    monkeypatch.setattr(app, "host", hosts[2])
    assert app._failed_earlier() == []


# systemctl that logs every call, and whose socket unit is inactive until started.
SYSTEMCTL_SOCKET = f"""#!/bin/sh
echo "$*" >> "$STUBS/calls.log"
case "$1" in
    is-active) case "$*" in *{layout.APP_SOCKET}*) [ -e "$STUBS/socket-active" ] ;; esac ;;
    start) [ "$2" = {layout.APP_SOCKET} ] && touch "$STUBS/socket-active"; exit 0 ;;
    *) exit 0 ;;
esac
"""


def test_the_first_switch_frees_the_port_for_the_socket_then_only_restarts(host):
    """A host whose app bound the port itself: the old app stops before the socket takes the
    port (else the socket cannot bind); once the socket is active, switches only restart
    the services, never the socket."""
    (host.stubs / "systemctl").write_text(SYSTEMCTL_SOCKET)
    host.ready("B")
    assert host.run("B").returncode == 0
    calls = (host.stubs / "calls.log").read_text().splitlines()
    restart = f"restart {SERVICES}"
    stop, start = f"stop {layout.APP_SERVICE}", f"start {layout.APP_SOCKET}"
    assert calls.index(stop) < calls.index(start) < calls.index(restart)
    (host.stubs / "calls.log").unlink()
    host.ready("A")
    assert host.run("A").returncode == 0
    calls = (host.stubs / "calls.log").read_text().splitlines()
    assert restart in calls
    # (the preflight's own unit is stopped, the app's are only restarted)
    assert not [c for c in calls if c.startswith(("stop", "start")) and "preflight" not in c]
    # (reset-failed only clears a failed state and systemd's start rate counter)
    touched = [c for c in calls if layout.APP_SOCKET in c]
    assert not [c for c in touched if not c.startswith(("is-active", "reset-failed"))]
    # Every restart asked for first flushes the start rate limit, the socket's too.
    reset = f"reset-failed {layout.APP_SOCKET} {SERVICES}"
    assert reset in calls and calls.index(reset) < calls.index(restart), calls
