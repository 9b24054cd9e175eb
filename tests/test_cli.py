"""The bench command line: every error path is one line and a non-zero exit; a tiny real run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from support import PLUGIN_FIXTURES, ROOT

from cnnbench.cli import main


def bench(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), env=env)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["run", "--model", "nope"], ["unknown model 'nope'", "mnist_gap"]),
        (["run", "--model", "mnist_gap", "--normalizer", "instance"], ["unknown normalizer", "batch, group, layer"]),
        (["run", "--model", "mnist_gap", "--augment", "mixup"], ["unknown augmentation 'mixup'", "rotate10"]),
        (["run", "--model", "mnist_gap", "--loader", "dali"], ["unknown loader 'dali'", "memory"]),
        (["run", "--model", "mnist_gap", "--seeds", "a,b"], ["--seeds"]),
        (["run", "--model", "mnist_gap", "--seeds", "1,1"], ["no repeats"]),
        (["run", "--model", "mnist_gap", "--device", "cuda:7", "--data-dir", "."], ["device"]),
        (["run", "--model", "mnist_gap", "--device", "toaster", "--data-dir", "."], ["device"]),
        (["run", "--model", "mnist_gap", "--epochs", "0"], ["--epochs"]),
        (["run", "--model", "mnist_gap", "--lr", "-1"], ["--lr"]),
        (["run"], ["--model"]),
        (["summary", "--model", "nope"], ["unknown model 'nope'"]),
        (["list", "gadgets"], ["gadgets"]),
        (["nonsense"], ["nonsense"]),
    ],
)
def test_error_paths(args, fragments):
    assert_one_line_error(bench(*args), *fragments)


def test_missing_data_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "MNIST", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    result = bench(
        "run", "--model", "mnist_gap", "--data-dir", str(tmp_path / "empty"), "--results-dir", str(tmp_path / "r")
    )
    assert_one_line_error(result, "MNIST files not found", "--data-dir")
    assert not (tmp_path / "r").exists()


def test_corrupt_data_is_one_line(tmp_path, data_dir):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (data_dir / "MNIST" / "raw").iterdir():
        (raw / f.name).write_bytes(f.read_bytes()[: 1000 if "train-images" in f.name else None])
    result = bench("run", "--model", "mnist_gap", "--data-dir", str(tmp_path), "--results-dir", str(tmp_path / "r"))
    assert_one_line_error(result, "train-images-idx3-ubyte.gz")


def test_plugin_errors_are_one_line():
    assert_one_line_error(bench("--plugin", "broken_import", "list"), "broken_import", "failed to import")
    assert_one_line_error(bench("--plugin", "dup_model", "list", "models"), "registered twice", "dup_model")
    assert_one_line_error(bench("--plugin", "no.such.module", "list"), "no.such.module")


def test_list_and_help_do_not_import_torch():
    code = (
        "import sys\nfrom cnnbench.cli import main\n"
        "for args in (['--help'], ['list'], ['list', 'models', '--pattern', 'mnist*']):\n"
        "    try:\n        main(args)\n    except SystemExit as e:\n        assert not e.code, e.code\n"
        "heavy = [m for m in ('torch', 'torchvision', 'ffcv', 'albumentations') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True)


def test_list_models_pattern():
    result = bench("list", "models", "--pattern", "mnist_step*")
    assert result.exit_code == 0
    assert "mnist_step2" in result.output and "mnist_gap" not in result.output


def test_summary_prints_layer_table():
    result = bench("summary", "--model", "mnist_2block")
    assert result.exit_code == 0
    assert "Total params: 19,728" in result.output and "RF" in result.output


def test_tiny_end_to_end_run(tmp_path, data_dir):
    """Two short epochs on a slice of the real data: the loss falls and the record is complete."""
    result = bench(
        "run",
        "--model",
        "mnist_gap",
        "--epochs",
        "2",
        "--limit-train",
        "3000",
        "--limit-test",
        "500",
        "--data-dir",
        str(data_dir),
        "--results-dir",
        str(tmp_path),
        "--seed",
        "7",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    [path] = tmp_path.glob("*.json")
    record = json.loads(path.read_text())
    first, last = record["epochs"]
    assert last["train_loss"] < first["train_loss"]
    assert record["seed"] == 7 and record["params"] == 7852 and record["augmentation"] == "rotate10"
    assert record["train_images"] == 3000 and record["test_images"] == 500
    assert 0 <= record["final_test_acc"] <= 1 and record["best_test_acc"] >= record["final_test_acc"]
    assert record["versions"]["torch"] and record["machine"]["cpu_count"] and "commit" in record["git"]
    assert sum(map(sum, record["confusion"])) == 500
    assert "class" in result.output and "test acc" in result.output  # per-class table
    state = torch.load(tmp_path / record["weights"], weights_only=True)
    model = __import__("cnnbench.registry", fromlist=["x"]).create_model("mnist_gap")
    model.load_state_dict(state)


def test_cpu_runs_repeat_exactly(tmp_path, data_dir):
    accs = []
    for i in range(2):
        out = tmp_path / str(i)
        result = bench(
            "run",
            "--model",
            "mnist_step2",
            "--epochs",
            "1",
            "--limit-train",
            "1024",
            "--limit-test",
            "256",
            "--data-dir",
            str(data_dir),
            "--results-dir",
            str(out),
            "--seed",
            "3",
            "--no-progress",
        )
        assert result.exit_code == 0, result.output
        [path] = out.glob("*.json")
        accs.append(json.loads(path.read_text())["epochs"][0]["train_loss"])
    assert accs[0] == accs[1]


def test_seeds_and_lifecycle_hooks(tmp_path, data_dir):
    import stopper

    stopper.CALLS.clear()
    result = bench(
        "--plugin",
        "stopper",
        "run",
        "--model",
        "mnist_step2",
        "--seeds",
        "2",
        "--epochs",
        "3",
        "--limit-train",
        "512",
        "--limit-test",
        "128",
        "--data-dir",
        str(data_dir),
        "--results-dir",
        str(tmp_path),
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))]
    assert sorted(r["seed"] for r in records) == [0, 1]
    assert all(r["epochs_run"] == 1 and "epoch_end hook after epoch 1" in r["stopped_by"] for r in records)
    assert stopper.CALLS == ["start mnist_step2", "epoch 1", "end 1"] * 2
    assert all(r["stopper_saw"] for r in records)


def test_env_plugins_variable_adds_models():
    result = bench("list", "models", env={"BENCH_PLUGINS": "extra_model", "PYTHONPATH": str(PLUGIN_FIXTURES)})
    assert result.exit_code == 0 and "extra_net" in result.output


def test_plugin_adds_a_command():
    result = bench("--plugin", "command_plugin", "hello", "--name", "bench")
    assert result.exit_code == 0 and result.output.strip() == "hello bench"
    assert "hello" in bench("--plugin", "command_plugin", "--help").output


def test_plugin_command_clashing_with_a_builtin_is_one_line():
    assert_one_line_error(bench("--plugin", "clash_command", "run", "--model", "x"), "clash_command", "'run'")


def test_convert_is_the_ffcv_plugins_command():
    from cnnbench.cli import main as group

    assert "convert" not in group.commands  # the core does not own it
    result = bench("--help")
    assert result.exit_code == 0 and "convert" in result.output
    assert "convert" not in bench("--no-plugin", "ffcv_commands", "--help").output


def test_list_pattern_without_match_is_one_line():
    assert_one_line_error(bench("list", "models", "--pattern", "vgg*"), "no model matches 'vgg*'", "mnist_gap")


def test_run_help_shows_the_limit_options():
    out = bench("run", "--help").output
    assert "--limit-train" in out and "--limit-test" in out and "--no-weights" in out


def test_console_is_a_plugin_that_can_be_replaced(tmp_path, data_dir):
    args = ["run", "--model", "mnist_step2", "--epochs", "1", "--limit-train", "256", "--limit-test", "128",
            "--data-dir", str(data_dir), "--results-dir", str(tmp_path), "--no-progress"]
    result = bench("--no-plugin", "console", "--plugin", "quiet_reporter", *args)
    assert result.exit_code == 0, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("QUIET mnist_step2 ")
    assert len(list(tmp_path.glob("*.json"))) == 1
