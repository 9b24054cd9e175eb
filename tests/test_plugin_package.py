"""A third-party distribution, really installed, is discovered through its entry point."""

from __future__ import annotations

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
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
    )
    return target


def bench_list(site, **env):
    environment = {**os.environ, "PYTHONPATH": str(site), **env}
    environment.pop("BENCH_PLUGINS", None)
    code = "from harness.cli import main; main(['list', 'models'])"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, cwd=ROOT)


def test_installed_plugin_is_discovered(site):
    assert list(site.glob("cnnbench_example_plugin-*.dist-info"))
    result = bench_list(site)
    assert result.returncode == 0, result.stderr
    assert "example_tiny" in result.stdout and "cnnbench-example-plugin:example" in result.stdout


def test_autoload_switch_skips_third_party_but_not_builtins(site):
    result = bench_list(site, BENCH_DISABLE_PLUGIN_AUTOLOAD="1")
    assert result.returncode == 0, result.stderr
    assert "example_tiny" not in result.stdout and "mnist_gap" in result.stdout
