"""`sparkops lab up|status|ssh|down`: throwaway Debian hosts with systemd on this machine."""

from __future__ import annotations

import os
import sys

import click

from lab import config, control, ssh, state
from lab.errors import LabError


def _fail(exc: LabError) -> None:
    raise click.ClickException(str(exc)) from exc


def _parse_hosts(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


@click.group("lab")
def command() -> None:
    """The local lab: Debian bookworm hosts (systemd, sshd) in namespaces on this machine.

    State lives in $SPARKOPS_LAB_DIR (default <repo>/.lab/), images in $SPARKOPS_LAB_CACHE
    (default /var/cache/sparkops-lab/). Needs root.
    """


@command.command("up")
@click.option(
    "--hosts",
    default=",".join(config.DEFAULT_HOSTS),
    show_default=True,
    help="Comma-separated host names; each host is in the group of its name, and one "
    "whose name ends in digits also in the group without them (app2: app2 and app).",
)
def up_command(hosts: str) -> None:
    """Bring the lab up (idempotent) and print how to reach each host."""
    try:
        result = control.up(_parse_hosts(hosts), log=click.echo)
    except LabError as exc:
        _fail(exc)
    if result.already_up:
        click.echo("the lab is already up:")
    else:
        click.echo(f"the lab is up ({len(result.hosts)} hosts in {result.seconds:.1f}s):")
    for h in result.hosts:
        click.echo(f"  {h['name']:<10} {h['ip']:<14} sparkops lab ssh {h['name']}")
    first = result.hosts[0]
    click.echo(
        f"plain ssh: ssh -i {first['ssh_key']} -o UserKnownHostsFile={first['known_hosts']} "
        f"{first['ssh_user']}@{first['ip']}"
    )
    click.echo("deploy with: pyinfra inventories/lab.py deploys/site.py")


@command.command("status")
def status_command() -> None:
    """Per host: running, ssh answering, systemd's state. Exit 1 unless all are fine."""
    rows = control.status()
    if not rows:
        click.echo("no lab is up: run `sparkops lab up`")
        sys.exit(1)
    click.echo(f"{'host':<10} {'ip':<14} {'running':<8} {'ssh':<5} systemd")
    for r in rows:
        click.echo(
            f"{r['name']:<10} {r['ip']:<14} {'yes' if r['running'] else 'NO':<8} "
            f"{'yes' if r['ssh'] else 'NO':<5} {r['systemd']}"
        )
    ok = all(r["running"] and r["ssh"] and r["systemd"] in ("running", "degraded") for r in rows)
    sys.exit(0 if ok else 1)


@command.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
def ssh_command(name: str, cmd: tuple[str, ...]) -> None:
    """Open a shell on host NAME, or run `sparkops lab ssh NAME -- CMD ...`."""
    hosts = state.read_hosts()
    if hosts is None:
        raise click.ClickException("no lab is up: run `sparkops lab up`")
    by_name = {h["name"]: h for h in hosts}
    if name not in by_name:
        raise click.ClickException(
            f"no lab host named {name!r}; the hosts are: {', '.join(by_name)}"
        )
    argv = ssh.ssh_argv(by_name[name]["ip"], tty=not cmd and sys.stdin.isatty())
    if cmd:
        argv.append(" ".join(cmd))
    os.execvp(argv[0], argv)


@command.command("down")
def down_command() -> None:
    """Remove every host, namespace, link, mount, cgroup and process the lab made."""
    try:
        seconds = control.down(log=click.echo)
    except LabError as exc:
        _fail(exc)
    click.echo(f"the lab is down ({seconds:.1f}s)")
