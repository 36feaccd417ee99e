"""`sparkops demo`: the README's main command."""

from __future__ import annotations

import click


@click.command("demo")
def command() -> None:
    """Bring up the local lab, deploy the whole stack and show where to look."""
    click.echo("sparkops demo: the local lab is not built yet (issue 3).")
