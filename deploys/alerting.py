"""Who hears about an alert, and how often: Alertmanager's receivers and routes from group data.

Receivers (`monitoring_alertmanager_receivers`), one dict each: a `name` and one or more of

    "slack":     {"channel": "#spark-ops"}                   secret: the incoming-webhook URL
    "pagerduty": {}                                          secret: the Events v2 routing key
    "email":     {"to": ..., "from": ..., "smarthost": "host:587", "auth_username": ...}
                                                             secret: the SMTP password
    "webhook":   {"url": "https://..."}                      no secret

Secret values never sit in the repository or the inventory: each is read from the
environment's secrets (`SPARKOPS_SECRET_ALERTMANAGER_<RECEIVER>_<KIND>` or the secrets file,
sparkops/secrets.py) and written to a file only Alertmanager reads, which the configuration
names (`api_url_file`, `routing_key_file`, `auth_password_file`).

Routes (`monitoring_alertmanager_routes`), in order, one dict per severity: `severity`,
`receivers` (every one of them is notified: all but the last carry `continue: true`), and
`group_wait`, `group_interval`, `repeat_interval`. Anything no route matches goes to
`monitoring_alertmanager_default_receiver` ("null": kept in Alertmanager, sent nowhere).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("slack", "pagerduty", "email", "webhook")
SECRET_KIND = {
    "slack": "api_url_file",
    "pagerduty": "routing_key_file",
    "email": "auth_password_file",
}
SECRETS_DIR = "/etc/prometheus/alertmanager-secrets"
NULL_RECEIVER = "null"
_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
_DURATION = re.compile(r"[0-9]+[smhd]")
EMAIL_FIELDS = ("to", "from", "smarthost")


class AlertingConfigError(ValueError):
    """The group data cannot make an Alertmanager configuration; the message says why."""


@dataclass(frozen=True)
class SecretFile:
    receiver: str
    kind: str

    @property
    def name(self) -> str:
        """The secret's name in the environment's secrets (and its SPARKOPS_SECRET_ variable)."""
        return f"alertmanager_{self.receiver}_{self.kind}".replace("-", "_")

    @property
    def path(self) -> str:
        return f"{SECRETS_DIR}/{self.receiver}-{self.kind}"


def validate(receivers: list[dict], routes: list[dict], default_receiver: str) -> None:
    names = set()
    for r in receivers:
        name = r.get("name", "")
        if not _NAME.fullmatch(name) or name == NULL_RECEIVER:
            raise AlertingConfigError(f"receiver name {name!r}: want 1-32 of a-z 0-9 -")
        if name in names:
            raise AlertingConfigError(f"receiver {name!r} is declared twice")
        names.add(name)
        unknown = set(r) - {"name", *KINDS}
        if unknown:
            raise AlertingConfigError(
                f"receiver {name!r}: unknown key(s) {sorted(unknown)}; kinds are {KINDS}"
            )
        if not set(r) & set(KINDS):
            raise AlertingConfigError(f"receiver {name!r} has none of {KINDS}")
        missing = [f for f in EMAIL_FIELDS if "email" in r and not r["email"].get(f)]
        if missing:
            raise AlertingConfigError(f"receiver {name!r}: email needs {missing}")
        if "webhook" in r and not str(r["webhook"].get("url", "")).startswith("https://"):
            raise AlertingConfigError(f"receiver {name!r}: webhook needs an https:// url")
    known = names | {NULL_RECEIVER}
    if default_receiver not in known:
        raise AlertingConfigError(f"default receiver {default_receiver!r} is not declared")
    severities = set()
    for route in routes:
        severity = route.get("severity")
        if not severity or severity in severities:
            raise AlertingConfigError(f"route {route}: want one route per severity")
        severities.add(severity)
        if not route.get("receivers"):
            raise AlertingConfigError(f"route for {severity!r} names no receiver")
        for name in route["receivers"]:
            if name not in known:
                raise AlertingConfigError(
                    f"route for {severity!r} names receiver {name!r}, which is not declared"
                )
        for key in ("group_wait", "group_interval", "repeat_interval"):
            if not _DURATION.fullmatch(str(route.get(key, ""))):
                raise AlertingConfigError(f"route for {severity!r}: {key} like 30s, 5m or 4h")


def secret_files(receivers: list[dict]) -> list[SecretFile]:
    return [
        SecretFile(r["name"], kind)
        for r in receivers
        for kind in SECRET_KIND
        if kind in r and (kind != "email" or r["email"].get("auth_username"))
    ]


def child_routes(routes: list[dict]) -> list[dict]:
    """One Alertmanager route per (severity, receiver); all notified, in the order given."""
    out = []
    for route in routes:
        names = route["receivers"]
        for i, name in enumerate(names):
            out.append(
                {
                    "receiver": name,
                    "severity": route["severity"],
                    "continue": i < len(names) - 1,
                    "group_wait": route["group_wait"],
                    "group_interval": route["group_interval"],
                    "repeat_interval": route["repeat_interval"],
                }
            )
    return out
