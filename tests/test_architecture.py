"""The architecture, checked: dependencies point one way, no import cycles, one module per detector
type, no giant modules (docs/architecture.md describes the layers).

Imports are read from the source with :mod:`ast`, at every level (inside functions and
``TYPE_CHECKING`` blocks too): a deferred import is still a dependency. Cycles are checked twice:
between components with every import, and between modules with the imports that run (an
annotation-only import inside ``if TYPE_CHECKING:`` cannot make a module wait for another).
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections import defaultdict
from pathlib import Path

import pytest

from semwatch.config import import_all_detectors
from semwatch.engine.detector import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("semwatch", "streams", "detectors", "rules", "sinks")

#: Component -> the components it may import (besides itself). A component is a top-level package
#: or a subpackage/module of ``semwatch``. The order is the layering: contract <- engine <-
#: detectors, rules, enrichment, ingest <- config <- streams, sinks, offline, simulator <- cli.
ALLOWED: dict[str, set[str]] = {
    "semwatch.contract": set(),
    "semwatch.engine": {"semwatch.contract"},
    "semwatch.enrich": {"semwatch.contract", "semwatch.engine"},
    "semwatch.ingest": {"semwatch.contract"},
    "detectors": {"semwatch.contract", "semwatch.engine"},
    "rules": {"semwatch.contract", "semwatch.engine"},
    "semwatch.settings": set(),
    "semwatch.broker": set(),
    "semwatch.config": {"semwatch.contract", "semwatch.engine", "semwatch.enrich"},
    "sinks": {"semwatch.contract", "semwatch.settings"},
    "semwatch.offline": {"semwatch.contract", "semwatch.engine", "semwatch.enrich", "semwatch.config",
                         "semwatch.settings"},
    "semwatch.simulator": {"semwatch.contract", "semwatch.settings", "semwatch.broker"},
    "streams": {"semwatch.contract", "semwatch.engine", "semwatch.enrich", "semwatch.ingest",
                "semwatch.config", "semwatch.settings", "semwatch.broker", "sinks"},
    "semwatch.check_config": {"semwatch.config", "semwatch.settings"},
    "semwatch.cli": {"semwatch.config", "semwatch.settings"},  # commands are imported by name
    "semwatch": set(),  # semwatch/__init__.py
}
MAX_CODE_LINES = 800


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def component(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "semwatch":
        return parts[0]
    return ".".join(parts[:2]) if len(parts) > 1 else "semwatch"


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                inside.update(id(n) for n in ast.walk(child))
    return inside


def _imports(module: str, path: Path, runtime_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skip = _type_checking_nodes(tree) if runtime_only else set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # "from pkg import module"
    return {m for m in found if m in MODULES}


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}
RUNTIME_GRAPH = {m: _imports(m, p, runtime_only=True) for m, p in MODULES.items()}


def test_every_component_is_declared():
    assert {component(m) for m in MODULES} <= set(ALLOWED), "add the new component to ALLOWED"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_dependencies_point_one_way(module):
    mine = component(module)
    bad = sorted(f"{dep} ({component(dep)})" for dep in GRAPH[module]
                 if component(dep) != mine and component(dep) not in ALLOWED[mine])
    assert not bad, f"{module} ({mine}) may not import {bad}; allowed: {sorted(ALLOWED[mine])}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w == v or w.startswith(v + "."):  # a package importing its own submodule
                continue
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                members.append(w)
                if w == v:
                    break
            if len(members) > 1:
                cycles.append(sorted(members))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return cycles


def test_no_import_cycles_between_modules():
    assert not _cycles(RUNTIME_GRAPH), f"import cycles: {_cycles(RUNTIME_GRAPH)}"


def test_no_import_cycles_between_components():
    graph: dict[str, set[str]] = defaultdict(set)
    for module, deps in GRAPH.items():
        graph[component(module)].update(component(d) for d in deps if component(d) != component(module))
    for c in list(graph):
        for d in list(graph[c]):
            graph.setdefault(d, set())
    assert not _cycles(dict(graph)), f"cycles between components: {_cycles(dict(graph))}"


def test_every_registered_type_lives_in_a_module_of_its_name():
    import_all_detectors()
    for type_name, cls in REGISTRY.items():
        if cls.__module__.startswith(("detectors.", "rules.")):
            assert cls.__module__.rsplit(".", 1)[1] == type_name, \
                f"type {type_name!r} is registered by {cls.__module__}, not a module named after it"


def code_lines(path: Path) -> int:
    """Lines holding code: not blank, not comments, not docstrings."""
    text = path.read_text(encoding="utf-8")
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                            tokenize.DEDENT, tokenize.ENDMARKER):
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return len(lines - docstrings)


def test_no_module_is_a_drawer_for_everything():
    sizes = {m: code_lines(p) for m, p in MODULES.items()}
    big = {m: n for m, n in sizes.items() if n > MAX_CODE_LINES}
    assert not big, f"modules over {MAX_CODE_LINES} lines of code: {big}"


def test_typed_marker_ships():
    assert (ROOT / "semwatch" / "py.typed").exists()
