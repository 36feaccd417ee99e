"""The order of a switch behind load balancers (deploys.app._drained_switch): preflight while
the host still serves, then drain, switch, ready. Hosts here are stand-ins that record the
commands pyinfra would run over SSH; what the commands do is tested on their own
(tests/deploys/test_activate_script.py, the lb tool's tests) and together on the lab
(tests/lab/test_two_app_hosts.py, bench/lb_switch.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

from deploys import app as app_deploy


@dataclass
class Line:
    line: str


@dataclass
class FakeHost:
    name: str
    ran: list[tuple[str, str]]
    fails: tuple[str, ...] = ()
    data: dict = field(default_factory=dict)
    logged: list[str] = field(default_factory=list)

    def run_shell_command(self, command, _sudo: bool):
        text = str(command)
        self.ran.append((self.name, text))
        ok = not any(word in text for word in self.fails)
        said = f"{self.name}: {'ok' if ok else 'failed'}"
        return ok, [Line(said), Line(f"{said}, second line")]

    def log(self, message: str, log_func=None) -> None:
        self.logged.append((getattr(log_func, "__name__", "info"), message))


def _hosts(app_fails=()):
    ran: list[tuple[str, str]] = []
    app = FakeHost("app", ran, fails=app_fails)
    lbs = [FakeHost("lb", ran), FakeHost("lb2", ran)]
    state = SimpleNamespace(config=SimpleNamespace(SUDO=False))
    return state, app, lbs, ran


def _kinds(ran):
    """Each command as (host, what): preflight, switch, drain or ready."""
    out = []
    for where, text in ran:
        if "APP_PREFLIGHT=only" in text:
            out.append((where, "preflight"))
        elif "APP_PREFLIGHT=no" in text:
            out.append((where, "switch"))
        else:
            out.append((where, text.split()[1]))  # the lb tool's action
    return out


def test_the_preflight_runs_before_the_drain_and_the_switch_skips_it():
    state, app, lbs, ran = _hosts()
    assert app_deploy._drained_switch(state, app, "B", lbs) is True
    assert ("info", "drain on lb2: lb2: ok, second line") in app.logged
    assert all(level == "info" for level, _ in app.logged)
    assert _kinds(ran) == [
        ("app", "preflight"),
        ("lb", "drain"),
        ("lb2", "drain"),
        ("app", "switch"),
        ("lb", "ready"),
        ("lb2", "ready"),
    ]
    assert ran[0][1] == f"APP_PREFLIGHT=only {app_deploy.ACTIVATE} B"
    assert ran[3][1] == f"APP_PREFLIGHT=no {app_deploy.ACTIVATE} B"
    # The drain names this host in the app backend.
    assert all(" app " in f" {text} " for where, text in ran if where.startswith("lb"))


def test_a_release_failing_its_preflight_never_takes_the_host_out_of_rotation():
    state, app, lbs, ran = _hosts(app_fails=("APP_PREFLIGHT=only",))
    assert app_deploy._drained_switch(state, app, "B", lbs) is False
    assert _kinds(ran) == [("app", "preflight")]
    # Why, line by line under the host's name, as warnings (they stand out in the output).
    assert app.logged == [("warning", "app: failed"), ("warning", "app: failed, second line")]


def test_a_failed_switch_still_puts_the_host_back():
    state, app, lbs, ran = _hosts(app_fails=("APP_PREFLIGHT=no",))
    assert app_deploy._drained_switch(state, app, "B", lbs) is False
    assert [k for _, k in _kinds(ran)] == [
        "preflight", "drain", "drain", "switch", "ready", "ready"
    ]  # fmt: skip
