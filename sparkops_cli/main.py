"""The `sparkops` console script.

Each module in `sparkops_cli.commands` exports `command` (a click command or group); they are
discovered here, so adding a subcommand never means editing this file.
"""

from __future__ import annotations

import importlib
import pkgutil

import click

from sparkops import __version__
from sparkops_cli import commands
from sparkops_cli.conduct import ARGV_META


class _Main(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Kept so a runbook can print the exact command that repeats or undoes it.
        ctx.meta[ARGV_META] = list(args)
        return super().parse_args(ctx, args)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sparkops")
def main() -> None:
    """Spark Ops: deploy, monitor, restore and roll back the Spark Trading Platform.

    Deploys are plain pyinfra: `pyinfra inventories/lab.py deploys/site.py`.
    """


# What only the control machine has (pyproject's `control` extra and the packages the app
# release leaves out, deploys/release.py): on a host, a command that needs them says so.
CONTROL_ONLY = frozenset(
    {"lab", "dashboards", "alerts", "signoff", "deploys", "yaml", "jinja2", "pyinfra",
     "grafanalib", "boto3"}
)  # fmt: skip


def _control_only(name: str, missing: str) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True}, add_help_option=False)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def unavailable(args) -> None:
        raise click.ClickException(
            f"`sparkops {name}` runs on the control machine (it needs {missing!r}, which the "
            "app release on this host does not ship): run it from a checkout after "
            "`make bootstrap`"
        )

    unavailable.help = f"(control machine only: needs {missing})"
    return unavailable


def _register() -> None:
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{commands.__name__}.{info.name}")
        except ModuleNotFoundError as exc:
            top = (exc.name or "").split(".")[0]
            if top not in CONTROL_ONLY:
                raise
            main.add_command(_control_only(info.name.replace("_", "-"), top))
            continue
        main.add_command(module.command)


_register()


if __name__ == "__main__":
    main()
