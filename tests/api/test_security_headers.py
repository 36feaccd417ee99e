"""Security headers on every response, errors included; CSP reports are counted."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Route

from app.config import Settings
from app.security import SecurityHeaders
from sparkops import metric_names
from testkit.appserver import AppServer
from testkit.proc import free_port
from tests.conftest import AUTH

EXPECTED = {
    "cross-origin-embedder-policy": "require-corp",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
NONCE = re.compile(r"script-src 'nonce-([A-Za-z0-9_-]{22,})'")


def assert_secure(response: httpx.Response) -> str:
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (name, response.status_code)
    assert response.headers["strict-transport-security"].startswith("max-age=63072000")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "report-uri /csp-report" in csp
    match = NONCE.search(csp)
    assert match, csp
    return match.group(1)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/", 200), ("GET", "/healthz", 200), ("GET", "/readyz", 200),
     ("GET", "/version", 200), ("GET", "/metrics", 404), ("GET", "/no/such/path", 404),
     ("DELETE", "/orders", 405), ("POST", "/orders", 400),
     ("GET", "/orders/not-a-uuid", 400), ("PATCH", "/healthz", 405),
     ("GET", "/positions?account_id=%00", 400), ("GET", "/positions?status=open%0A", 400),
     ("POST", "/csp-report", 415)],
)  # fmt: skip
def test_every_response_carries_the_headers(app_server, method, path, status):
    r = httpx.request(method, f"{app_server.url}{path}", headers=AUTH)
    assert r.status_code == status
    assert_secure(r)


def test_nonce_is_fresh_per_request_and_used_in_the_page(app_server):
    pages = [httpx.get(f"{app_server.url}/") for _ in range(3)]
    nonces = [assert_secure(p) for p in pages]
    assert len(set(nonces)) == 3
    for page, nonce in zip(pages, nonces, strict=True):
        assert f'<script nonce="{nonce}">' in page.text


def test_unhandled_error_response_still_carries_the_headers():
    async def boom(request):
        raise RuntimeError("boom")

    app = SecurityHeaders(Starlette(routes=[Route("/boom", boom)]), hsts_max_age=63072000)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def call():
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/boom")

    r = asyncio.run(call())
    assert r.status_code == 500
    assert_secure(r)


def test_database_down_gives_503_with_headers_and_the_log_says_why(db_stack, caplog):
    dead = f"host=127.0.0.1 port={free_port()} dbname=spark user=x password=y connect_timeout=1"
    settings = Settings(database_url=dead, release_id="r-dead", db_timeout_s=1.5)
    with AppServer(settings) as server:
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["reason"] == "not ready"
        assert ready.json() == {"status": "unavailable", "reason": "not ready"}
        assert any("pgBouncer" in r.getMessage() for r in caplog.records
                   if r.name == "spark.readiness")  # fmt: skip
        assert_secure(ready)
        r = httpx.post(
            f"{server.url}/orders",
            json={"account_id": "a", "symbol": "BTCUSDT", "side": "buy",
                  "quantity": "0.01", "price": "65000.00"},
            headers={**AUTH, "idempotency-key": str(uuid.uuid4())}, timeout=10,
        )  # fmt: skip
        assert r.status_code == 503 and r.json()["error"] == "database_unavailable"
        assert r.headers["retry-after"]
        assert_secure(r)
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # alive, not ready


def metric_value(server, name: str, **labels) -> float:
    text = httpx.get(server.metrics_url).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_csp_reports_are_counted_by_directive(app_server):
    name = metric_names.CSP_REPORTS
    before = metric_value(app_server, name, directive="script-src-elem")
    legacy = {"csp-report": {"violated-directive": "script-src-elem",
                             "blocked-uri": "https://evil.example/x.js"}}  # fmt: skip
    r = httpx.post(f"{app_server.url}/csp-report", json=legacy,
                   headers={"content-type": "application/csp-report"})  # fmt: skip
    assert r.status_code == 204
    modern = [{"type": "csp-violation", "body": {"effectiveDirective": "script-src-elem"}}]
    r = httpx.post(f"{app_server.url}/csp-report", json=modern,
                   headers={"content-type": "application/reports+json"})  # fmt: skip
    assert r.status_code == 204
    assert metric_value(app_server, name, directive="script-src-elem") == before + 2


def test_malformed_csp_report_is_refused(app_server):
    r = httpx.post(f"{app_server.url}/csp-report", content=b"{oops",
                   headers={"content-type": "application/csp-report"})  # fmt: skip
    assert r.status_code == 400
    assert_secure(r)


def test_http_duration_is_labelled_by_route_template(app_server):
    httpx.get(f"{app_server.url}/orders/{uuid.uuid4()}", headers=AUTH)
    value = metric_value(
        app_server, f"{metric_names.HTTP_REQUEST_DURATION}_count",
        route="/orders/{order_id}", method="GET", status="404",
    )  # fmt: skip
    assert value >= 1
