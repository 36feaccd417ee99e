"""No runbook records the state it leaves inside a step's body.

`Run.step` prints the step's header inside its own `try`: a signal that lands as the header
prints interrupts the step before its body runs. A `run.leave(...)` in that body (or in its
`except`) then never runs, and the run ends INTERRUPTED with no STATE LEFT: the switchover
bug CI met once (702a80c). The state left is recorded around the step, never inside it; this
reads the runbooks' code (directly, and through a helper of theirs that records it)."""

from __future__ import annotations

import ast
from pathlib import Path

RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"
RECORDING = {"leave", "leave_as_read"}


def _calls(nodes: list[ast.stmt]):
    for node in ast.walk(ast.Module(body=nodes, type_ignores=[])):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            yield name, node.lineno


def _is_step(item: ast.withitem) -> bool:
    call = item.context_expr
    return (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "step"
    )


def violations(sources: dict[str, str]) -> list[str]:
    trees = {name: ast.parse(text) for name, text in sources.items()}
    # Helpers that record the state left themselves (cluster_restore._leave and the like).
    recorders = set(RECORDING)
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
                name in RECORDING for name, _ in _calls(node.body)
            ):
                recorders.add(node.name)
    found = []
    for file, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.With) and any(_is_step(i) for i in node.items):
                found += [
                    f"{file}:{line}: {name}() inside a step's body"
                    for name, line in _calls(node.body)
                    if name in recorders
                ]
    return sorted(set(found))


def test_no_runbook_records_its_state_left_inside_a_step():
    sources = {p.name: p.read_text() for p in sorted(RUNBOOKS.glob("*.py"))}
    assert violations(sources) == []


def test_the_check_finds_the_bug_it_is_for():
    """The switchover as it was before 702a80c, reduced; and a helper that records it."""
    before = """
def execute(run, cluster):
    with run.step("Wait until the old primary replicates"):
        try:
            wait(cluster)
        except BaseException:
            run.leave([state(cluster)])
            raise
"""
    through_helper = """
def _say_state(run, cluster):
    run.leave_as_read(lambda: ([state(cluster)], None))

def execute(run, cluster):
    with run.step("Switch"):
        _say_state(run, cluster)
"""
    after = """
def execute(run, cluster):
    try:
        with run.step("Wait until the old primary replicates"):
            wait(cluster)
    except BaseException:
        run.leave_as_read(lambda: ([state(cluster)], None))
        raise
"""
    assert violations({"before.py": before}) == ["before.py:7: leave() inside a step's body"]
    assert violations({"h.py": through_helper}) == ["h.py:7: _say_state() inside a step's body"]
    assert violations({"after.py": after}) == []
