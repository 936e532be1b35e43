"""The pager package's layout: its modules import each other in one direction only (no cycles,
``TYPE_CHECKING`` imports included), in the order its ``__init__`` documents, and none is long."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sinks" / "pager"
# Each module may import only modules listed before it (sinks/pager/__init__.py says the same).
ORDER = ["records", "metrics", "delivery", "alertmanager", "pagerduty", "memory", "ledger", "offsets",
         "dispatch", "agent"]
MAX_LINES = 600


def pager_imports(path: Path) -> set[str]:
    """Modules of sinks.pager that a file imports, anywhere in it (functions and TYPE_CHECKING too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("sinks.pager."):
                found.add(name.split(".")[2])
    return found


def test_every_module_is_in_the_documented_order():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == set(ORDER)
    doc = (PACKAGE / "__init__.py").read_text(encoding="utf-8")
    positions = [doc.index(f"sinks.pager.{m}`") for m in ORDER]
    assert positions == sorted(positions), "sinks/pager/__init__.py lists the modules in another order"


def test_imports_point_one_way():
    problems = []
    for i, module in enumerate(ORDER):
        for imported in pager_imports(PACKAGE / f"{module}.py") - {module}:
            if imported not in ORDER[:i]:
                problems.append(f"sinks.pager.{module} imports sinks.pager.{imported}")
    assert not problems, "\n".join(problems)
    assert pager_imports(PACKAGE / "__init__.py") == set()


def test_modules_stay_short():
    for path in PACKAGE.glob("*.py"):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= MAX_LINES, f"{path.name}: {lines} lines"
