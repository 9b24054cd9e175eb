"""The package's shape: one top-level package, no core module importing a plugin, a short loop."""

from __future__ import annotations

import ast
import inspect
import shutil
import subprocess
import sys
import zipfile

from support import ROOT

CORE = ROOT / "harness"


def test_no_core_module_imports_a_plugin():
    for path in CORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(("cnnbench.plugins", "plugins")), f"{path.name} imports {name}"
                assert not (isinstance(node, ast.ImportFrom) and node.level and name.startswith("plugins"))


def test_train_fits_on_one_screen():
    from cnnbench.training.train import train

    lines, _ = inspect.getsourcelines(train)
    assert len(lines) <= 60, len(lines)


def test_builtins_are_registered_without_entry_points(monkeypatch):
    from cnnbench import registry

    monkeypatch.setattr(registry, "_entry_points", lambda: [])
    reg = registry.Registry(registry.make_plugin_manager())
    assert {name for name, _ in reg.plugins()} == set(registry.DEFAULT_PLUGINS)
    assert "mnist_gap" in reg.list_models() and reg.targets()


def test_a_plugin_named_twice_is_loaded_once():
    from support import make_registry

    reg = make_registry("cnnbench.plugins.mnist_models", "extra_model", "extra_model")
    assert reg.list_models("mnist_gap") == ["mnist_gap"] and "extra_net" in reg.list_models()


def test_wheel_installs_only_cnnbench(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("harness", "plugins", "pyproject.toml", "README.md"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
         str(source)],
        check=True, capture_output=True,
    )
    [wheel] = tmp_path.glob("cnnbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"cnnbench"}
    assert "cnnbench/plugins/mnist.py" in names and "cnnbench/blocks.py" in names
    assert "cnnbench/plugins/nets/mnist.py" in names
    [top_level] = [n for n in names if n.endswith("top_level.txt")] or [None]
    if top_level:
        assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["cnnbench"]
