"""The validation run as one HTML page (`report.html` in the evidence folder): the checks'
table and plots drawn as inline SVG here (no script, no network: a reviewer opens the file
as it is): WAL archive lag, request latency and the restore drill's duration over the last
hour from Prometheus's history, the idempotency check's requests, and the run's timeline
with the restore drill in it.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass

import httpx

from signoff.validate import Context, Outcome
from sparkops import metric_names, webaccess

WINDOW_SECONDS = 3600
STEP_SECONDS = 15
WAL_LAG_QUERY = f"max({metric_names.PG_ARCHIVER_LAST_ARCHIVE_AGE})"
LATENCY_QUERY = (
    f"histogram_quantile(0.95, sum by (le) (rate({metric_names.HTTP_REQUEST_DURATION}_bucket[5m])))"
)
DRILL_QUERY = f"max({metric_names.RESTORE_DRILL_DURATION})"
WIDTH, HEIGHT, PAD = 640, 220, 64


@dataclass
class Series:
    """Points (seconds, value) to plot, or why there are none."""

    points: list[tuple[float, float]]
    missing: str = ""


def range_query(prometheus_url: str, expr: str, now: float | None = None) -> Series:
    now = time.time() if now is None else now
    params = {"query": expr, "start": now - WINDOW_SECONDS, "end": now, "step": STEP_SECONDS}
    try:
        body = webaccess.get(f"{prometheus_url}/api/v1/query_range", params=params, timeout=15)
        body = body.json()
    except (httpx.HTTPError, ValueError) as exc:
        return Series([], f"Prometheus did not answer: {exc}")
    if body.get("status") != "success":
        return Series([], f"{body.get('errorType')}: {body.get('error')}")
    result = body["data"]["result"]
    if not result:
        return Series([], f"no series for {expr} in the last {WINDOW_SECONDS // 60} min")
    points = [
        (float(t) - now, float(v))
        for t, v in result[0]["values"]
        if v not in ("NaN", "+Inf", "-Inf")
    ]
    return Series(points, "" if points else "only NaN (no traffic in the window)")


def line_chart(title: str, unit: str, series: Series) -> str:
    """A line over time (x: seconds before the report, in minutes), or a note saying why not."""
    head = f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img">'
    parts = [head, f"<title>{html.escape(title)}</title>", _axes()]
    if not series.points:
        parts.append(_text(WIDTH / 2, HEIGHT / 2, f"no data: {series.missing}", anchor="middle"))
        return "".join(parts) + "</svg>"
    xs = [p[0] for p in series.points]
    ys = [p[1] for p in series.points]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    top = max(ys) * 1.1 or 1.0
    path = " ".join(f"{_x(x, x0, x1):.1f},{_y(y, top):.1f}" for x, y in series.points)
    parts.append(f'<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{path}"/>')
    parts.append(_text(PAD - 4, PAD, f"{top:.3g} {unit}", anchor="end"))
    parts.append(_text(PAD - 4, HEIGHT - PAD, "0", anchor="end"))
    parts.append(_text(PAD, HEIGHT - PAD + 16, f"{x0 / 60:.0f} min"))
    parts.append(_text(WIDTH - PAD, HEIGHT - PAD + 16, "now", anchor="end"))
    parts.append(_text(WIDTH - PAD, PAD - 8, f"last {ys[-1]:.3g} {unit}, max {max(ys):.3g}",
                       anchor="end"))  # fmt: skip
    return "".join(parts) + "</svg>"


def timeline(outcomes: list[Outcome], total: float) -> str:
    """One bar per check from its start to its end; the restore drill is its own bar."""
    row = 22
    height = PAD + row * len(outcomes) + 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
             'role="img"><title>Run timeline</title>']  # fmt: skip
    span = max(total, 1.0)
    left, right = 200, WIDTH - 16
    for n, o in enumerate(outcomes):
        y = PAD / 2 + n * row
        x = left + (right - left) * o.started / span
        w = max((right - left) * o.seconds / span, 1.5)
        colour = "#2da44e" if o.ok else "#cf222e"
        parts.append(_text(left - 6, y + 14, o.name, anchor="end"))
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{row - 6}" '
                     f'fill="{colour}"><title>{html.escape(o.name)}: {o.seconds:.1f}s'
                     "</title></rect>")  # fmt: skip
        parts.append(_text(min(x + w + 4, right - 30), y + 14, f"{o.seconds:.1f}s"))
    parts.append(_text(right, height - 6, f"{total:.1f}s in all", anchor="end"))
    return "".join(parts) + "</svg>"


def bars(title: str, unit: str, values: list[float], labels: list[str]) -> str:
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'role="img"><title>{html.escape(title)}</title>', _axes()]  # fmt: skip
    if not values:
        parts.append(_text(WIDTH / 2, HEIGHT / 2, "no data: the check did not run", "middle"))
        return "".join(parts) + "</svg>"
    top = max(values) * 1.1 or 1.0
    slot = (WIDTH - 2 * PAD) / len(values)
    for n, (v, label) in enumerate(zip(values, labels, strict=True)):
        x = PAD + n * slot + slot * 0.2
        y = _y(v, top)
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.6:.1f}" '
                     f'height="{HEIGHT - PAD - y:.1f}" fill="#8250df"/>')  # fmt: skip
        parts.append(_text(x + slot * 0.3, y - 4, f"{v * 1000:.0f} ms", anchor="middle"))
        parts.append(_text(x + slot * 0.3, HEIGHT - PAD + 16, label, anchor="middle"))
    return "".join(parts) + "</svg>"


def _axes() -> str:
    return (f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
            f'stroke="#888"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" '
            'stroke="#888"/>')  # fmt: skip


def _x(x: float, x0: float, x1: float) -> float:
    return PAD + (WIDTH - 2 * PAD) * (x - x0) / (x1 - x0)


def _y(y: float, top: float) -> float:
    return HEIGHT - PAD - (HEIGHT - 2 * PAD) * y / top


def _text(x: float, y: float, text: str, anchor: str = "start") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="11" font-family="sans-serif" '
            f'text-anchor="{anchor}">{html.escape(text)}</text>')  # fmt: skip


def render(ctx: Context, outcomes: list[Outcome], total: float,
           wal: Series, latency: Series, drill: Series | None = None) -> str:  # fmt: skip
    verdict = "PASS" if all(o.ok for o in outcomes) else "FAIL"
    rows = "".join(
        f"<tr><td>{html.escape(o.name)}</td><td class={'pass' if o.ok else 'fail'}>"
        f"{'PASS' if o.ok else 'FAIL'}</td><td>{o.seconds:.1f}</td>"
        f"<td>{html.escape(o.message)}</td><td>{html.escape(', '.join(o.files))}</td></tr>"
        for o in outcomes
    )
    requests = ctx.measured.get("request_seconds", [])
    request_labels = ["first", "duplicate", "mismatch"][: len(requests)]
    request_labels += [str(n) for n in range(len(request_labels), len(requests))]
    wal_note = ", ".join(f"{s:.1f}s" for s in ctx.measured.get("wal_archive_seconds", []))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Validation: {verdict}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
.pass{{color:#1a7f37;font-weight:bold}}.fail{{color:#cf222e;font-weight:bold}}</style></head>
<body><h1>Validation: <span class={verdict.lower()}>{verdict}</span></h1>
<p>App {html.escape(ctx.app_url)}, Prometheus {html.escape(ctx.prometheus_url)},
db {html.escape(ctx.db.label)}; {total:.1f}s in all.</p>
<table><tr><th>check</th><th>result</th><th>seconds</th><th>what</th><th>evidence</th></tr>
{rows}</table>
<h2>WAL archive lag</h2>
<p>Seconds since the last WAL segment was archived ({html.escape(WAL_LAG_QUERY)}), last hour.
This run's WAL switch was archived in: {wal_note or "not measured"}.</p>
{line_chart("WAL archive lag", "s", wal)}
<h2>Request latency</h2>
<p>HTTP P95 over all routes ({html.escape(LATENCY_QUERY)}), last hour:</p>
{line_chart("HTTP request duration (P95)", "s", latency)}
<p>The idempotency check's own requests:</p>
{bars("Idempotency requests", "s", requests, request_labels)}
<h2>Timeline</h2>
<p>Each check from start to end; the restore drill restores the latest backup onto a scratch
copy and checks it.</p>
{timeline(outcomes, total)}
<p>The restore drill's duration as Prometheus recorded it ({html.escape(DRILL_QUERY)}), last
hour; a step is a drill that ended:</p>
{line_chart("Restore drill duration", "s", drill or Series([], "not asked"))}
</body></html>
"""


def write(ctx: Context, outcomes: list[Outcome], total: float) -> str:
    wal = range_query(ctx.prometheus_url, WAL_LAG_QUERY)
    latency = range_query(ctx.prometheus_url, LATENCY_QUERY)
    drill = range_query(ctx.prometheus_url, DRILL_QUERY)
    page = render(ctx, outcomes, total, wal, latency, drill)
    (ctx.folder / "report.html").write_text(page)
    return "report.html"
