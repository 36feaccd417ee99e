"""Parsing CSP violation reports, both formats browsers send.

- `application/csp-report` (report-uri): `{"csp-report": {"violated-directive": ...}}`
- `application/reports+json` (Reporting API, report-to): a list of reports whose
  `type` is "csp-violation" with `body.effectiveDirective`.

Only the directive name is kept, from a fixed set, so the metric's label set stays bounded.
"""

from __future__ import annotations

import json

from app.validation import RequestError

KNOWN_DIRECTIVES = frozenset(
    {
        "default-src", "script-src", "script-src-elem", "script-src-attr", "style-src",
        "style-src-elem", "style-src-attr", "img-src", "connect-src", "font-src",
        "frame-src", "frame-ancestors", "base-uri", "form-action", "object-src",
        "media-src", "worker-src", "manifest-src", "require-trusted-types-for",
        "trusted-types",
    }
)  # fmt: skip
MAX_REPORTS = 100


def directive_label(raw: object) -> str:
    if not isinstance(raw, str):
        return "other"
    name = raw.split()[0].lower() if raw.split() else ""
    return name if name in KNOWN_DIRECTIVES else "other"


def parse(content_type: str, body: bytes) -> list[str]:
    ctype = content_type.split(";")[0].strip().lower()
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestError(400, "malformed_json", "CSP report body is not valid JSON") from None
    if ctype == "application/csp-report" or (isinstance(data, dict) and "csp-report" in data):
        report = data.get("csp-report") if isinstance(data, dict) else None
        if not isinstance(report, dict):
            raise RequestError(400, "malformed_report", 'expected {"csp-report": {...}}')
        return [
            directive_label(report.get("effective-directive") or report.get("violated-directive"))
        ]
    if ctype in ("application/reports+json", "application/json") and isinstance(data, list):
        labels = []
        for item in data[:MAX_REPORTS]:
            if isinstance(item, dict) and item.get("type") == "csp-violation":
                body_ = item.get("body") if isinstance(item.get("body"), dict) else {}
                labels.append(directive_label(body_.get("effectiveDirective")))
        if not labels:
            raise RequestError(400, "malformed_report", "no csp-violation reports in the body")
        return labels
    raise RequestError(
        415,
        "unsupported_media_type",
        "send application/csp-report or application/reports+json",
    )
