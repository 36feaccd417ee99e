"""A picture of the dashboard without Grafana: every panel's queries, run as range queries
against Prometheus, drawn as inline SVG line charts in one self-contained HTML file (no
scripts, no network). Headless Chromium can turn that file into a PNG for evidence folders.
"""

from __future__ import annotations

import html
import json
import math
import re
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from dashboards import build as dashboard_build
from dashboards import panels
from sparkops import programs, webaccess

WIDTH, HEIGHT = 620, 230
LEFT, RIGHT, TOP, BOTTOM = 64, 64, 12, 26  # plot margins for the axis labels
POINTS = 120  # samples per series: enough for a smooth line, small enough to stay light
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip
_LEGEND_LABEL = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


class SnapshotError(RuntimeError):
    """Prometheus unreachable, a query rejected, or Chromium failed: what and what to do."""


@dataclass
class Series:
    name: str
    points: list[tuple[float, float]]  # (unix time, value); NaN values break the line
    right: bool = False


@dataclass
class PanelData:
    title: str
    unit: str
    right_unit: str
    thresholds: list[float]
    series: list[Series] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _legend(template: str, labels: dict[str, str]) -> str:
    if not template:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return _LEGEND_LABEL.sub(lambda m: labels.get(m.group(1), ""), template)


def _right_matcher(panel: dict):
    for override in panel["fieldConfig"]["overrides"]:
        props = {p["id"]: p["value"] for p in override["properties"]}
        if props.get("custom.axisPlacement") == "right":
            return re.compile(override["matcher"]["options"]), props.get("unit", "short")
    return None, "short"


def collect(prometheus_url: str, minutes: int, end: float | None = None) -> list[PanelData]:
    """Range-query every target of every dashboard panel over the last `minutes`."""
    end = time.time() if end is None else end
    start = end - minutes * 60
    step = max(1.0, round(minutes * 60 / POINTS, 3))
    base = prometheus_url.rstrip("/")
    result = []
    with webaccess.client(base, timeout=15) as client:
        for module in dashboard_build.DASHBOARDS:
            dash = json.loads(panels.to_json(module.dashboard))
            for panel in dash["panels"]:
                result.append(_panel_data(client, base, panel, start, end, step))
    return result


def _panel_data(client, base: str, panel: dict, start: float, end: float, step: float):
    defaults = panel["fieldConfig"]["defaults"]
    matcher, right_unit = _right_matcher(panel)
    data = PanelData(
        title=panel["title"],
        unit=defaults.get("unit") or "short",
        right_unit=right_unit,
        thresholds=[s["value"] for s in defaults["thresholds"]["steps"] if s["value"] is not None],
    )
    for target in panel["targets"]:
        params = {"query": target["expr"], "start": start, "end": end, "step": step}
        try:
            response = client.get(f"{base}/api/v1/query_range", params=params)
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SnapshotError(
                f"cannot query Prometheus at {base}: {exc}; check the URL (--prometheus) "
                "and that Prometheus is running"
            ) from exc
        if body.get("status") != "success":
            data.errors.append(f"{target['expr']}: {body.get('error')}")
            continue
        for item in body["data"]["result"]:
            name = _legend(target.get("legendFormat", ""), item["metric"])
            points = [(float(t), float(v)) for t, v in item["values"]]
            right = bool(matcher and matcher.match(name))
            data.series.append(Series(name, points, right))
    return data


# --- formatting ---------------------------------------------------------------------------
def _si(value: float, suffixes: tuple[tuple[float, str], ...], unit: str = "") -> str:
    for factor, suffix in suffixes:
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}{unit}"
    return f"{value:.3g}{unit}"


def format_value(value: float, unit: str) -> str:
    if math.isnan(value):
        return "NaN"
    if unit == "bytes":
        return _si(value, ((2**40, " TiB"), (2**30, " GiB"), (2**20, " MiB"), (2**10, " KiB")),
                   "") if abs(value) >= 1024 else f"{value:.0f} B"  # fmt: skip
    if unit == "s":
        if value == 0:
            return "0 s"
        if abs(value) < 1:
            return f"{value * 1000:.3g} ms"
        for factor, name in ((86400, "d"), (3600, "h"), (60, "min")):
            if abs(value) >= factor:
                return f"{value / factor:.3g} {name}"
        return f"{value:.3g} s"
    if unit == "percentunit":
        return f"{value * 100:.3g}%"
    suffix = {"ops": " ops/s", "reqps": " req/s"}.get(unit, "")
    return _si(value, ((1e9, "G"), (1e6, "M"), (1e3, "k")), suffix)


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    return [first + i * step for i in range(count + 3) if first + i * step <= high + step / 2]


def _range(values: list[float], extra: list[float]) -> tuple[float, float]:
    finite = [v for v in values + extra if not math.isnan(v) and not math.isinf(v)]
    if not finite:
        return 0.0, 1.0
    low, high = min(min(finite), 0.0), max(finite)
    if high == low:
        high = low + 1.0
    ticks = _ticks(low, high)
    return low, max(high, ticks[-1])


# --- drawing ------------------------------------------------------------------------------
def _polylines(series: Series, x, y) -> list[str]:
    runs, current = [], []
    for t, v in series.points:
        if math.isnan(v) or math.isinf(v):
            if current:
                runs.append(current)
            current = []
            continue
        current.append(f"{x(t):.1f},{y(v):.1f}")
    if current:
        runs.append(current)
    return runs


def _hline(y: float, plot_w: float, cls: str) -> str:
    return f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="{cls}"/>'


def _text(x: float, y: float, cls: str, content: str) -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" class="{cls}">{html.escape(content)}</text>'


def render_svg(data: PanelData, start: float, end: float) -> str:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    left = [s for s in data.series if not s.right]
    right = [s for s in data.series if s.right]
    l_low, l_high = _range([v for s in left for _, v in s.points], data.thresholds)
    r_low, r_high = _range([v for s in right for _, v in s.points], [])

    def x(t: float) -> float:
        return LEFT + (t - start) / max(end - start, 1e-9) * plot_w

    def y_of(low: float, high: float):
        return lambda v: TOP + plot_h - (v - low) / (high - low) * plot_h

    yl, yr = y_of(l_low, l_high), y_of(r_low, r_high)
    out = [
        f'<svg width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{html.escape(data.title)}">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="plot"/>',
    ]
    for tick in _ticks(l_low, l_high):
        if l_low <= tick <= l_high:
            out.append(_hline(yl(tick), plot_w, "grid"))
            out.append(_text(LEFT - 4, yl(tick) + 4, "yl", format_value(tick, data.unit)))
    if right:
        for tick in _ticks(r_low, r_high):
            if r_low <= tick <= r_high:
                label = format_value(tick, data.right_unit)
                out.append(_text(LEFT + plot_w + 4, yr(tick) + 4, "yr", label))
    clock = "%H:%M:%S" if end - start < 600 else "%H:%M"
    for i in range(5):
        t = start + (end - start) * i / 4
        label = datetime.fromtimestamp(t, UTC).strftime(clock)
        out.append(_text(x(t), HEIGHT - 8, "xt", label))
    for value in data.thresholds:
        out.append(_hline(yl(value), plot_w, "threshold"))
    for index, series in enumerate(data.series):
        colour = COLOURS[index % len(COLOURS)]
        dash = ' stroke-dasharray="5,3"' if series.right else ""
        for run in _polylines(series, x, yr if series.right else yl):
            if len(run) == 1:
                cx, cy = run[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{colour}"/>')
            else:
                out.append(f'<polyline points="{" ".join(run)}" stroke="{colour}"{dash} '
                           'fill="none" stroke-width="1.5"/>')  # fmt: skip
    if not data.series:
        out.append(_text(LEFT + plot_w / 2, TOP + plot_h / 2, "nodata", "no data"))
    out.append("</svg>")
    return "\n".join(out)


def _last(series: Series) -> float:
    finite = [v for _, v in series.points if not math.isnan(v)]
    return finite[-1] if finite else math.nan


CSS = """
body { font-family: sans-serif; margin: 16px; color: #222; background: #fff; }
.grid-panels { display: grid; grid-template-columns: repeat(2, 660px); gap: 12px; }
section.panel { border: 1px solid #ccc; border-radius: 4px; padding: 8px; }
section.panel h2 { font-size: 15px; margin: 0 0 4px 0; }
.unit, .meta, .errors { font-size: 12px; color: #555; margin: 0 0 4px 0; }
.errors { color: #b00; }
svg .plot { fill: #fafafa; stroke: #ccc; } svg .grid { stroke: #e4e4e4; }
svg .threshold { stroke: #d62728; stroke-dasharray: 2,2; }
svg text { font-size: 10px; fill: #555; } svg .yl { text-anchor: end; }
svg .xt { text-anchor: middle; } svg .nodata { text-anchor: middle; font-size: 14px; }
ul.legend { list-style: none; padding: 0; margin: 4px 0 0 0; font-size: 11px; }
ul.legend li { display: inline-block; margin-right: 12px; }
ul.legend span.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
"""


def render_html(data: list[PanelData], prometheus_url: str, start: float, end: float) -> str:
    fmt = "%Y-%m-%d %H:%M:%S UTC"
    when = (f"{datetime.fromtimestamp(start, UTC).strftime(fmt)} to "
            f"{datetime.fromtimestamp(end, UTC).strftime(fmt)}")  # fmt: skip
    titles = ", ".join(html.escape(m.TITLE) for m in dashboard_build.DASHBOARDS)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Snapshot: {titles}</title><style>{CSS}</style></head><body>",
        f"<h1>{titles}</h1>",
        f'<p class="meta">Prometheus {html.escape(prometheus_url)}; {when}. '
        "Generated by <code>sparkops dashboards snapshot</code>; dashed lines use the "
        "right axis, red dotted lines are alert thresholds.</p>",
        '<div class="grid-panels">',
    ]
    for index, panel in enumerate(data, start=1):
        unit = panel.unit + (f" (right axis: {panel.right_unit})" if any(
            s.right for s in panel.series) else "")  # fmt: skip
        parts += [
            f'<section class="panel" id="panel-{index}">',
            f"<h2>{html.escape(panel.title)}</h2>",
            f'<p class="unit">unit: {html.escape(unit)}</p>',
            render_svg(panel, start, end),
            '<ul class="legend">',
        ]
        for i, series in enumerate(panel.series):
            colour = COLOURS[i % len(COLOURS)]
            last = format_value(_last(series), panel.right_unit if series.right else panel.unit)
            parts.append(f'<li><span class="swatch" style="background:{colour}"></span>'
                         f"{html.escape(series.name)}: {html.escape(last)}</li>")  # fmt: skip
        parts.append("</ul>")
        if panel.errors:
            parts.append(f'<p class="errors">{html.escape("; ".join(panel.errors))}</p>')
        parts.append("</section>")
    parts += ["</div>", "</body></html>", ""]
    return "\n".join(parts)


def write_snapshot(prometheus_url: str, out: Path, minutes: int = 30) -> str:
    end = time.time()
    start = end - minutes * 60
    data = collect(prometheus_url, minutes, end=end)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(data, prometheus_url, start, end))
    with_data = sum(1 for p in data if p.series)
    series = sum(len(p.series) for p in data)
    return f"{len(data)} panels ({with_data} with data, {series} series)"


def screenshot(html_path: Path, png_path: Path, timeout: float = 90.0) -> None:
    chromium = programs.find("chromium")
    if chromium is None:
        raise SnapshotError(programs.missing_message("chromium"))
    png_path.parent.mkdir(parents=True, exist_ok=True)
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--screenshot={png_path.resolve()}", "--window-size=1400,2000",
            html_path.resolve().as_uri()]  # fmt: skip
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise SnapshotError(f"chromium took longer than {timeout:.0f}s") from exc
    if result.returncode != 0 or not png_path.exists():
        raise SnapshotError(f"chromium failed (exit {result.returncode}): {result.stderr[-500:]}")
