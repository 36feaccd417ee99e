"""`sparkops alerts build|test`: the Prometheus rule file and its promtool tests."""

from __future__ import annotations

import subprocess

import click

from sparkops import programs
from sparkops.artefacts import REPO_ROOT


def promtool_runs() -> list[list[str]]:
    """The two promtool commands that prove the rule file: syntax, then unit tests."""
    from alerts import build

    return [
        ["promtool", "check", "rules", str(REPO_ROOT / build.RULES_PATH)],
        ["promtool", "test", "rules", str(REPO_ROOT / build.TESTS_PATH)],
    ]


@click.group("alerts")
def command() -> None:
    """Build and test the Prometheus alert rules (alerts/)."""


@command.command("build")
def build_cmd() -> None:
    """Write alerts/generated/spark-ops.rules.yml and its promtool test file."""
    from alerts import build

    for art in build.ARTEFACTS:
        path = REPO_ROOT / art.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(art.build())
        click.echo(f"wrote {art.path}")


@command.command("test")
def test_cmd() -> None:
    """Run `promtool check rules` and `promtool test rules` on the committed files."""
    if programs.find("promtool") is None:
        raise click.ClickException(programs.missing_message("promtool"))
    for args in promtool_runs():
        click.echo("$ " + " ".join(args))
        result = subprocess.run(args, check=False, capture_output=True, text=True, timeout=120)
        click.echo(result.stdout + result.stderr)
        if result.returncode != 0:
            raise click.ClickException(f"{args[1]} {args[2]} failed (exit {result.returncode})")
