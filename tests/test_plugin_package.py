"""A third-party distribution, really installed, is discovered through its entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from support import ROOT

EXAMPLE = ROOT / "examples" / "cnnbench-example-plugin"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / EXAMPLE.name
    shutil.copytree(EXAMPLE, source)  # setuptools writes build/ beside the sources: keep it out of the tree
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    return target


def bench(site, *args, **env):
    environment = {**os.environ, "PYTHONPATH": str(site), **env}
    environment.pop("BENCH_PLUGINS", None)
    code = f"from cnnbench.cli import main; main({list(args)!r})"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, cwd=ROOT)


def bench_list(site, **env):
    return bench(site, "list", "models", **env)


def test_installed_plugin_is_discovered(site):
    assert list(site.glob("cnnbench_example_plugin-*.dist-info"))
    result = bench_list(site)
    assert result.returncode == 0, result.stderr
    assert "example_tiny" in result.stdout and "cnnbench-example-plugin:example" in result.stdout


def test_autoload_switch_skips_third_party_but_not_builtins(site):
    result = bench_list(site, BENCH_DISABLE_PLUGIN_AUTOLOAD="1")
    assert result.returncode == 0, result.stderr
    assert "example_tiny" not in result.stdout and "mnist_gap" in result.stdout


def test_example_trains_and_its_record_names_the_distribution(site, tmp_path, data_dir):
    result = bench(site, "run", "--model", "example_tiny", "--epochs", "1", "--limit-train", "512", "--limit-test",
                   "128", "--data-dir", str(data_dir), "--results-dir", str(tmp_path), "--no-progress")
    assert result.returncode == 0, result.stderr
    [path] = tmp_path.glob("*.json")
    record = json.loads(path.read_text())
    assert record["params"] == 1_432
    assert record["plugins"]["model"] == {
        "plugin": "cnnbench-example-plugin:example", "module": "cnnbench_example",
        "distribution": "cnnbench-example-plugin", "version": "0.1.0",
    }


def test_source_tree_stays_clean(site):
    assert not (EXAMPLE / "build").exists() and not list(EXAMPLE.glob("*.egg-info"))
