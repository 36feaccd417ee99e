"""The `sparkops` console script.

Each module in `sparkops_cli.commands` exports `command` (a click command or group); they are
discovered here, so adding a subcommand never means editing this file. A command's module is
imported when that command runs (or when help lists them all), not at every start: the
modules bring psycopg, httpx and rich, half a second of imports that `sparkops rollback`
would count in its seconds to the old release serving.
"""

from __future__ import annotations

import importlib
import pkgutil

import click

from sparkops import __version__
from sparkops_cli import commands
from sparkops_cli.conduct import ARGV_META


def _command_names() -> dict[str, str]:
    """Command name -> module name (restore_point.py is `restore-point`)."""
    found = pkgutil.iter_modules(commands.__path__)
    return {m.name.replace("_", "-"): m.name for m in found if not m.name.startswith("_")}


class _Main(click.Group):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._modules = _command_names()
        self._loaded: dict[str, click.Command] = {}

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Kept so a runbook can print the exact command that repeats or undoes it.
        ctx.meta[ARGV_META] = list(args)
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self._modules)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self._modules:
            return None
        if name not in self._loaded:
            self._loaded[name] = _load(name, self._modules[name])
        return self._loaded[name]

    @property
    def commands(self) -> dict[str, click.Command]:
        """Every command, loaded (for what inspects the tree, such as the docs' tests)."""
        return {name: self.get_command(None, name) for name in self.list_commands(None)}

    @commands.setter
    def commands(self, _value) -> None:
        pass  # click.Group's constructor sets it; the commands are the modules' own


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


def _load(name: str, module_name: str) -> click.Command:
    try:
        module = importlib.import_module(f"{commands.__name__}.{module_name}")
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in CONTROL_ONLY:
            raise
        return _control_only(name, top)
    return module.command


if __name__ == "__main__":
    main()
