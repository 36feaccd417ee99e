"""The `sparkops` console script.

Each module in `sparkops.commands` exports `command` (a click command or group); they are
discovered here, so adding a subcommand never means editing this file.
"""

from __future__ import annotations

import importlib
import pkgutil

import click

from sparkops import __version__, commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
