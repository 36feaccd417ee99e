"""Debian's Chromium, headless, driven over the DevTools protocol on a pipe.

`--remote-debugging-pipe` gives the protocol on file descriptors 3 (to the browser) and 4
(from it), NUL-terminated JSON: no port to find or to leave open. Before the page's own
scripts run, a listener for `securitypolicyviolation` is added through
`Page.addScriptToEvaluateOnNewDocument` (DevTools scripts are not subject to the page's CSP);
after the load event the page is asked for `crossOriginIsolated` and what the listener saw.
The browser's console messages about the policy are collected too, so a violation that
happens before the listener (none should) is still counted.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sparkops import programs

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")

LISTENER = """
window.__sparkCspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__sparkCspViolations.push(
    e.effectiveDirective + " blocked " + (e.blockedURI || "inline") + " at line " + e.lineNumber);
}, true);
"""

# After the load event, one more turn of the event loop for late violation events.
REPORT = """
new Promise((done) => setTimeout(() => done(JSON.stringify({
  crossOriginIsolated: self.crossOriginIsolated,
  isSecureContext: self.isSecureContext,
  violations: window.__sparkCspViolations || null,
  title: document.title,
})), 0))
"""


class BrowserError(RuntimeError):
    """Chromium could not load the page or did not answer in time; the message says which."""


@dataclass
class PageReport:
    url: str
    cross_origin_isolated: bool
    secure_context: bool
    violations: list[str]
    console: list[str] = field(default_factory=list)
    title: str = ""
    flags: tuple[str, ...] = ()

    @property
    def problems(self) -> list[str]:
        out = []
        if not self.cross_origin_isolated:
            why = "" if self.secure_context else " (not a secure context)"
            out.append(f"crossOriginIsolated is false in the browser{why}")
        for v in self.violations:
            out.append(f"CSP violation: {v}")
        if not self.violations:  # the console repeats what the listener saw; else it is new
            out.extend(f"browser console: {line}" for line in self.console)
        return out


def _trusted_locally(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return urlsplit(url).scheme == "https" or host in {"localhost", "127.0.0.1", "::1"}


class _Pipe:
    def __init__(self, to_browser: int, from_browser: int, deadline: float):
        self.out, self.inp, self.deadline = to_browser, from_browser, deadline
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _read_message(self) -> dict:
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("chromium did not answer within the deadline")
            ready, _, _ = select.select([self.inp], [], [], left)
            if ready:
                chunk = os.read(self.inp, 65536)
                if not chunk:
                    raise BrowserError("chromium closed the DevTools pipe (it exited)")
                self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.out, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read_message()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, session: str) -> dict:
        while True:
            for event in self.events:
                if event["method"] == method and event.get("sessionId") == session:
                    return event
            self.events.append(self._read_message())


def _console_lines(events: list[dict]) -> list[str]:
    lines = []
    for event in events:
        if event["method"] == "Log.entryAdded":
            text = event["params"]["entry"].get("text", "")
        elif event["method"] == "Runtime.exceptionThrown":
            text = event["params"]["exceptionDetails"].get("text", "")
        else:
            continue
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            lines.append(text[:300])
    return lines


def check_page(url: str, timeout: float = 30.0) -> PageReport:
    """Load `url` in headless Chromium; report isolation and CSP violations."""
    chromium = programs.require("chromium")
    flags = list(FLAGS)
    if not _trusted_locally(url):
        # crossOriginIsolated needs a secure context: plain http to a lab address is not one.
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
        flags.append(f"--unsafely-treat-insecure-origin-as-secure={origin}")
    profile = tempfile.mkdtemp(prefix="sparkops-chromium-")
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    # The browser's ends must become its fds 3 and 4: a small Python shim (this interpreter)
    # moves them there and execs Chromium; above 9 first, so neither overwrites the other.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser_r, from_browser_w)]
    for fd in (to_browser_r, from_browser_w):
        os.close(fd)
    to_browser_r, from_browser_w = high
    shim = (
        "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
        "os.execv(sys.argv[3], sys.argv[3:])"
    )
    args = [sys.executable, "-c", shim, str(to_browser_r), str(from_browser_w), chromium,
            *flags, "--remote-debugging-pipe", f"--user-data-dir={profile}", "--no-first-run",
            "--no-default-browser-check", "about:blank"]  # fmt: skip
    proc = subprocess.Popen(
        args,
        pass_fds=(to_browser_r, from_browser_w),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    os.close(to_browser_r)
    os.close(from_browser_w)
    pipe = _Pipe(to_browser_w, from_browser_r, time.monotonic() + timeout)
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            pipe.call(domain, session=session)
        pipe.call("Page.addScriptToEvaluateOnNewDocument", {"source": LISTENER}, session)
        nav = pipe.call("Page.navigate", {"url": url}, session)
        if nav.get("errorText"):
            raise BrowserError(f"chromium could not load {url}: {nav['errorText']}")
        pipe.wait_event("Page.loadEventFired", session)
        result = pipe.call(
            "Runtime.evaluate",
            {"expression": REPORT, "awaitPromise": True, "returnByValue": True},
            session,
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"the report script failed: {result['exceptionDetails']}")
        data = json.loads(result["result"]["value"])
        try:
            pipe.call("Browser.close")
        except BrowserError:
            pass  # it may exit before it answers
    except BrowserError as exc:
        stderr = _stop(proc)
        raise BrowserError(f"{exc}; chromium's stderr ends: {stderr[-400:]}") from None
    finally:
        os.close(to_browser_w)
        os.close(from_browser_r)
        if proc.returncode is None:
            _stop(proc)
        shutil.rmtree(profile, ignore_errors=True)
    return PageReport(
        url=url,
        cross_origin_isolated=data["crossOriginIsolated"] is True,
        secure_context=data["isSecureContext"] is True,
        violations=list(data["violations"] or []),
        console=_console_lines(pipe.events),
        title=data.get("title", ""),
        flags=tuple(flags),
    )


def _stop(proc: subprocess.Popen) -> str:
    """End the browser (its whole process group) and return what it wrote on stderr."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, 15)
        except ProcessLookupError:
            pass
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        _, err = proc.communicate()
    return (err or b"").decode(errors="replace")
