"""The architecture, held by tests over every module of harness/ and plugins/ (docs/architecture.md).

- The dependency rule: ``cnnbench.cli`` -> ``cnnbench.sweep`` -> ``cnnbench.reports`` ->
  ``cnnbench.deploy`` -> ``cnnbench.verify`` -> ``cnnbench.training`` -> the core (the top-level
  modules). A module imports only from its own
  layer or the layers to its right; the built-in plugins never import ``cnnbench.cli``, and no core
  or layer module imports a plugin.
- No import cycles among the modules' top-level imports.
- An import inside a function only where it keeps a heavy library (torch, ray, matplotlib,
  selenium ...) out of ``bench --help``, marked ``# lazy: <reason>``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import ROOT

LAYERS = ("core", "training", "verify", "deploy", "reports", "sweep", "cli")  # left may not import right
PLUGIN_MAY_IMPORT = ("core", "training", "verify", "deploy", "reports", "sweep")
# Libraries worth keeping out of ``bench --help`` (about 0.3 s): the big ones, and the small ones
# that each cost tens of milliseconds to import here (tabulate ~50 ms, tqdm.auto ~65 ms, jinja2 ~47 ms).
HEAVY = {
    "torch", "torchvision", "numpy", "ray", "matplotlib", "selenium", "ffcv", "scipy", "jinja2", "markupsafe",
    "PIL", "cv2", "albumentations", "numba", "onnx", "onnxruntime", "onnxscript", "tabulate", "tqdm",
}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module imported (a submodule where ``from pkg import sub`` names one)
    line: int
    lazy: bool  # inside a function
    type_only: bool  # under ``if TYPE_CHECKING:``
    comment: str  # the source line's trailing comment


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = list(rel.with_suffix("").parts)
    parts[0] = "cnnbench" if parts[0] == "harness" else "cnnbench.plugins"
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    files = sorted((ROOT / "harness").rglob("*.py")) + sorted((ROOT / "plugins").rglob("*.py"))
    return {module_name(p): p for p in files}


MODULES = source_files()


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path) -> list[Import]:
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text)
    found: list[Import] = []

    def comment(node: ast.stmt) -> str:
        line = lines[node.lineno - 1]
        return line.split("#", 1)[1].strip() if "#" in line else ""

    def visit(node: ast.AST, lazy: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner_lazy = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            inner_type = type_only or (
                isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(name, alias.name, child.lineno, lazy, type_only, comment(child)))
            elif isinstance(child, ast.ImportFrom):
                module = _resolve(name, path.name == "__init__.py", child)
                for alias in child.names:
                    candidate = f"{module}.{alias.name}"
                    target = candidate if candidate in MODULES else module
                    found.append(Import(name, target, child.lineno, lazy, type_only, comment(child)))
            visit(child, inner_lazy, inner_type)

    visit(tree, False, False)
    return found


ALL_IMPORTS = [imp for name, path in MODULES.items() for imp in imports_of(name, path)]


def layer_of(module: str) -> str | None:
    """The layer of a cnnbench module (None: not cnnbench's)."""
    if module == "cnnbench.plugins" or module.startswith("cnnbench.plugins."):
        return "plugins"
    if module == "cnnbench" or not module.startswith("cnnbench."):
        return "core" if module == "cnnbench" else None
    second = module.split(".")[1]
    return second if second in LAYERS else "core"


def forbidden(importer: str, target: str) -> str | None:
    """Why ``importer`` may not import ``target`` (None: allowed)."""
    source, dest = layer_of(importer), layer_of(target)
    if source is None or dest is None:
        return None
    if source == "plugins":
        return None if dest in (*PLUGIN_MAY_IMPORT, "plugins") else f"a plugin imports {dest}"
    if dest == "plugins":
        return f"{source} imports a built-in plugin"
    if LAYERS.index(dest) > LAYERS.index(source):
        return f"{source} imports {dest}, a layer to its left ({' -> '.join(reversed(LAYERS))})"
    return None


def violations(imports: list[Import]) -> list[str]:
    return [
        f"{imp.importer} (line {imp.line}) imports {imp.target}: {why}"
        for imp in imports if (why := forbidden(imp.importer, imp.target))
    ]


def test_every_module_keeps_the_dependency_rule():
    assert violations(ALL_IMPORTS) == []


def test_the_rule_catches_a_forbidden_import():
    """Adding ``from cnnbench.cli import main`` to a training module, or a sweep import to the core, fails."""
    bad = [
        Import("cnnbench.training.train", "cnnbench.cli", 1, False, False, ""),
        Import("cnnbench.runrecord", "cnnbench.sweep.grid", 1, True, False, "lazy: x"),
        Import("cnnbench.reports.site", "cnnbench.plugins.console", 1, False, False, ""),
        Import("cnnbench.plugins.ffcv_commands", "cnnbench.cli.run", 1, True, False, ""),
    ]
    assert len(violations(bad)) == 4
    assert violations([Import("cnnbench.cli.run", "cnnbench.training.plan", 1, True, False, "")]) == []


def module_graph(imports: list[Import]) -> dict[str, set[str]]:
    """Module-level imports between cnnbench modules (what runs when a module is imported)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in imports:
        if not imp.lazy and not imp.type_only and imp.target in MODULES and imp.target != imp.importer:
            graph[imp.importer].add(imp.target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    assert find_cycle(module_graph(ALL_IMPORTS)) is None


def test_the_cycle_check_catches_a_cycle():
    graph = module_graph(ALL_IMPORTS)
    graph["cnnbench.reports.html"] = {*graph["cnnbench.reports.html"], "cnnbench.reports.render"}
    assert find_cycle(graph) is not None


def heavy_modules(graph: dict[str, set[str]], imports: list[Import]) -> set[str]:
    """cnnbench modules whose import (transitively, at module level) imports a heavy library."""
    heavy = {imp.importer for imp in imports
             if not imp.lazy and not imp.type_only and imp.target.split(".")[0] in HEAVY}
    changed = True
    while changed:
        changed = False
        for module, targets in graph.items():
            if module not in heavy and targets & heavy:
                heavy.add(module)
                changed = True
    return heavy


def test_imports_inside_functions_keep_heavy_libraries_lazy_and_say_why():
    graph = module_graph(ALL_IMPORTS)
    heavy = heavy_modules(graph, ALL_IMPORTS)
    problems = []
    for imp in ALL_IMPORTS:
        if not imp.lazy:
            continue
        where = f"{imp.importer} line {imp.line}: import of {imp.target} inside a function"
        if imp.target.split(".")[0] not in HEAVY and imp.target not in heavy:
            problems.append(f"{where} keeps nothing heavy out: move it to the top of the module")
        elif not imp.comment.startswith("lazy:") or len(imp.comment) < len("lazy: xx"):
            problems.append(f"{where} needs a '# lazy: <reason>' comment")
    assert problems == []


@pytest.mark.parametrize("module", ["cnnbench", "cnnbench.cli", "cnnbench.registry", "cnnbench.reports.leaderboard"])
def test_light_entry_points_import_nothing_heavy(module):
    heavy = heavy_modules(module_graph(ALL_IMPORTS), ALL_IMPORTS)
    assert module not in heavy


def test_data_fixture_skips_without_data_and_fails_under_ci(tmp_path):
    """Run a tiny suite that asks for ``data_dir`` with BENCH_DATA_DIR at an empty folder: skipped
    (naming the folder), and failed when CI=true."""
    import os
    import subprocess
    import sys

    (tmp_path / "test_needs_data.py").write_text("def test_x(data_dir):\n    assert data_dir\n")
    conftest = (ROOT / "tests" / "conftest.py").read_text()
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "support.py").write_text((ROOT / "tests" / "support.py").read_text())
    empty = tmp_path / "no-data"
    empty.mkdir()

    def run(ci: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "BENCH_DATA_DIR": str(empty), "CI": ci}
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                               str(tmp_path / "test_needs_data.py")],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    skipped = run("false")
    assert skipped.returncode == 0, skipped.stdout
    assert "1 skipped" in skipped.stdout and str(empty) in skipped.stdout
    failed = run("true")
    assert failed.returncode == 1 and "1 error" in failed.stdout and str(empty) in failed.stdout, failed.stdout
