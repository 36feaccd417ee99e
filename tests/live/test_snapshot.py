"""`sparkops dashboards snapshot` against the live-check Prometheus."""

from __future__ import annotations

import re

from click.testing import CliRunner

from alerts import rules
from dashboards import risk
from sparkops.wait import wait_until
from sparkops_cli.main import main


def _snapshot(live, out, *extra) -> str:
    result = CliRunner().invoke(
        main,
        ["dashboards", "snapshot", "--prometheus", live.prometheus.url, "--out", str(out),
         "--minutes", "1", *extra],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result.output


def test_snapshot_has_a_section_with_a_chart_per_panel(live, tmp_path):
    out = tmp_path / "snapshot.html"
    # Wait for a few scrapes (1 s apart), so each series is a line, not a dot.
    scrapes = f"count_over_time({rules.WAL_ARCHIVED}[1m]) > 3"
    wait_until(lambda: live.prometheus.query(scrapes)["data"]["result"], timeout=20, what="scrapes")
    output = _snapshot(live, out)
    assert f"{len(risk.PANELS)} panels" in output
    text = out.read_text()
    sections = re.findall(r'<section class="panel" id="panel-(\d+)">(.*?)</section>', text, re.S)
    assert [int(n) for n, _ in sections] == list(range(1, len(risk.PANELS) + 1))
    by_title = {re.search(r"<h2>(.*?)</h2>", body).group(1): body for _, body in sections}
    assert all(body.count("<svg") == 1 and "unit: " in body for body in by_title.values())
    assert "<polyline" in by_title["Database size"]
    assert "<polyline" in by_title["WAL archiving status"]
    assert "<polyline" in by_title["CSP violations"]
    assert "<polyline" in by_title["pgBouncer pool utilization"]
    # The Patroni cluster's panels are empty on a single database host, and say so.
    empty = [title for title, body in by_title.items() if "no data" in body]
    assert empty == ["Cluster: primary and replicas", "Cluster: replication lag"]
    # Self-contained: nothing for a browser to run or fetch.
    assert not re.search(r"<script|<link|<img|src=|href=|url\(", text)


def test_snapshot_refuses_unreachable_prometheus(tmp_path):
    out = tmp_path / "x.html"
    result = CliRunner().invoke(
        main, ["dashboards", "snapshot", "--prometheus", "http://127.0.0.1:9", "--out", str(out)]
    )
    assert result.exit_code != 0
    assert "cannot query Prometheus" in result.output
    assert not out.exists()


def test_snapshot_png_through_headless_chromium(live, tmp_path):
    out, png = tmp_path / "snapshot.html", tmp_path / "snapshot.png"
    _snapshot(live, out, "--png", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000
