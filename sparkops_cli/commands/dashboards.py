"""`sparkops dashboards build|snapshot`: the Grafana dashboard as code, and a picture of it."""

from __future__ import annotations

from pathlib import Path

import click

from sparkops.artefacts import REPO_ROOT


@click.group("dashboards")
def command() -> None:
    """Build the Grafana dashboards (dashboards/) or render a snapshot from Prometheus."""


@command.command("build")
def build_cmd() -> None:
    """Write dashboards/generated/<uid>.json and the Grafana provisioning file."""
    from dashboards import build

    for art in build.ARTEFACTS:
        path = REPO_ROOT / art.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(art.build())
        click.echo(f"wrote {art.path}")


_ENVIRONMENT = click.option(
    "--environment", default="lab", show_default=True, metavar="NAME",
    help="For an https:// URL (a deployed Prometheus): whose CA and monitoring password "
    "(sparkops/webaccess.py) to use.",
)  # fmt: skip


def _register(prometheus_url: str, environment: str) -> None:
    """A deployed Prometheus is HTTPS with basic auth: send the environment's credentials."""
    from sparkops import webaccess

    if prometheus_url.startswith("https://"):
        webaccess.register(prometheus_url, webaccess.for_environment(environment))


@command.command("snapshot")
@click.option("--prometheus", "prometheus_url", required=True, metavar="URL",
              help="Prometheus base URL, e.g. https://10.0.0.12:9090")  # fmt: skip
@_ENVIRONMENT
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="HTML file to write (self-contained: inline SVG, no scripts).")  # fmt: skip
@click.option("--minutes", default=30, show_default=True, type=click.IntRange(1, 7 * 24 * 60),
              help="How far back the range queries reach.")  # fmt: skip
@click.option("--png", "png", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also screenshot the HTML to this PNG with headless Chromium.")  # fmt: skip
def snapshot_cmd(prometheus_url: str, environment: str, out: Path, minutes: int,
                 png: Path | None) -> None:  # fmt: skip
    """Render every dashboard panel's queries from Prometheus into an HTML snapshot."""
    from dashboards import snapshot

    _register(prometheus_url, environment)

    try:
        report = snapshot.write_snapshot(prometheus_url, out, minutes=minutes)
    except snapshot.SnapshotError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {out}: {report}")
    if png is not None:
        try:
            snapshot.screenshot(out, png)
        except snapshot.SnapshotError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"wrote {png}")


@command.command("livecheck")
@click.option("--prometheus", "prometheus_url", required=True, metavar="URL",
              help="Prometheus base URL, e.g. https://10.0.0.12:9090")  # fmt: skip
@_ENVIRONMENT
@click.option("--job", "jobs", multiple=True, metavar="JOB",
              help="Scrape job that must return series (repeatable); default: every job "
              "the dashboard and the alerts read (the Patroni cluster's patroni and etcd "
              "only when Prometheus scrapes them).")  # fmt: skip
def livecheck_cmd(prometheus_url: str, environment: str, jobs: tuple[str, ...]) -> None:
    """Run every panel query and alert expression through Prometheus; fail on any query
    that does not parse, or that returns no series although its job is required."""
    import httpx

    from signoff import livecheck

    _register(prometheus_url, environment)
    checks = livecheck.all_checks()
    try:
        required_jobs = set(jobs) or livecheck.default_required_jobs(
            checks, livecheck.scraped_jobs(prometheus_url)
        )
        results = livecheck.run(prometheus_url, checks)
    except httpx.HTTPError as exc:
        raise click.ClickException(
            f"cannot query Prometheus at {prometheus_url}: {exc}; check --prometheus"
        ) from exc
    click.echo(livecheck.format_table(results))
    bad = livecheck.failures(results, required_jobs)
    if bad:
        raise click.ClickException(
            f"{len(bad)} of {len(results)} expressions failed (unparsed, or no series for "
            f"jobs {', '.join(sorted(required_jobs))})"
        )
    click.echo(f"livecheck: {len(results)} expressions parse; required series present")
