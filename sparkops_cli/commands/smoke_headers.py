"""`sparkops smoke-headers --base-url URL`: security headers, resource inventory, browser."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import click


def _base_url(ctx, param, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise click.BadParameter(
            f"{value!r}: want http(s)://host[:port], e.g. http://10.213.0.11:8000"
        )
    return value.rstrip("/")


@click.command("smoke-headers")
@click.option("--base-url", required=True, callback=_base_url, metavar="URL",
              help="Where the app answers: its front end, or an app host.")  # fmt: skip
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds for each HTTP request and for the browser's page load.")  # fmt: skip
@click.option("--evidence-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write csp_smoke_headers.txt, csp_smoke_inventory.txt and "
              "csp_smoke_browser.txt there.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def command(base_url: str, timeout: float, evidence_dir: Path | None, as_json: bool) -> None:
    """Check the security headers on every route (errors included), list the resources the
    pages reference, and load the page in headless Chromium (crossOriginIsolated, no CSP
    violation). Exit 0 when all pass, 1 when any fails (all three always run)."""
    import httpx

    from signoff import browser, smoke_headers

    try:
        answers = smoke_headers.request_all(base_url, timeout=timeout)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {base_url}: {exc}; check --base-url") from exc

    header_lines = []
    for a in answers:
        verdict = "FAIL" if a.problems else "ok"
        header_lines.append(f"{verdict:4} {a.label}" + "".join(f"\n     - {p}" for p in a.problems))
    header_fail = [f"{a.label}: {p}" for a in answers for p in a.problems]

    resources = smoke_headers.inventory(base_url, answers)
    inventory_fail = smoke_headers.inventory_problems(resources)
    inventory_lines = [
        f"{'third-party' if r.third_party else 'same-origin':11} {r.tag:8} {r.url} (on {r.page})"
        for r in resources
    ] or ["no resources referenced by the pages beyond inline ones"]

    pages = smoke_headers.html_pages(answers)
    browser_lines, browser_fail, reports = [], [], []
    if not pages:
        browser_fail.append("no HTML page answered 200: nothing for the browser to load")
    for page in pages:
        try:
            report = browser.check_page(base_url + page, timeout=timeout)
        except (browser.BrowserError, OSError) as exc:
            browser_fail.append(f"{page}: {exc}")
            continue
        reports.append(report)
        browser_lines.append(
            f"{page}: crossOriginIsolated={str(report.cross_origin_isolated).lower()}, "
            f"CSP violations={len(report.violations)}, flags: {' '.join(report.flags)}"
        )
        browser_fail += [f"{page}: {p}" for p in report.problems]

    sections = {
        "headers": (header_lines, header_fail),
        "inventory": (inventory_lines, inventory_fail),
        "browser": (browser_lines, browser_fail),
    }
    if evidence_dir is not None:
        evidence_dir.mkdir(parents=True, exist_ok=True)
        for name, (lines, fails) in sections.items():
            text = "\n".join(
                [f"{'FAIL' if fails else 'PASS'} {name} for {base_url}", *lines, *fails]
            )
            (evidence_dir / f"csp_smoke_{name}.txt").write_text(text + "\n")
    if as_json:
        result = {
            "base_url": base_url,
            "ok": not any(f for _, f in sections.values()),
            "answers": [
                {
                    "method": a.probe.method,
                    "path": a.probe.path,
                    "status": a.status,
                    "problems": a.problems,
                }
                for a in answers
            ],
            "resources": [r.__dict__ for r in resources],
            "browser": [r.__dict__ | {"problems": r.problems} for r in reports],
            "failures": {name: fails for name, (_, fails) in sections.items()},
        }
        click.echo(json.dumps(result, indent=2, default=list))
    for name, (lines, fails) in sections.items():
        click.echo(f"== {name}: {'FAIL' if fails else 'PASS'}", err=as_json)
        for line in lines:
            click.echo(f"   {line}", err=as_json)
    failed = [f"{name}: {f}" for name, (_, fails) in sections.items() for f in fails]
    if failed:
        raise click.ClickException(
            f"smoke-headers: {len(failed)} problem(s) at {base_url}:\n  " + "\n  ".join(failed)
        )
    click.echo(f"smoke-headers: {base_url} passes (headers on {len(answers)} answers, "
               f"{len(resources)} resources, browser)", err=as_json)  # fmt: skip
