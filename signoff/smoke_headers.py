"""The security-header smoke test against a deployed URL (`sparkops smoke-headers`).

Three parts, each reported as PASS/FAIL with what is wrong:

- **headers**: every route the app serves, and its error answers (401 without an API key,
  404, 405, 415), is
  requested once; each answer must carry the headers below, and every CSP nonce must be
  new (a cached or hard-coded nonce is as good as `'unsafe-inline'`);
- **inventory**: the resources the HTML pages reference (scripts, styles, images, frames,
  media, form targets), same-origin or third-party; a third-party script without
  Subresource Integrity fails;
- **browser**: headless Chromium loads the page: `crossOriginIsolated === true` and no CSP
  violation (`signoff.browser`).

The probes are the app's routes (`PROBES`; a test keeps them equal to the app's router). A
probe's status is reported; only the 404 and 405 probes must answer exactly that, since a
front end may add its own answers (401 from an API gateway) and the headers still count.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx

MIN_HSTS_MAX_AGE = 31_536_000  # one year, the HSTS preload list's minimum
SAFE_REFERRER = {"no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin"}


@dataclass(frozen=True)
class Probe:
    method: str
    path: str
    route: str  # the app's route template it exercises ("" for none: the 404)
    expect: int | None = None  # exact status required (None: any)
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


_JSON = (("content-type", "application/json"),)
_ORDER = (
    b'{"account_id":"smoke-no-such-account","symbol":"BTCUSDT","side":"buy",'
    b'"quantity":"0.001","price":"65000.00"}'
)


def probes() -> list[Probe]:
    """One request per route and per error answer (fresh ids so nothing is replayed)."""
    key = f"smoke-headers-{uuid.uuid4()}"
    return [
        Probe("GET", "/", "/"),
        Probe("GET", "/healthz", "/healthz"),
        Probe("GET", "/readyz", "/readyz"),
        Probe("GET", "/version", "/version"),
        Probe("GET", "/openapi.json", "/openapi.json"),
        # /metrics is on its own port, on the private address: the public one answers 404.
        Probe("GET", "/metrics", "", 404),
        Probe("GET", "/positions?account_id=smoke", "/positions"),
        Probe("GET", f"/orders/{uuid.uuid4()}", "/orders/{order_id}"),
        # Without an API key the data routes answer 401 (nothing is written): an error answer
        # whose headers count like the others.
        Probe("POST", "/orders", "/orders", None, _ORDER, (*_JSON, ("idempotency-key", key))),
        Probe("POST", "/csp-report", "/csp-report", None, b"x", (("content-type", "text/plain"),)),
        Probe("GET", f"/no-such-page-{uuid.uuid4().hex[:8]}", "", 404),
        Probe("DELETE", "/healthz", "/healthz", 405),
    ]


@dataclass
class Answer:
    probe: Probe
    status: int
    headers: httpx.Headers
    text: str
    problems: list[str] = field(default_factory=list)
    nonce: str | None = None

    @property
    def label(self) -> str:
        return f"{self.probe.method} {self.probe.path} ({self.status})"


def _directives(csp: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            out.setdefault(words[0].lower(), words[1:])
    return out


def check_headers(headers: httpx.Headers) -> tuple[list[str], str | None]:
    """The problems with one answer's security headers, and its CSP script nonce."""
    problems: list[str] = []

    def need(name: str, ok, wanted: str) -> None:
        value = headers.get(name)
        if value is None:
            problems.append(f"{name} missing (want {wanted})")
        elif not ok(value.strip()):
            problems.append(f"{name} is {value!r} (want {wanted})")

    nonce = None
    csp = headers.get("content-security-policy")
    if csp is None:
        problems.append("Content-Security-Policy missing")
    else:
        d = _directives(csp)
        scripts = d.get("script-src", d.get("default-src"))
        if scripts is None:
            problems.append("Content-Security-Policy has no script-src (nor default-src)")
        else:
            nonces = [s for s in scripts if re.fullmatch(r"'nonce-[A-Za-z0-9+/_=-]{16,}'", s)]
            if not nonces:
                problems.append("Content-Security-Policy script-src has no 'nonce-...'")
            else:
                nonce = nonces[0][7:-1]
            for bad in ("'unsafe-inline'", "'unsafe-eval'"):
                if bad in scripts:
                    problems.append(f"Content-Security-Policy script-src allows {bad}")
    need("Cross-Origin-Embedder-Policy", lambda v: v in {"require-corp", "credentialless"},
         "require-corp")  # fmt: skip
    need("Cross-Origin-Opener-Policy", lambda v: v == "same-origin", "same-origin")
    need("Cross-Origin-Resource-Policy", lambda v: v in {"same-origin", "same-site"},
         "same-origin")  # fmt: skip

    def hsts_ok(v: str) -> bool:
        age = re.search(r"max-age=\"?(\d+)", v, re.I)
        return (
            bool(age)
            and int(age.group(1)) >= MIN_HSTS_MAX_AGE
            and ("includesubdomains" in v.lower())
        )

    need("Strict-Transport-Security", hsts_ok,
         f"max-age >= {MIN_HSTS_MAX_AGE}; includeSubDomains")  # fmt: skip
    need("X-Content-Type-Options", lambda v: v.lower() == "nosniff", "nosniff")
    need("Referrer-Policy", lambda v: v.split(",")[-1].strip() in SAFE_REFERRER,
         " or ".join(sorted(SAFE_REFERRER)))  # fmt: skip
    need("X-Frame-Options", lambda v: v.upper() in {"DENY", "SAMEORIGIN"}, "DENY")
    need("Permissions-Policy", lambda v: bool(v), "a policy")
    return problems, nonce


def request_all(base_url: str, timeout: float = 10.0) -> list[Answer]:
    answers = []
    with httpx.Client(base_url=base_url, timeout=timeout, follow_redirects=False) as client:
        for probe in probes():
            r = client.request(
                probe.method, probe.path, content=probe.body or None, headers=dict(probe.headers)
            )
            answer = Answer(probe, r.status_code, r.headers, r.text)
            answer.problems, answer.nonce = check_headers(r.headers)
            if probe.expect is not None and r.status_code != probe.expect:
                answer.problems.append(f"status {r.status_code}, want {probe.expect}")
            answers.append(answer)
    nonces = [a.nonce for a in answers if a.nonce]
    for a in answers:
        if a.nonce and nonces.count(a.nonce) > 1:
            a.problems.append("CSP nonce is not fresh: the same nonce came on another answer")
        if a.nonce and "text/html" in a.headers.get("content-type", ""):
            used = set(re.findall(r"<script[^>]*\snonce=\"([^\"]*)\"", a.text))
            if used - {a.nonce}:
                a.problems.append("a <script> in the page carries a nonce not in the header")
    return answers


# --- the inventory of resources the pages reference ------------------------------------
_RESOURCE_ATTRS = {
    "script": "src",
    "img": "src",
    "iframe": "src",
    "frame": "src",
    "embed": "src",
    "source": "src",
    "audio": "src",
    "video": "src",
    "track": "src",
    "object": "data",
    "form": "action",
}
_LINK_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon", "manifest"}


@dataclass(frozen=True)
class Resource:
    page: str
    tag: str
    url: str
    third_party: bool
    integrity: bool


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str, bool]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        url = None
        if tag == "link" and _LINK_RELS & set(a.get("rel", "").lower().split()):
            url = a.get("href")
        elif tag in _RESOURCE_ATTRS:
            url = a.get(_RESOURCE_ATTRS[tag])
        if url:
            self.found.append((tag, url, "integrity" in a))
        for css_url in re.findall(r"url\(\s*['\"]?([^'\")]+)", a.get("style", "")):
            self.found.append((f"{tag}[style]", css_url, False))


def inventory(base_url: str, answers: list[Answer]) -> list[Resource]:
    origin = urlsplit(base_url)
    out = []
    for a in answers:
        if "text/html" not in a.headers.get("content-type", ""):
            continue
        parser = _Refs()
        parser.feed(a.text)
        for css_url in re.findall(r"url\(\s*['\"]?([^'\")]+)", a.text):
            parser.found.append(("style", css_url, False))
        page = a.probe.path
        for tag, url, integrity in parser.found:
            absolute = urlsplit(urljoin(base_url + page, url))
            third = absolute.scheme not in {"data", "blob"} and (
                (absolute.scheme, absolute.netloc) != (origin.scheme, origin.netloc)
            )
            out.append(Resource(page, tag, absolute.geturl(), third, integrity))
    return out


def inventory_problems(resources: list[Resource]) -> list[str]:
    return [
        f"third-party script without Subresource Integrity: {r.url} (on {r.page})"
        for r in resources
        if r.third_party and r.tag == "script" and not r.integrity
    ]


def html_pages(answers: list[Answer]) -> list[str]:
    return [
        a.probe.path
        for a in answers
        if a.status == 200 and "text/html" in a.headers.get("content-type", "")
    ]
