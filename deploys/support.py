"""What every component deploy shares: templates, host addresses, the managed-file header.

Templates are rendered here (not by `files.template`) so the unit tests render exactly
what the deploys upload, with the same strict Jinja environment.
"""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import jinja2

from sparkops import envvars, layout, secrets

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = REPO_ROOT / "templates"
MANAGED_HEADER = "managed by Spark Ops - do not edit"

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)
# Environment variable names (sparkops/envvars.py) and the host layout (sparkops/layout.py)
# are in every template's context, so a template never spells a name a program reads:
# {{ env.DATABASE_URL }}, {{ layout.APP_SERVICE }}.
_env.globals.update(env=envvars, layout=layout)


def render(template: str, **context: Any) -> str:
    """Render `templates/<template>`; `header` is the managed-file line without a comment sign."""
    context.setdefault("header", MANAGED_HEADER)
    return _env.get_template(template).render(**context)


def rendered(template: str, **context: Any) -> StringIO:
    """A rendered template as the file-like `files.put` uploads (and compares by checksum)."""
    return StringIO(render(template, **context))


def rendered_text(text: str) -> StringIO:
    """Text already rendered (a template with computed content) as `files.put` uploads it."""
    return StringIO(text)


def address(host) -> str:
    """The address other hosts use to reach `host` (private network first)."""
    return str(host.data.get("private_address") or host.data.get("ssh_hostname") or host.name)


def group_addresses(inventory, group: str) -> list[str]:
    return [address(h) for h in inventory.get_group(group, [])]


def first_in_group(inventory, group: str):
    """The one host of a single-host group (db, monitor); a clear error when there is none."""
    hosts = list(inventory.get_group(group, []))
    if not hosts:
        raise ValueError(
            f"the inventory has no host in group {group!r}: add one (see inventories/staging.py)"
        )
    return hosts[0]


def is_cluster(inventory) -> bool:
    """Does this inventory ask for a Patroni cluster (a non-empty etcd group)?"""
    from deploys import hacluster  # support is imported by every deploy; keep this one lazy

    return hacluster.is_cluster({name for name, hosts in inventory.groups.items() if hosts})


def environment(host) -> str:
    """Which inventory this run uses: names the secrets file (see sparkops/secrets.py)."""
    return secrets.environment_name(host.groups, host.data.get(secrets.ENVIRONMENT_KEY))
