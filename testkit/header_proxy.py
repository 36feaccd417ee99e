"""A throwaway reverse proxy on loopback that drops some response headers: a front end that
strips a security header, for the tests that check `validate` and `smoke-headers` notice.

    with HeaderStrippingProxy("http://10.220.0.11:8000", {"x-frame-options"}) as proxy:
        ... proxy.url ...
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the server below sets itself.
_NOT_FORWARDED = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                  "proxy-connection", "content-length", "host", "server", "date"}  # fmt: skip


class HeaderStrippingProxy:
    def __init__(self, upstream: str, strip: set[str]) -> None:
        self.upstream = upstream.rstrip("/")
        self.strip = {h.lower() for h in strip}
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HeaderStrippingProxy:
        proxy = self
        client = httpx.Client(base_url=self.upstream, timeout=30)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                proxy.requests += 1
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in _NOT_FORWARDED}  # fmt: skip
                r = client.request(self.command, self.path, content=body, headers=headers)
                self.send_response(r.status_code)
                for name, value in r.headers.multi_items():
                    if name.lower() not in _NOT_FORWARDED | proxy.strip | {"content-encoding"}:
                        self.send_header(name, value)
                self.send_header("content-length", str(len(r.content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(r.content)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _forward

            def log_message(self, *args) -> None:
                pass

        self._client = client
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._client.close()
            self._server = None

    def __enter__(self) -> HeaderStrippingProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
