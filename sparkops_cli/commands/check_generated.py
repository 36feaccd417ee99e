"""`sparkops check-generated`: fail when a committed generated file is stale."""

from __future__ import annotations

import click

from sparkops_cli import generated


@click.command("check-generated")
@click.option("--write", is_flag=True, help="Rebuild every generated file instead of checking.")
def command(write: bool) -> None:
    """Check that committed dashboards, alert rules and the OpenAPI document match what the
    code builds."""
    if write:
        for path in generated.write_all():
            click.echo(f"wrote {path.relative_to(generated.REPO_ROOT)}")
        return
    problems = generated.stale()
    count = len(generated.artefacts())
    if problems:
        for art, why in problems:
            click.echo(f"{art.path}: {why}; rebuild with `{art.command}` and commit it", err=True)
        raise SystemExit(1)
    click.echo(f"check-generated: {count} generated file(s) up to date")
