"""Alertmanager's configuration from group data, checked by Alertmanager's own `amtool`:
`check-config` on what the deploy renders, and `config routes test` for where each severity
(and each generated alert) goes: critical pages and reaches chat, warnings reach chat and
e-mail, anything else e-mail; the lab's empty data sends nothing anywhere."""

from __future__ import annotations

import runpy
import subprocess

import pytest

from alerts import rules
from deploys import alerting, monitoring, support
from sparkops import secrets

PRODUCTION = runpy.run_path(str(support.REPO_ROOT / "inventories/group_data/production.py"))
MONITOR = {
    **monitoring.DEFAULTS,
    **runpy.run_path(str(support.REPO_ROOT / "inventories/group_data/monitor.py")),
}
EXPECTED = {"critical": "pager,chat", "warning": "chat,mail", "": "mail"}


def render(data: dict) -> str:
    receivers = data["monitoring_alertmanager_receivers"]
    routes = data["monitoring_alertmanager_routes"]
    default = data["monitoring_alertmanager_default_receiver"]
    alerting.validate(receivers, routes, default)
    return support.render(
        "monitoring/alertmanager.yml.j2",
        receivers=receivers,
        routes=alerting.child_routes(routes),
        default_receiver=default,
        secrets_dir=alerting.SECRETS_DIR,
    )


def amtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["amtool", *args], capture_output=True, text=True, timeout=60)


def routes_test(config, *labels: str) -> str:
    r = amtool("config", "routes", "test", f"--config.file={config}", *labels)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture
def production_config(tmp_path):
    path = tmp_path / "alertmanager.yml"
    path.write_text(render(PRODUCTION))
    return path


def test_production_config_passes_amtool_with_slack_pagerduty_and_email(production_config):
    r = amtool("check-config", str(production_config))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout and "1 inhibit rules" in r.stdout
    text = production_config.read_text()
    for setting in ("slack_configs", "pagerduty_configs", "email_configs"):
        assert setting in text
    for secret in alerting.secret_files(PRODUCTION["monitoring_alertmanager_receivers"]):
        assert f'"{secret.path}"' in text  # the file, never the value


def test_routing_by_severity_escalates_critical_to_the_pager(production_config):
    for severity, receivers in EXPECTED.items():
        labels = [f"severity={severity}"] if severity else []
        assert routes_test(production_config, "alertname=Any", *labels) == receivers, severity
    r = amtool("config", "routes", "test", f"--config.file={production_config}",
               "--verify.receivers=chat", "severity=critical")  # fmt: skip
    assert r.returncode != 0, "a critical alert must not reach chat only"


def test_every_generated_alert_reaches_a_person(production_config):
    severities = {a.severity for a in rules.ALERTS}
    assert severities <= {"critical", "warning"}, severities
    for alert in rules.ALERTS:
        got = routes_test(
            production_config, f"alertname={alert.name}", f"severity={alert.severity}"
        )
        assert got == EXPECTED[alert.severity], alert.name


def test_the_intervals_are_the_chosen_ones(production_config):
    import yaml

    routes = yaml.safe_load(production_config.read_text())["route"]["routes"]
    pager = next(r for r in routes if r["receiver"] == "pager")
    assert (pager["group_wait"], pager["repeat_interval"]) == ("10s", "1h")
    warning_chat = next(r for r in routes if r["matchers"] == ['severity="warning"'])
    assert warning_chat["repeat_interval"] == "12h" and warning_chat["continue"] is True


def test_lab_data_sends_nothing_anywhere(tmp_path):
    path = tmp_path / "alertmanager.yml"
    path.write_text(render(MONITOR))
    assert amtool("check-config", str(path)).returncode == 0
    assert routes_test(path, "severity=critical") == "null"


def test_amtool_catches_what_validate_would_have(tmp_path):
    path = tmp_path / "alertmanager.yml"
    path.write_text(render(PRODUCTION).replace('receiver: "pager"', 'receiver: "pagre"'))
    r = amtool("check-config", str(path))
    assert r.returncode != 0 and "pagre" in r.stdout + r.stderr


@pytest.mark.parametrize(
    ("receivers", "routes", "default", "message"),
    [
        ([{"name": "chat", "slack": {"channel": "#x"}}],
         [{"severity": "critical", "receivers": ["pager"], "group_wait": "10s",
           "group_interval": "5m", "repeat_interval": "1h"}], "null", "'pager', which is not"),
        ([{"name": "chat"}], [], "null", "has none of"),
        ([{"name": "m", "email": {"to": "a@b"}}], [], "null", "email needs"),
        ([{"name": "a", "slack": {}}, {"name": "a", "slack": {}}], [], "null", "declared twice"),
        ([{"name": "w", "webhook": {"url": "http://x"}}], [], "null", "https://"),
        ([], [], "chat", "default receiver 'chat'"),
        ([{"name": "chat", "slack": {"channel": "#x"}}],
         [{"severity": "warning", "receivers": ["chat"], "group_wait": "soon",
           "group_interval": "5m", "repeat_interval": "1h"}], "null", "group_wait like"),
    ],
)  # fmt: skip
def test_bad_group_data_is_refused_naming_the_problem(receivers, routes, default, message):
    with pytest.raises(alerting.AlertingConfigError, match=message):
        alerting.validate(receivers, routes, default)


def test_receiver_secrets_come_from_outside_and_are_never_made_up(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKOPS_SECRETS_DIR", str(tmp_path))
    names = [s.name for s in alerting.secret_files(PRODUCTION["monitoring_alertmanager_receivers"])]
    assert names == [
        "alertmanager_chat_slack",
        "alertmanager_pager_pagerduty",
        "alertmanager_mail_email",
    ]
    monkeypatch.delenv("SPARKOPS_SECRET_ALERTMANAGER_CHAT_SLACK", raising=False)
    with pytest.raises(secrets.SecretsError, match="SPARKOPS_SECRET_ALERTMANAGER_CHAT_SLACK"):
        secrets.provided("production", "alertmanager_chat_slack")
    assert not (tmp_path / "production" / "secrets.json").exists(), "nothing was generated"
    monkeypatch.setenv("SPARKOPS_SECRET_ALERTMANAGER_CHAT_SLACK", "https://hooks.slack.test/T/B/x")
    assert secrets.provided("production", "alertmanager_chat_slack").endswith("/x")
