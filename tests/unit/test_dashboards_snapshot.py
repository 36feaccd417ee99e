"""Pure parts of the snapshot renderer: units, legends, gaps, escaping, self-containment."""

from __future__ import annotations

import math
import re

from dashboards import snapshot
from dashboards.snapshot import PanelData, Series


def test_values_are_formatted_in_their_unit():
    fmt = snapshot.format_value
    assert fmt(0.9625, "s") == "962 ms"
    assert fmt(1300, "s") == "21.7 min"
    assert fmt(8_136_000, "bytes") == "7.76 MiB"
    assert fmt(512, "bytes") == "512 B"
    assert fmt(0.105, "percentunit") == "10.5%"
    assert fmt(0.2, "ops") == "0.2 ops/s"
    assert fmt(2500, "short") == "2.5k"
    assert fmt(math.nan, "s") == "NaN"


def test_legend_templates_fill_from_labels():
    assert snapshot._legend("{{database}} max wait", {"database": "spark"}) == "spark max wait"
    assert snapshot._legend("", {"job": "x", "a": "1"}) == '{a="1", job="x"}'


def test_nan_breaks_the_line_and_thresholds_are_drawn():
    data = PanelData("p95 <latency>", "s", "short", [0.5])
    points = [(0, 0.1), (10, 0.2), (20, math.nan), (30, 0.3), (40, 0.4)]
    data.series.append(Series("/orders", points))
    svg = snapshot.render_svg(data, 0, 40)
    assert svg.count("<polyline") == 2  # one run before the gap, one after
    assert svg.count('class="threshold"') == 1
    assert "p95 &lt;latency&gt;" in svg


def test_empty_panel_says_no_data_and_html_is_self_contained():
    panels = [PanelData(f"Panel {i} & co", "short", "short", []) for i in range(10)]
    html = snapshot.render_html(panels, "http://127.0.0.1:9090", 0, 600)
    assert html.count('<section class="panel"') == 10
    assert html.count("no data") == 10
    assert "Panel 3 &amp; co" in html
    assert not re.search(r"<script|<link|<img|src=|href=|url\(", html)
