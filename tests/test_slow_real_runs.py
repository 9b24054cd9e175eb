"""Full recipes on the real data (minutes each): ``pytest -m slow``. Not run by default."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cnnbench.cli import main

pytestmark = pytest.mark.slow


def run(tmp_path, data_dir, *args: str) -> dict:
    result = CliRunner().invoke(
        main, ["run", *args, "--data-dir", str(data_dir), "--results-dir", str(tmp_path), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    [path] = tmp_path.glob("*.json")
    return json.loads(path.read_text())


def test_mnist_gap_full_recipe(tmp_path, data_dir):
    record = run(tmp_path, data_dir, "--model", "mnist_gap")
    assert record["epochs_run"] == 15 and record["train_images"] == 60_000
    assert record["final_test_acc"] >= 0.99


def test_cifar_3block_two_epochs(tmp_path, data_dir):
    record = run(tmp_path, data_dir, "--model", "cifar_3block", "--epochs", "2")
    assert record["final_test_acc"] >= 0.45
