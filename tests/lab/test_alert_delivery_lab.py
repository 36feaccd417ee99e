"""A firing alert reaches a Slack-compatible receiver through the lab's Alertmanager.

The monitor host's Alertmanager gets the configuration the deploy renders for a `slack`
receiver (its webhook URL in the secret file the configuration names), pointed at a tiny
HTTP server this test runs on the lab bridge (this machine as the hosts see it, where the
lab's own apt proxy listens). An alert posted to Alertmanager's API must arrive there as
Slack's incoming-webhook payload: channel, title and text from the template. The original
configuration is put back and reloaded afterwards.
"""

from __future__ import annotations

import json
import shlex
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deploys import alerting
from lab import config as lab_config
from sparkops import defaults, webaccess
from sparkops.wait import wait_until
from tests.deploys.test_alertmanager import render
from tests.lab.stack import by_group, on_host

pytestmark = [pytest.mark.lab]

AM_CONFIG = "/etc/prometheus/alertmanager.yml"
AM_UNIT = "prometheus-alertmanager.service"
CHANNEL = "#lab-delivery-test"


class SlackReceiver:
    """Records every JSON body POSTed to it, answering `ok` as Slack does."""

    def __init__(self, host: str) -> None:
        self.payloads: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                receiver.payloads.append(
                    {"path": self.path, "body": json.loads(self.rfile.read(length) or b"{}")}
                )
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/services/lab/test"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _put(monitor, path: str, text: str, mode: str, group: str = "root") -> None:
    on_host(monitor, f"install -m {mode} -o root -g {group} /dev/null {path} && "
                     f"printf %s {shlex.quote(text)} > {path}")  # fmt: skip


def test_a_firing_alert_reaches_a_slack_receiver_with_the_templated_payload(deployed):
    monitor = by_group(deployed["hosts"], "monitor")
    receivers = [{"name": "chat", "slack": {"channel": CHANNEL}}]
    routes = [{"severity": "warning", "receivers": ["chat"], "group_wait": "1s",
               "group_interval": "1m", "repeat_interval": "1h"}]  # fmt: skip
    data = {"monitoring_alertmanager_receivers": receivers,
            "monitoring_alertmanager_routes": routes,
            "monitoring_alertmanager_default_receiver": alerting.NULL_RECEIVER}  # fmt: skip
    (secret,) = alerting.secret_files(receivers)
    am = webaccess.monitor_url(monitor["ip"], defaults.ALERTMANAGER_PORT, "lab")
    # An instance of its own: an alert left in Alertmanager by an earlier run (resolved, and
    # told as resolved once the Slack route exists) is not this one.
    instance = f"lab-delivery-{uuid.uuid4().hex[:8]}"

    def ours(payloads: list[dict]) -> list[dict]:
        def about_it(p: dict) -> bool:
            return any(instance in a.get("text", "") for a in p["body"].get("attachments", []))

        return [p for p in payloads if about_it(p)]

    # Put back exactly as the deploy left it (content, mode, group; no secrets directory it
    # did not make): the next site deploy must find nothing to change (second_deploy).
    original = on_host(monitor, f"cat {AM_CONFIG}")
    mode, group = on_host(monitor, f"stat -c '%a %G' {AM_CONFIG}").split()
    had_secrets_dir = on_host(monitor, f"test -d {alerting.SECRETS_DIR} && echo yes || true")
    receiver = SlackReceiver(lab_config.BRIDGE_IP)
    try:
        on_host(monitor, f"install -d -m 750 -o root -g prometheus {alerting.SECRETS_DIR}")
        _put(monitor, secret.path, receiver.url, "640", group="prometheus")
        _put(monitor, AM_CONFIG, render(data), mode, group=group)
        on_host(monitor, f"amtool check-config {AM_CONFIG} && systemctl reload {AM_UNIT}")
        wait_until(
            lambda: (
                CHANNEL
                in webaccess.get(f"{am}/api/v2/status", timeout=5).json()["config"]["original"]
            ),
            timeout=30,
            what="Alertmanager to load the Slack receiver",
        )
        alert = {
            "labels": {"alertname": "LabDeliveryTest", "severity": "warning",
                       "instance": instance},
            "annotations": {"summary": "A test alert from the lab.",
                            "runbook_url": "docs/alerts.md#labdeliverytest"},
        }  # fmt: skip
        with webaccess.client(am, timeout=10) as client:
            r = client.post(f"{am}/api/v2/alerts", json=[alert])
        assert r.status_code == 200, r.text
        wait_until(lambda: ours(receiver.payloads), timeout=60, what="the Slack payload")
    finally:
        receiver.stop()
        _put(monitor, AM_CONFIG, original, mode, group=group)
        on_host(monitor, f"rm -f {secret.path} && systemctl reload {AM_UNIT}")
        if not had_secrets_dir.strip():
            on_host(monitor, f"rmdir {alerting.SECRETS_DIR}")
    got = ours(receiver.payloads)[0]
    assert got["path"] == "/services/lab/test"
    body = got["body"]
    assert body["channel"] == CHANNEL
    (attachment,) = body["attachments"]
    assert attachment["title"] == "WARNING: LabDeliveryTest"
    assert attachment["text"].strip() == (
        f"A test alert from the lab. ({instance}) docs/alerts.md#labdeliverytest"
    )
    assert attachment["color"] == "danger"  # firing, not resolved
    wait_until(  # the lab's own configuration is back
        lambda: (
            CHANNEL
            not in webaccess.get(f"{am}/api/v2/status", timeout=5).json()["config"]["original"]
        ),
        timeout=30,
        what="Alertmanager to load the lab's configuration again",
    )
