"""The package's layers import in one direction only, and its files stay small.

The layer order is written once, here (and explained in docs/architecture.md): each layer may import
from the layers before it and from itself, never from a layer after it. ``filterscope/__init__.py``
and ``__main__.py`` sit above every layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "filterscope"

LAYERS = ["core", "io", "models", "data", "methods", "analyses", "engine", "training", "report", "pipelines", "cli"]
# Methods, analyses and the engine return result objects; they write no run directory and draw nothing.
NEVER_IMPORTS = {"methods": {"io", "report"}, "analyses": {"io", "report"}, "engine": {"io", "report"}}
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80


def _module_of(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imported_modules(path: Path) -> list[tuple[int, list[str]]]:
    """(line, module path inside filterscope) of every import of filterscope in ``path``."""
    module = _module_of(path)
    package = module if path.name == "__init__.py" else module[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
                names = [target + [alias.name] for alias in node.names] if not node.module else [target]
                found += [(node.lineno, name) for name in names]
            elif node.module and node.module.split(".")[0] == "filterscope":
                found.append((node.lineno, node.module.split(".")[1:]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[1:]) for alias in node.names
                      if alias.name.split(".")[0] == "filterscope"]
    return found


def _layer_of(module: list[str]) -> str | None:
    return module[0] if module and module[0] in LAYERS else None


def _source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_layer():
    loose = [str(p.relative_to(PACKAGE)) for p in _source_files()
             if _layer_of(_module_of(p)) is None and p.parent != PACKAGE]
    top_level = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == []
    assert top_level == ["__init__.py", "__main__.py"]


def test_imports_follow_the_layer_order():
    violations = []
    for path in _source_files():
        own = _layer_of(_module_of(path))
        if own is None:  # filterscope/__init__.py, __main__.py: above every layer
            continue
        for line, target in _imported_modules(path):
            layer = _layer_of(target)
            if layer is None:
                if target:  # an import of a top-level module would bypass the layers
                    violations.append(f"{path.relative_to(PACKAGE)}:{line} imports filterscope.{'.'.join(target)}")
                continue
            if LAYERS.index(layer) > LAYERS.index(own):
                violations.append(f"{path.relative_to(PACKAGE)}:{line} ({own}) imports {'.'.join(target)} ({layer})")
            if layer in NEVER_IMPORTS.get(own, ()):
                violations.append(f"{path.relative_to(PACKAGE)}:{line} ({own}) must not import {layer}")
    assert violations == []


def test_no_import_cycle_between_files():
    modules = {".".join(_module_of(p)): p for p in _source_files()}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for _, target in _imported_modules(path):
            for end in range(len(target), 0, -1):  # the longest prefix that is a module of the package
                candidate = ".".join(target[:end])
                if candidate in modules and candidate != name:
                    edges.add(candidate)
                    break
        graph[name] = edges
    # A package's __init__ re-exporting its own files is not a cycle between files.
    for name in graph:
        graph[name] = {t for t in graph[name] if not (name.startswith(t + ".") and modules[t].name == "__init__.py")}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_files_and_functions_stay_small():
    long_files, long_functions = [], []
    for path in _source_files():
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES:
            long_files.append(f"{path.relative_to(PACKAGE)} ({text.count(chr(10))} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length} lines)")
    assert long_files == []
    assert long_functions == []


def test_no_module_imports_another_modules_private_names():
    private = []
    for path in _source_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                private += [f"{path.relative_to(PACKAGE)}:{node.lineno} {alias.name}" for alias in node.names
                            if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert private == []
