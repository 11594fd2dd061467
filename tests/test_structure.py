"""The codebase's structure: an acyclic import graph (function-level imports included), the
library layers below the application, and a stage graph whose keys cover what it reads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mucs_pipeline.graph import GRAPH, STAGE, STAGES
from mucs_pipeline.layout import Layout
from mucs_pipeline.manifest import UndeclaredReadError

PACKAGE = Path(__file__).resolve().parent.parent / "mucs_pipeline"
# The library: what a stage, the pipeline or a report is built from, never the reverse.
LIBRARY = ("data", "models", "attribution", "evaluation")
APPLICATION = ("stages", "pipeline", "report", "query", "api", "cli", "__main__", "plan")


def _module(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.Module):
    """Every import statement that can run, at any depth (not under `if TYPE_CHECKING:`)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        todo.extend(ast.iter_child_nodes(node))


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports (a package's __init__ counts as imported
    with any of its modules)."""
    modules = {_module(p, package): p for p in package.rglob("*.py")}

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name if path.name == "__init__.py" else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}".rstrip(".")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]  # fmt: skip
            for target in targets:
                if target.split(".")[0] != package.name or (found := owner(target)) is None:
                    continue
                parts = found.split(".")
                deps.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
        graph[name] = {d for d in deps if d != name and not name.startswith(d + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: strongly connected components of more than one module."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                on_stack.discard(w)
                component.append(w)
            on_stack.discard(v)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_library_does_not_import_the_application():
    graph = import_graph()
    layer = lambda m: m.split(".")[1] if "." in m else ""  # noqa: E731
    wrong = [
        f"{m} -> {d}"
        for m, deps in graph.items()
        if layer(m) in LIBRARY
        for d in deps
        if layer(d) in APPLICATION
    ]
    assert wrong == []


def test_the_cycle_check_finds_a_cycle(tmp_path):
    """The check can fail: two modules that import each other inside functions."""
    pkg = tmp_path / "mucs_pipeline"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from mucs_pipeline.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def g():\n    from .. import a\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import mucs_pipeline.a\n"
    )
    graph = import_graph(pkg)
    assert cycles(graph) == [["mucs_pipeline.a", "mucs_pipeline.sub.b"]]
    assert graph["mucs_pipeline.c"] == set()  # annotations only: no import at run time


class TracingLayout(Layout):
    """A layout that records which unit keys each unit's key is computed from."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.deps: dict[tuple, set[tuple]] = {}
        self._computing: list[tuple] = []

    def key(self, stage, method=None):
        if self._computing:
            self.deps.setdefault(self._computing[-1], set()).add((stage, method))
        self._computing.append((stage, method))
        try:
            return super().key(stage, method)
        finally:
            self._computing.pop()


@pytest.mark.parametrize(
    "overrides",
    [(), ("method=ensemble",), ("lds=on",), ("lds=on", "lds.queries=both", "method=ensemble")],
)
def test_each_key_covers_what_its_stage_reads(tmp_path, overrides):
    """Every unit a stage reads enters its key, directly or through another key: a changed
    upstream config always gives a new key."""
    from conftest import make_cfg

    layout = TracingLayout(make_cfg(tmp_path, *overrides))

    def closure(unit):
        seen, todo = set(), [unit]
        while todo:
            for dep in layout.deps.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    for stage in STAGES:
        for method in layout.units(stage):
            layout.key(stage, method)
            missing = set(layout.upstream(stage, method)) - closure((stage, method))
            assert not missing, f"{stage}[{method}] reads {missing} outside its key"


def test_a_unit_reads_only_what_its_stage_declares(tmp_path):
    from conftest import make_cfg

    layout = Layout(make_cfg(tmp_path))
    assert ("attribute", "mucs") not in layout.upstream("regenerate", "mucs")
    with layout.reading("regenerate", "mucs"):
        layout.manifest("retrain", "mucs")  # declared: None, since nothing ran
        with pytest.raises(UndeclaredReadError, match=r"regenerate\[mucs\] read attribute\[mucs\]"):
            layout.require("attribute", "mucs")
    assert layout.manifest("attribute", "mucs") is None  # outside a unit's work: no check


def test_the_graph_is_declared_once():
    assert STAGES == [s.name for s in GRAPH] and set(STAGE) == set(STAGES)
    evaluate = {read.stage for read in STAGE["evaluate"].reads}
    assert evaluate == {"regenerate", "generate", "retrain", "attribute", "pretrain", "null_loss"}
