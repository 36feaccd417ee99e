"""Security headers on every response, errors and 404s included.

A pure ASGI middleware, outermost in the stack: it wraps `send`, so whatever produces the
response (a route, Starlette's error handling, a 404) goes out with the headers. The CSP
nonce is fresh per request and left in `scope["state"]["csp_nonce"]` for HTML responses.
"""

from __future__ import annotations

import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP_REPORT_PATH = "/csp-report"
CSP_REPORT_GROUP = "csp-endpoint"


def content_security_policy(nonce: str) -> str:
    directives = [
        "default-src 'none'",
        f"script-src 'nonce-{nonce}' 'strict-dynamic'",
        f"style-src 'nonce-{nonce}'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        f"report-uri {CSP_REPORT_PATH}",
        f"report-to {CSP_REPORT_GROUP}",
    ]
    return "; ".join(directives)


def static_headers(hsts_max_age: int) -> list[tuple[bytes, bytes]]:
    values = {
        "strict-transport-security": f"max-age={hsts_max_age}; includeSubDomains",
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cross-origin-embedder-policy": "require-corp",
        "cross-origin-opener-policy": "same-origin",
        "cross-origin-resource-policy": "same-origin",
        "x-frame-options": "DENY",
        "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
        "reporting-endpoints": f'{CSP_REPORT_GROUP}="{CSP_REPORT_PATH}"',
    }
    return [(k.encode(), v.encode()) for k, v in values.items()]


class SecurityHeaders:
    def __init__(self, app: ASGIApp, hsts_max_age: int):
        self.app = app
        self.static = static_headers(hsts_max_age)
        self.names = {name for name, _ in self.static} | {b"content-security-policy"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(18)
        scope.setdefault("state", {})["csp_nonce"] = nonce
        csp = content_security_policy(nonce).encode()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Ours replace any the app set, so no route can weaken them by accident.
                headers = [h for h in message.get("headers", []) if h[0].lower() not in self.names]
                headers += self.static
                headers.append((b"content-security-policy", csp))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
