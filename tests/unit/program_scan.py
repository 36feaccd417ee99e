"""Find the programs Python source runs, by reading it (ast), for test_debian_packages.py.

What counts as running a program:
- the first element of an argv list or tuple given to a call named like a runner
  (`subprocess.run`, `Popen`, an executor's `run`, `run_as_service_user`, ...), assigned to a
  name ending in `argv`, `args`, `cmd`, `command` or `TOOLS`, or built in a function whose
  name ends in `argv`;
- the program after a wrapper in such a list (`unshare ... env X=1 sh`);
- the argument of `shutil.which(...)` and of sparkops/programs.py's `programs.require(...)`,
  `programs.find(...)`, `programs.missing_message(...)`;
- the first word of each command of a shell script: the string after `sh -c` in an argv list,
  the argument of an executor's `sh(...)`, and any string that starts like a script
  (`#!/bin/sh`, `set -e`); comment lines are left out.

A name is read through module-level and local string assignments in the same file; an
f-string's program is its last path component (`f"{bindir}/pg_ctl"` is `pg_ctl`); what stays
unknown (`sys.executable`, a variable from elsewhere) is not a Debian program. A shell word
is dropped when it is a builtin or starts with `$` or a quote.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

RUNNERS = {
    "run",
    "Popen",
    "check_output",
    "check_call",
    "call",
    "run_as_service_user",
    "popen_as_service_user",
    "_run",
    "_spawn",
}
ARGV_NAMES = re.compile(r"(argv|args|cmd|command|TOOLS)$")
SHELLS = {"sh", "bash", "dash"}
# Programs whose argv goes on with another program to run: its options, then the program.
WRAPPERS = {"env", "unshare", "nsenter", "runuser", "chroot", "setsid", "timeout", "sudo"}
SCRIPT_START = re.compile(r"\s*(#!\s*/(usr/)?bin/(env )?(ba|da)?sh|set -e)")
BUILTINS = {
    "set", "cd", "echo", "printf", "exec", "export", "test", "[", "[[", "trap", "read", "true",
    "false", "exit", "return", "local", "wait", "kill", "shift", "unset", "umask", "ulimit",
    "eval", ".", ":", "if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done",
    "case", "esac", "{", "}", "!", "break", "continue", "command", "type",
}  # fmt: skip
_WORD = re.compile(r"[A-Za-z0-9_./+-]+")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=\S*")


def _strings(tree: ast.AST) -> dict[str, list[str]]:
    """Every name assigned a string (constant or f-string) anywhere in the module."""
    found: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            text = _literal(node.value, {})
            if text is not None:
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        found.setdefault(target.id, []).append(text)
    return found


def _literal(node: ast.AST, names: dict[str, list[str]]) -> str | None:
    """A string's text; an f-string's placeholders become `{}`; a name its one known value."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if isinstance(node, ast.Name) and len(names.get(node.id, [])) == 1:
        return names[node.id][0]
    return None


def program_name(word: str) -> str | None:
    """The program a command word names, or None for options, variables, placeholders and
    a virtualenv's programs (pip installs those, not Debian)."""
    name = word.rsplit("/", 1)[-1]
    if "venv/bin/" in word or "{}" in name or name.startswith("-") or not _WORD.fullmatch(name):
        return None
    return name


def shell_programs(script: str) -> set[str]:
    found = set()
    lines = script.replace("\\\n", " ").splitlines()
    code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    for segment in re.split(r"\n|;|&&|\|\||\||\$\(|`|\(", code):
        words = segment.split()
        while words and (words[0] in ("exec", "then", "do", "else", "!", "{")
                         or _ASSIGNMENT.fullmatch(words[0])):  # fmt: skip
            words = words[1:]
        if not words or words[0] in BUILTINS:
            continue
        name = program_name(words[0])
        if name:
            found.add(name)
    return found


def _argv_programs(argv: ast.List | ast.Tuple, names: dict[str, list[str]]) -> set[str]:
    words = [_literal(e, names) for e in argv.elts]
    found = set()
    expect_program = True
    for i, word in enumerate(words):
        if word is None:
            expect_program = False
            continue
        name = program_name(word)
        if expect_program and name and not _ASSIGNMENT.fullmatch(word):
            found.add(name)
            expect_program = name in WRAPPERS
        elif expect_program and not (word.startswith("-") or _ASSIGNMENT.fullmatch(word)):
            expect_program = False
        if name in SHELLS and i + 2 < len(words) and words[i + 1] == "-c" and words[i + 2]:
            found |= shell_programs(words[i + 2])
    return found


def _names_a_program(call: ast.Call) -> bool:
    """`shutil.which(x)`, or any `programs.<function>(x)` of sparkops/programs.py."""
    func = call.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.attr == "which" or func.value.id == "programs"
    return isinstance(func, ast.Name) and func.id == "which"


def _call_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return call.func.id if isinstance(call.func, ast.Name) else None


def scan_source(source: str) -> dict[str, list[int]]:
    """Program -> the lines that run it, in one module's source."""
    tree = ast.parse(source)
    names = _strings(tree)
    argvs: list[ast.List | ast.Tuple] = []
    found: dict[str, list[int]] = {}

    def add(programs: Iterable[str], line: int) -> None:
        for program in programs:
            found.setdefault(program, []).append(line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name, first = _call_name(node), node.args[0] if node.args else None
            if name in RUNNERS and isinstance(first, ast.List | ast.Tuple):
                argvs.append(first)
            elif _names_a_program(node) and first is not None:
                text = _literal(first, names)
                add([p for p in [program_name(text or "{}")] if p], node.lineno)
            elif name == "sh" and first is not None and _literal(first, names):
                add(shell_programs(_literal(first, names) or ""), node.lineno)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.List | ast.Tuple):
            if any(isinstance(t, ast.Name) and ARGV_NAMES.search(t.id) for t in node.targets):
                argvs.append(node.value)
        elif isinstance(node, ast.FunctionDef) and node.name.endswith("argv"):
            for inner in ast.walk(node):
                value = getattr(inner, "value", None)
                if isinstance(inner, ast.Return | ast.Assign) and isinstance(value, ast.List):
                    argvs.append(value)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and SCRIPT_START.match(node.value)
        ):
            add(shell_programs(node.value), node.lineno)
    for argv in argvs:
        add(_argv_programs(argv, names), argv.lineno)
    return found


def scan(root: Path, parts: Iterable[str]) -> dict[str, list[str]]:
    """Program -> `path:line` places, over the .py files under `parts` of `root`."""
    found: dict[str, list[str]] = {}
    for part in parts:
        path = root / part
        for module in [path] if path.is_file() else sorted(path.rglob("*.py")):
            for program, lines in scan_source(module.read_text()).items():
                places = [f"{module.relative_to(root)}:{line}" for line in lines]
                found.setdefault(program, []).extend(places)
    return found
