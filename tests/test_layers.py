"""The package's layers, read from its own imports (every ``import`` statement, those inside functions too).

Each module belongs to one layer of :data:`LAYERS`; it may import modules of its own layer and of the layers
below, never above. Runtime imports between mednf's modules form no cycle, every import of a mednf module
stands at the top of its file, and the libraries that only some installs or commands have are imported
through :func:`mednf.optional.optional_import`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mednf"

# lowest first; a module is in the first layer whose prefix it has
LAYERS: list[tuple[str, ...]] = [
    ("mednf.errors", "mednf.version", "mednf.optional", "mednf.arguments", "mednf.shipped", "mednf.openmp"),
    ("mednf.io",),
    ("mednf.engine",),
    ("mednf.format",),  # self-contained on io/ and the engine's config
    ("mednf.sources",),
    ("mednf.remote",),
    ("mednf.lookup", "mednf.dataset", "mednf.loading", "mednf.figures"),  # mednf.load and what it returns
    ("mednf.building",),
    ("mednf.tasks",),
    ("mednf.cli",),
    ("mednf",),  # the package's public names
]
OPTIONAL = ("nibabel", "scipy", "fsspec", "aiohttp", "tensorboard", "medmnist", "datasets", "sklearn", "matplotlib")


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    in_function: bool
    type_checking: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The modules (of any package) an import statement loads: ``from a.b import c`` is ``a.b.c`` if that is a
    module, else ``a.b``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parent = module.split(".") if is_package else module.split(".")[:-1]
        parent = parent[: len(parent) - node.level + 1]
        base = ".".join(parent + ([node.module] if node.module else []))
    names = [f"{base}.{alias.name}" for alias in node.names]
    return [n for n in names if n in MODULES] or [base]


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, (ast.Name, ast.Attribute)) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(module: str) -> list[Import]:
    path = MODULES[module]
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _targets(child, module, path.name == "__init__.py"):
                    found.append(Import(module, target, child.lineno, in_function, type_checking))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)),
                  type_checking or (isinstance(child, ast.If) and _is_type_checking(child)))

    visit(ast.parse(path.read_text(encoding="utf-8")), False, False)
    return found


ALL = [imp for module in sorted(MODULES) for imp in imports_of(module)]
OWN = [imp for imp in ALL if imp.imported == "mednf" or imp.imported.startswith("mednf.")]


def layer(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it to LAYERS")


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer(module)


def test_no_import_runs_upward() -> None:
    upward = [f"{i.importer}:{i.line} imports {i.imported} (layer {layer(i.importer)} → {layer(i.imported)})"
              for i in OWN if layer(i.imported) > layer(i.importer)]
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for i in OWN:
        if not i.type_checking and i.imported in MODULES and i.imported != i.importer:
            graph[i.importer].add(i.imported)
    # a package's __init__ is imported before any of its modules: an import of mednf.x.y also runs mednf.x
    for module in MODULES:
        for target in list(graph[module]):
            parts = target.split(".")
            for n in range(2, len(parts)):
                parent = ".".join(parts[:n])
                if parent in MODULES and parent != module and not module.startswith(parent + "."):
                    graph[module].add(parent)
    state: dict[str, int] = {}
    cycles: list[str] = []

    def walk(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" → ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                walk(target, stack + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_own_imports_stand_at_the_top() -> None:
    hidden = [f"{i.importer}:{i.line} imports {i.imported} inside a function" for i in OWN if i.in_function]
    assert not hidden, "move these imports to the top of their file:\n" + "\n".join(hidden)


def test_optional_libraries_go_through_the_helper() -> None:
    direct = [f"{i.importer}:{i.line} imports {i.imported}" for i in ALL
              if i.imported.split(".")[0] in OPTIONAL and not i.type_checking and i.importer != "mednf.optional"]
    assert not direct, "import these through mednf.optional.optional_import:\n" + "\n".join(direct)


@pytest.mark.parametrize("module", ["mednf.format.reader", "mednf.format.writer", "mednf.format.card"])
def test_the_format_imports_no_builder_layer(module: str) -> None:
    """The on-disk format stands on io/ and engine/ alone: no source kind, build, remote or task module."""
    reached, todo = set(), [module]
    while todo:
        current = todo.pop()
        for i in imports_of(current):
            if i.imported in MODULES and i.imported not in reached:
                reached.add(i.imported)
                todo.append(i.imported)
    above = sorted(m for m in reached if layer(m) > layer("mednf.format"))
    assert not above, f"{module} reaches {above}"
