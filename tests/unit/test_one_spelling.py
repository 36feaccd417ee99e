"""Each host path, unit name and env file (sparkops/layout.py) and each environment variable
name (sparkops/envvars.py) is spelled once: in its module. Everything else (the deploys, the
runbooks, the command line, the app, the templates) takes it from there.

Counted: Python string literals (f-string parts included, with the PostgreSQL version that
an f-string interpolates counted as any interpolation) and template lines that are not
comments. Docstrings, comments and the docs may mention a name; they do not decide where a
program looks.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from sparkops import defaults, envvars, layout
from sparkops.artefacts import REPO_ROOT

PRODUCT = (
    "sparkops",
    "app",
    "runbooks",
    "deploys",
    "sparkops_cli",
    "signoff",
    "lab",
    "inventories",
)
TEMPLATES = REPO_ROOT / "templates"
# Too short to be a fact of their own: they are parts of the names below.
TOO_GENERIC = {"main", "spark"}


def _names(module) -> dict[str, str]:
    return {
        k: v
        for k, v in vars(module).items()
        if k.isupper() and isinstance(v, str) and v not in TOO_GENERIC
    }


FACTS = {**{f"layout.{k}": v for k, v in _names(layout).items()},
         **{f"envvars.{k}": v for k, v in _names(envvars).items()}}  # fmt: skip


def _pattern(value: str) -> re.Pattern:
    """The value as code may spell it: literally, or with the version interpolated."""
    text = re.escape(value).replace(re.escape(str(defaults.POSTGRES_VERSION)), r"(?:15|\{[^}]*\})")
    return re.compile(rf"(?<![\w/.-]){text}(?![\w-])")


def _literals(path: Path) -> list[str]:
    """String literals of a Python file, docstrings left out; an f-string as its source."""
    source = path.read_text()
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            found.append(ast.get_source_segment(source, node) or "")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            found.append(node.value)
    return found


def spellings() -> dict[str, list[str]]:
    """{fact: [where it is spelled]} across the product's code and templates."""
    where: dict[str, list[str]] = {name: [] for name in FACTS}
    patterns = {name: _pattern(value) for name, value in FACTS.items()}
    for top in PRODUCT:
        for path in sorted((REPO_ROOT / top).rglob("*.py")):
            rel = str(path.relative_to(REPO_ROOT))
            for literal in _literals(path):
                for name, pattern in patterns.items():
                    if pattern.search(literal):
                        where[name].append(rel)
    for path in sorted(TEMPLATES.rglob("*.j2")):
        rel = str(path.relative_to(REPO_ROOT))
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#") or line.lstrip().startswith(";"):
                continue
            for name, pattern in patterns.items():
                if pattern.search(line):
                    where[name].append(rel)
    return where


def test_every_layout_and_variable_name_is_spelled_once():
    where = spellings()
    home = {"layout": "sparkops/layout.py", "envvars": "sparkops/envvars.py"}
    # A name built from others in its module (an f-string there) has no literal at all.
    wrong = {
        name: places
        for name, places in where.items()
        if places not in ([], [home[name.split(".")[0]]])
    }
    assert not wrong, f"spelled outside (or more than once in) their module: {wrong}"


@pytest.mark.parametrize(
    "literal",
    ['x = "/etc/spark-app/app.env"', 'x = f"postgresql@{v}-main.service"'],
)
def test_the_count_sees_a_second_spelling(tmp_path, literal):
    path = tmp_path / "m.py"
    path.write_text(literal + "\n")
    spelled = [lit for lit in _literals(path)]
    assert any(_pattern(v).search(s) for s in spelled for v in FACTS.values())
