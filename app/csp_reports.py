"""Parsing CSP violation reports, both formats browsers send.

- `application/csp-report` (report-uri): `{"csp-report": {"violated-directive": ...}}`
- `application/reports+json` (Reporting API, report-to): a list of reports whose
  `type` is "csp-violation" with `body.effectiveDirective`.
- `application/json`: either shape.

The media type is checked first (415), then the body (400 saying what is malformed). Only
the directive name is kept, from a fixed set, so the metric's label set stays bounded.
"""

from __future__ import annotations

from typing import Any

from app.edge import RequestError, parse_json

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
LEGACY = "application/csp-report"
REPORTING_API = "application/reports+json"
MEDIA_TYPES = (LEGACY, REPORTING_API, "application/json")
_LEGACY_SHAPE = 'a JSON object {"csp-report": {...}}'
_REPORTING_SHAPE = 'a JSON array of reports [{"type": "csp-violation", "body": {...}}, ...]'


def directive_label(raw: object) -> str:
    if not isinstance(raw, str):
        return "other"
    name = raw.split()[0].lower() if raw.split() else ""
    return name if name in KNOWN_DIRECTIVES else "other"


def parse(content_type: str, body: bytes) -> list[str]:
    """The directive label of each CSP violation in `body`, or a RequestError (415/400)."""
    ctype = content_type.split(";")[0].strip(" \t").lower()
    if ctype not in MEDIA_TYPES:
        raise RequestError(415, "unsupported_media_type", f"send {LEGACY} or {REPORTING_API}")
    data = parse_json(body, "CSP report body")
    if ctype == LEGACY or (isinstance(data, dict) and "csp-report" in data):
        return [_legacy(data)]
    if not isinstance(data, list):
        shape = (
            _REPORTING_SHAPE if ctype == REPORTING_API else f"{_LEGACY_SHAPE} or {_REPORTING_SHAPE}"
        )
        raise RequestError(400, "malformed_report", f"a {ctype} body must be {shape}")
    return _reporting_api(data)


def _legacy(data: Any) -> str:
    report = data.get("csp-report") if isinstance(data, dict) else None
    if not isinstance(report, dict):
        raise RequestError(400, "malformed_report", f"expected {_LEGACY_SHAPE}")
    return directive_label(report.get("effective-directive") or report.get("violated-directive"))


def _reporting_api(data: list) -> list[str]:
    labels = []
    for item in data[:MAX_REPORTS]:
        if isinstance(item, dict) and item.get("type") == "csp-violation":
            body = item.get("body") if isinstance(item.get("body"), dict) else {}
            labels.append(directive_label(body.get("effectiveDirective")))
    if not labels:
        raise RequestError(
            400, "malformed_report",
            f'no report with "type": "csp-violation" among the first {MAX_REPORTS}',
        )  # fmt: skip
    return labels
