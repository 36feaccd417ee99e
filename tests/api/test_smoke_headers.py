"""`sparkops smoke-headers` against the real app on uvicorn, and against broken servers: the
real app behind a front end that strips or weakens a header, and a page that breaks its own
CSP. The browser check runs Debian's real Chromium."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from app.config import Settings
from app.main import create_app
from app.security import SecurityHeaders
from signoff import smoke_headers
from sparkops.wait import wait_until
from testkit.proc import free_port

SPARKOPS = str(Path(sys.executable).parent / "sparkops")
Headers = list[tuple[bytes, bytes]]


class Rewrite:
    """A front end that changes the app's response headers (the breakage under test)."""

    def __init__(self, app, change: Callable[[Headers], Headers]):
        self.app, self.change = app, change

    async def __call__(self, scope, receive, send):
        async def rewritten(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": self.change(list(message["headers"]))}
            await send(message)

        await self.app(scope, receive, rewritten)


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    port = free_port("127.0.0.1")
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=20, what="uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def smoke(url: str, tmp_path: Path | None = None) -> tuple[int, dict, str]:
    args = [SPARKOPS, "smoke-headers", "--base-url", url, "--json"]
    if tmp_path is not None:
        args += ["--evidence-dir", str(tmp_path)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=180)
    return r.returncode, json.loads(r.stdout), r.stderr


def without(name: bytes) -> Callable[[Headers], Headers]:
    return lambda headers: [h for h in headers if h[0].lower() != name]


def replaced(name: bytes, value: bytes) -> Callable[[Headers], Headers]:
    return lambda headers: [*without(name)(headers), (name, value)]


@pytest.fixture(scope="module")
def app_settings(db_stack) -> Settings:
    return Settings(database_url=db_stack.app_conninfo(), release_id="smoke-release")


def test_the_real_app_passes_every_check(app_server, tmp_path):
    code, result, stderr = smoke(app_server.url, tmp_path)
    assert code == 0, stderr
    assert result["ok"] and not any(result["failures"].values())
    statuses = {a["status"] for a in result["answers"]}
    assert {200, 401, 404, 405, 415} <= statuses, statuses  # 401: the data routes, no key
    (page,) = result["browser"]
    assert page["cross_origin_isolated"] is True and page["violations"] == []
    assert "--headless" in page["flags"] and "--disable-background-networking" in page["flags"]
    for name in ("headers", "inventory", "browser"):
        assert (tmp_path / f"csp_smoke_{name}.txt").read_text().startswith(f"PASS {name}")
    assert "== browser: PASS" in stderr


def test_a_front_end_that_strips_coep_fails_naming_it(app_settings):
    app = Rewrite(create_app(app_settings), without(b"cross-origin-embedder-policy"))
    with serve(app) as url:
        code, result, stderr = smoke(url)
    assert code == 1
    headers = result["failures"]["headers"]
    assert len(headers) == len(result["answers"])  # every answer, errors included
    assert all("Cross-Origin-Embedder-Policy missing" in f for f in headers)
    assert any("crossOriginIsolated is false" in f for f in result["failures"]["browser"])
    assert result["failures"]["inventory"] == []  # the other checks still ran
    assert "Cross-Origin-Embedder-Policy missing" in stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (without(b"strict-transport-security"), "Strict-Transport-Security missing"),
        (replaced(b"strict-transport-security", b"max-age=63072000"), "includeSubDomains"),
        (replaced(b"strict-transport-security", b"max-age=60; includeSubDomains"), "max-age >="),
        (without(b"x-content-type-options"), "X-Content-Type-Options missing"),
        (replaced(b"referrer-policy", b"unsafe-url"), "Referrer-Policy is 'unsafe-url'"),
        (without(b"x-frame-options"), "X-Frame-Options missing"),
        (without(b"permissions-policy"), "Permissions-Policy missing"),
        (replaced(b"cross-origin-opener-policy", b"unsafe-none"), "Cross-Origin-Opener-Policy is"),
        (without(b"cross-origin-resource-policy"), "Cross-Origin-Resource-Policy missing"),
        (without(b"content-security-policy"), "Content-Security-Policy missing"),
        (replaced(b"content-security-policy",
                  b"default-src 'none'; script-src 'nonce-AAAAAAAAAAAAAAAAAAAAAAAA'"),
         "CSP nonce is not fresh"),
        (replaced(b"content-security-policy",
                  b"script-src 'nonce-AAAAAAAAAAAAAAAAAAAAAAAA' 'unsafe-inline' 'unsafe-eval'"),
         "script-src allows 'unsafe-eval'"),
        (replaced(b"content-security-policy", b"script-src 'self'"), "has no 'nonce-...'"),
    ],
)  # fmt: skip
def test_each_weakened_header_is_named(app_settings, change, message):
    with serve(Rewrite(create_app(app_settings), change)) as url:
        answers = smoke_headers.request_all(url)
    problems = [p for a in answers for p in a.problems]
    assert any(message in p for p in problems), problems
    assert all(any(message in p for p in a.problems) for a in answers), "not on every answer"


def _broken_page_app():
    async def page(request):
        return HTMLResponse(
            "<!doctype html><title>broken</title>"
            '<script src="https://cdn.example.invalid/lib.js"></script>'
            '<link rel="stylesheet" href="/static/site.css">'
            "<script>document.title = 'inline, no nonce'</script>"
        )

    return SecurityHeaders(Starlette(routes=[Route("/", page)]), hsts_max_age=63072000)


def test_a_page_that_breaks_its_csp_fails_in_the_browser_and_the_inventory():
    with serve(_broken_page_app()) as url:
        code, result, _ = smoke(url)
    assert code == 1
    # The headers are right; only the probes' statuses differ on this one-page app.
    assert all("status" in f for f in result["failures"]["headers"])
    (page,) = result["browser"]
    assert page["cross_origin_isolated"] is True
    assert any(v.startswith("script-src-elem") for v in page["violations"]), page
    third = [r for r in result["resources"] if r["third_party"]]
    assert [r["url"] for r in third] == ["https://cdn.example.invalid/lib.js"]
    same = [r["url"] for r in result["resources"] if not r["third_party"]]
    assert same == [f"{url}/static/site.css"]
    assert any("without Subresource Integrity" in f for f in result["failures"]["inventory"])


def test_the_probes_cover_every_route_of_the_app(app_settings):
    app = create_app(app_settings)
    while not hasattr(app, "routes"):
        app = app.app
    served = {route.path for route in app.routes}
    probed = {p.route for p in smoke_headers.probes()} - {""}
    assert served == probed


def test_bad_input_is_refused_with_a_clear_message():
    r = subprocess.run([SPARKOPS, "smoke-headers", "--base-url", "example.org"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "want http(s)://host" in r.stderr
    url = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    r = subprocess.run([SPARKOPS, "smoke-headers", "--base-url", url],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 1 and f"cannot reach {url}" in r.stderr
