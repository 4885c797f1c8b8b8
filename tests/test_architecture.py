"""Imports run one way: no cycles between hearfuse's modules (lazy imports inside functions included), none
between its packages (a package whose modules import a module that imports the package back is an arrow up, even
when no two modules form a cycle), and no module imports a layer above its own (upstream -> fusion ->
config/model -> catalogue -> hear -> presets -> collection/evaluation -> cli). Reading an output folder costs
no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import hearfuse

PACKAGE = Path(hearfuse.__file__).parent

#: Each top-level module or subpackage of hearfuse and its layer; a module may import only its own
#: layer and those below.
LAYERS = {
    "errors": 0,
    "dtypes": 0,
    "identity": 0,
    "files": 0,
    "hear2021": 0,
    "audio": 1,
    "upstream": 1,
    "batching": 2,
    "fusion": 2,
    "config": 3,
    "model": 3,
    "catalogue": 4,  # the presets as configs, plain data below the HEAR surface
    "hear": 5,
    "": 5,  # the package itself: the HEAR API re-exported
    "presets": 6,  # one HEAR module per preset, built on hear
    "collection": 7,
    "xares": 7,
    "evaluation": 7,
    "cluster": 7,
    "suite": 7,
    "cli": 8,
    "__main__": 9,
}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("hearfuse", *path.relative_to(PACKAGE).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rsplit(".", 1)[0]
            target = (base + (f".{node.module}" if node.module else "")) if node.level else (node.module or "")
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in modules else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {target for target in found if target in modules and target != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return components


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def _units(graph: dict[str, set[str]], depth: int) -> dict[str, set[str]]:
    """The imports between units ``depth`` names deep: at depth 2 all of ``hearfuse.presets.*`` is one unit."""

    def unit(module: str) -> str:
        return ".".join(module.split(".")[:depth])

    units: dict[str, set[str]] = {unit(module): set() for module in graph}
    for module, targets in graph.items():
        units[unit(module)].update(unit(target) for target in targets if unit(target) != unit(module))
    return units


def test_no_cycles_between_packages():
    graph = _graph()
    for depth in range(2, max(module.count(".") for module in graph) + 2):
        assert _cycles(_units(graph, depth)) == [], f"packages {depth} names deep"


def test_the_package_check_finds_an_arrow_up_that_no_module_cycle_shows():
    # the arrow this check was written for: presets/<name>.py -> hear -> presets/__init__ (the preset list)
    graph = {
        "hearfuse.presets": set(),
        "hearfuse.presets.crepe": {"hearfuse.hear"},
        "hearfuse.hear": {"hearfuse.presets"},
    }
    assert _cycles(graph) == []
    assert _cycles(_units(graph, 2)) == [["hearfuse.hear", "hearfuse.presets"]]


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    assert part in LAYERS, f"{module}: give it a layer in LAYERS"
    return LAYERS[part]


def test_nothing_imports_a_layer_above_its_own():
    upward = [(m, t) for m, targets in _graph().items() for t in targets if _layer(t) > _layer(m)]
    assert upward == []


def test_the_collection_layout_reader_and_export_import_without_torch():
    """A reader of embeddings (a training job, a data loader worker) pays for numpy, not for torch and the model."""
    code = (
        "import sys, hearfuse.collection.layout, hearfuse.collection.reader, hearfuse.collection.export, "
        "hearfuse.identity; print(sorted(m for m in ('torch', 'transformers', 'hearfuse.model') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
