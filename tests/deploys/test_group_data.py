"""Group data holds only what differs from the deploys' defaults.

A value in inventories/group_data/ that repeats a deploy's DEFAULTS hides the default: change
the default and nothing happens on hosts whose group data still says the old value. A name no
deploy declares is a typo that pyinfra would silently ignore.
"""

from __future__ import annotations

import runpy
import types

import pytest

from deploys import app, common, drill, firewall, monitoring, pgbackrest, pgbouncer, postgresql
from sparkops.artefacts import REPO_ROOT

DEPLOYS = (app, common, drill, firewall, monitoring, pgbackrest, pgbouncer, postgresql)
GROUP_DATA = sorted((REPO_ROOT / "inventories" / "group_data").glob("*.py"))


def declared() -> dict[str, tuple[str, object]]:
    """{parameter: (deploy module, default)} across every deploy."""
    found: dict[str, tuple[str, object]] = {}
    for module in DEPLOYS:
        for name, value in module.DEFAULTS.items():
            assert name not in found, f"{name} is declared by {found[name][0]} and {module}"
            found[name] = (module.__name__, value)
    return found


def parameters(path) -> dict[str, object]:
    """The names a group data file sets, as pyinfra reads them (public, not modules)."""
    names = runpy.run_path(str(path))
    return {
        k: v
        for k, v in names.items()
        if not k.startswith("_") and not isinstance(v, types.ModuleType) and k != "annotations"
    }


@pytest.mark.parametrize("path", GROUP_DATA, ids=lambda p: p.name)
def test_group_data_names_only_parameters_a_deploy_declares(path):
    known = declared()
    unknown = sorted(set(parameters(path)) - set(known))
    assert not unknown, f"{path.name}: no deploy declares {unknown} (a typo?)"


@pytest.mark.parametrize("path", GROUP_DATA, ids=lambda p: p.name)
def test_group_data_holds_only_what_differs_from_the_defaults(path):
    known = declared()
    same = sorted(k for k, v in parameters(path).items() if k in known and known[k][1] == v)
    assert not same, f"{path.name} repeats the defaults of {same}: delete them there"


def test_the_check_sees_a_repeated_default(tmp_path):
    path = tmp_path / "db.py"
    path.write_text(
        f"pgbackrest_retention_full = {pgbackrest.DEFAULTS['pgbackrest_retention_full']}\n"
    )
    known = declared()
    assert [k for k, v in parameters(path).items() if known[k][1] == v] == [
        "pgbackrest_retention_full"
    ]


def test_a_changed_default_reaches_the_hosts():
    """With nothing repeated, the db hosts' effective value is the deploy's default (the lab's
    inventory puts every db host in groups db and lab)."""
    merged: dict[str, object] = {}
    for name in ("all.py", "db.py", "lab.py"):
        merged.update(parameters(REPO_ROOT / "inventories" / "group_data" / name))
    for key, value in postgresql.DEFAULTS.items():
        assert merged.get(key, value) == value
