"""The package layering of docs/layering.md, enforced: each package imports only the packages
below it, so the foundation imports nothing of ours, the runbooks never reach into the
deploys, and no product package imports the test kit.

Imports are read from the source (every `import` and `from ... import`, at any depth, lazy
ones inside functions included), so a cycle cannot hide behind a function-level import.
"""

from __future__ import annotations

import ast

import pytest

from sparkops.artefacts import REPO_ROOT

# package -> the packages of ours it may import. Order is bottom-up; docs/layering.md draws it.
ALLOWED: dict[str, set[str]] = {
    "scripts": set(),  # bootstrap (before the venv) and make test's runner: stdlib only
    "sparkops": set(),  # the foundation
    "app": {"sparkops"},
    "alerts": {"sparkops"},
    "lab": {"sparkops"},
    "dashboards": {"sparkops", "alerts"},
    "runbooks": {"sparkops", "app"},
    "deploys": {"sparkops", "app", "alerts", "dashboards"},
    "inventories": {"sparkops", "lab"},
    "signoff": {"sparkops", "app", "alerts", "dashboards", "runbooks"},
    "sparkops_cli": {"sparkops", "app", "alerts", "dashboards", "lab", "runbooks", "signoff"},
    "testkit": {"sparkops", "app", "alerts", "dashboards", "lab", "runbooks", "deploys"},
    "chaos": {"sparkops", "app", "alerts", "testkit"},
    "bench": {
        "sparkops", "app", "alerts", "dashboards", "lab", "runbooks", "deploys", "signoff",
        "sparkops_cli", "testkit", "chaos",
    },
}  # fmt: skip
PACKAGES = set(ALLOWED) | {"tests"}


def imports_of(package: str) -> dict[str, set[str]]:
    """{imported package of ours: the files that import it} for one top-level package."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in PACKAGES and top != package:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO_ROOT)))
    return found


def test_every_top_level_package_has_a_place_in_the_layering():
    ours = {
        p.name
        for p in REPO_ROOT.iterdir()
        if p.is_dir() and (any(p.glob("*.py")) or any(p.glob("*/*.py")))
        and not p.name.startswith(".") and p.name not in ("tests", "build")
    }  # fmt: skip
    assert ours <= set(ALLOWED), f"packages missing from the layering: {ours - set(ALLOWED)}"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_lies_below_it(package):
    wrong = {
        target: sorted(files)
        for target, files in imports_of(package).items()
        if target not in ALLOWED[package]
    }
    assert not wrong, f"{package} imports {wrong}; docs/layering.md says what it may import"


def test_the_layering_has_no_cycle():
    """The allowed arrows themselves form no cycle (so the rule above implies none in code)."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in ALLOWED.get(node, ()):
            assert state.get(nxt) != "open", f"cycle: {' -> '.join([*path, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = "done"

    for package in ALLOWED:
        if package not in state:
            visit(package, [])


def test_the_rule_catches_a_forbidden_import(tmp_path, monkeypatch):
    """The checker sees a lazy import inside a function (the kind that hid the old cycle)."""
    pkg = tmp_path / "sparkops"
    pkg.mkdir()
    (pkg / "x.py").write_text("def f():\n    from runbooks import sites\n    return sites\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["REPO_ROOT"]), "REPO_ROOT", tmp_path)
    assert imports_of("sparkops") == {"runbooks": {"sparkops/x.py"}}


def test_the_layering_document_lists_every_package():
    text = (REPO_ROOT / "docs" / "layering.md").read_text()
    missing = [p for p in ALLOWED if f"`{p}/`" not in text]
    assert not missing, f"docs/layering.md does not name {missing}"
