"""The package's shape: no import cycle (lazy imports inside functions count), training never imports evaluation,
no method branch outside the methods package, no module far over 400 lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tasft"


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """module → the tasft modules it imports anywhere in its body (``from . import x`` resolved to module x)."""
    modules = {_module(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[mod] |= {t for t in targets if t in modules and t != mod}
    return graph


def test_the_import_graph_has_no_cycle():
    graph, state, stack = _graph(), {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


#: the packages and top-level modules from the bottom up (shared/DESIGN.md's data flow): each may import only its own
#: layer and those below it. generation and scoring sit below training — training harvests D_h with them, and
#: neither needs training — and the helpers at the bottom are everyone's.
LAYERS = [
    {"errors", "io_utils", "outputs", "plotting", "memory", "config", "config_checks"},
    {"data"},
    {"models"},
    {"data_fetch", "suites"},
    {"objectives"},
    {"methods"},
    {"run_config", "run_changes"},
    {"scoring"},
    {"generation"},
    {"training"},
    {"evaluation"},
    {"experiments"},
    # the command line and the package API, at the top
    {"cli", "cli_compare", "cli_labels", "cli_reference", "__main__", "tasft"},
]


def _layer(module: str) -> int:
    parts = module.split(".")
    unit = parts[1] if len(parts) > 1 else parts[0]
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a layer above its own (lazy imports inside functions count)."""
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if _layer(b) > _layer(a))


def test_every_package_has_a_layer_and_no_import_goes_up():
    graph = _graph()
    unplaced = sorted(m for m in graph if not any((m.split(".")[1:2] or ["tasft"])[0] in layer for layer in LAYERS))
    assert unplaced == [], f"give these a layer in LAYERS: {unplaced}"
    assert upward_imports(graph) == []


def test_an_upward_import_is_caught():
    """The check itself: methods importing training (the cycle this layout removed) is reported."""
    graph = _graph()
    graph["tasft.methods.base"] = graph["tasft.methods.base"] | {"tasft.training.trainer"}
    assert upward_imports(graph) == ["tasft.methods.base -> tasft.training.trainer"]


def test_training_never_imports_evaluation():
    graph = _graph()
    reach: dict[str, set[str]] = {}

    def closure(node):
        if node not in reach:
            reach[node] = set()
            for nxt in graph[node]:
                reach[node] |= {nxt} | closure(nxt)
        return reach[node]

    for mod in graph:
        if mod.startswith(("tasft.training", "tasft.methods", "tasft.objectives")):
            bad = sorted(m for m in closure(mod) if m.startswith(("tasft.evaluation", "tasft.experiments")))
            assert not bad, f"{mod} imports {bad}"


def test_no_method_branch_outside_the_methods_package():
    pattern = re.compile(r"method ==|method in \(")
    hits = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py") if "methods" not in p.parts
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_modules_stay_small():
    sizes = {str(p.relative_to(SRC)): len(p.read_text(encoding="utf-8").splitlines()) for p in SRC.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 420} == {}
