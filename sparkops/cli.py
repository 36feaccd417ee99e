"""The `sparkops` console script.

Each module in `sparkops.commands` exports `command` (a click command or group); they are
discovered here, so adding a subcommand never means editing this file.
"""

from __future__ import annotations

import importlib
import pkgutil

import click

from runbooks.cli import ARGV_META
from sparkops import __version__, commands


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


def _register() -> None:
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        main.add_command(module.command)


_register()


if __name__ == "__main__":
    main()
