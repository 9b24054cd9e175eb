"""bench speed: the measurement's fields and values, its options, the harness comparison, every error path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_cli import assert_one_line_error  # tests/ is on sys.path (no __init__.py)

from cnnbench.cli import main
from cnnbench.runrecord import RunRecord
from cnnbench.training import speed as speed_mod
from cnnbench.training.plan import Overrides, make_plan
from cnnbench.training.provenance import cpu_name

TINY = ("--steps", "2", "--windows", "2", "--warmup", "1", "--threads", "1")


def bench(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def speed_json(tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    result = bench("speed", *TINY, "--json", "--results-dir", str(tmp_path / "results"), *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]


def mnist_gap_forward_flops() -> int:
    """mnist_gap's forward FLOPs per image counted by hand: 2 x multiply-adds of its bias-free convolutions
    (cin, cout, kernel, output side), 28x28 input; norms, ReLU, dropout and pooling count nothing."""
    convs = [(1, 8, 3, 26), (8, 8, 3, 24), (8, 8, 3, 22), (8, 13, 3, 9), (13, 14, 3, 7), (14, 8, 1, 7),
             (8, 26, 3, 5), (26, 50, 1, 5), (50, 10, 1, 1)]
    return sum(2 * cin * cout * k * k * side * side for cin, cout, k, side in convs)


def test_json_has_every_field_with_sane_values(tmp_path):
    (r,) = speed_json(tmp_path, "--model", "mnist_gap", "--device", "cpu")
    assert (r["model"], r["dataset"], r["device"], r["precision"], r["compile"]) == (
        "mnist_gap", "mnist", "cpu", "fp32", "none"
    )
    assert r["batch_size"] == 128 and r["params"] == 7_852 and r["threads"] == 1 and not r["channels_last"]
    assert (r["warmup_steps"], r["windows"]) == (1, 2)
    for phase in ("train", "eval"):
        t = r[phase]
        assert t["steps_per_window"] == 2 and len(t["window_images_per_s"]) == 2
        assert 0 < t["images_per_s_min"] <= t["images_per_s"] <= t["images_per_s_max"]
        assert 0 < t["step_ms_min"] <= t["step_ms"] <= t["step_ms_max"]
        assert t["step_ms"] == pytest.approx(1000 * 128 / t["images_per_s"], rel=0.5)
        assert t["warmup_s"] > 0 and t["first_step_s"] > 0
    assert r["flops_per_image_forward"] == pytest.approx(mnist_gap_forward_flops(), rel=0.02)
    assert 2 <= r["flops_per_image_train"] / r["flops_per_image_forward"] <= 4
    gflops = r["flops_per_image_train"] * r["train"]["images_per_s"] / 1e9
    assert r["train_gflops_per_s"] == pytest.approx(gflops)
    assert r["eval_gflops_per_s"] > 0 and r["compile_s"] >= 0
    assert r["peak_memory_bytes"] > 10 * 2**20 and r["peak_memory_kind"] in ("rss_peak", "process_peak_rss")
    assert r["machine"]["cpu"] == cpu_name() and r["machine"]["cpu_count"] >= 1
    assert r["torch_version"] and r["created"].endswith("Z")
    assert r["harness"] is None  # no records in the results dir


def test_table_says_what_was_measured(tmp_path):
    result = bench("speed", *TINY, "--model", "mnist_step2", "--device", "cpu", "--results-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["model", "batch", "train"]
    assert lines[2].startswith("mnist_step2") and "MiB" in lines[2]
    assert "machine: " in result.output and "1 threads" in result.output and "synthetic batches" in result.output


@pytest.mark.parametrize("option", [("--channels-last",), ("--precision", "bf16")])
def test_channels_last_and_bf16_run_on_cpu(tmp_path, option):
    (r,) = speed_json(tmp_path, "--model", "mnist_step2", "--device", "cpu", "--batch-size", "32", *option)
    assert r["batch_size"] == 32 and r["train"]["images_per_s"] > 0 and r["eval"]["images_per_s"] > 0
    assert r["channels_last"] == ("--channels-last" in option)
    assert r["precision"] == ("bf16" if "bf16" in option else "fp32")
    assert r["flops_per_image_forward"] > 0


def test_a_pattern_measures_every_matching_model(tmp_path):
    rows = speed_json(tmp_path, "--model", "mnist_step*", "--device", "cpu", "--batch-size", "16")
    assert [r["model"] for r in rows] == ["mnist_step1", "mnist_step2", "mnist_step3"]
    result = bench("speed", *TINY, "--model", "mnist_step[12]", "--device", "cpu", "--batch-size", "16",
                   "--format", "markdown", "--results-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    table = [line for line in result.output.splitlines() if line.startswith("|")]
    assert len(table) == 4 and "mnist_step1" in table[2] and "mnist_step2" in table[3]
    assert "\n- machine: " in result.output


def test_measure_speed_times_the_harness_train_step(tmp_path, registry, monkeypatch):
    import cnnbench.training.train

    calls = []
    real = cnnbench.training.train.train_step
    monkeypatch.setattr(cnnbench.training.train, "train_step", lambda *a: calls.append(len(a[1])) or real(*a))
    plan = make_plan(registry, "mnist_gap", Overrides(batch_size=8, device="cpu", threads=1, results_dir=tmp_path))
    result = speed_mod.measure_speed(plan, warmup=2, windows=3, steps=4)
    assert calls == [8] * (2 + 3 * 4)
    assert result.train.steps_per_window == 4 and len(result.eval.window_images_per_s) == 3
    assert result.to_json()["train"]["images_per_s"] == result.train.images_per_s


def test_automatic_steps_per_window(tmp_path, registry):
    plan = make_plan(registry, "mnist_step2", Overrides(batch_size=8, device="cpu", threads=1, results_dir=tmp_path))
    result = speed_mod.measure_speed(plan, warmup=1, windows=2, steps=0, window_seconds=0.02)
    assert 1 <= result.train.steps_per_window <= speed_mod.MAX_AUTO_STEPS
    assert result.eval.steps_per_window >= result.train.steps_per_window  # a forward is cheaper than a step


# --- the harness's figure ----------------------------------------------------------------------------------


def record(results_dir: Path | None = None, *, images_per_s: float = 3000.0, model: str = "mnist_gap",
           batch_size: int = 128, device: str = "cpu", precision: str = "fp32", threads: int = 1,
           cpu: str | None = None, **extra: Any) -> dict[str, Any]:
    """A minimal run record (what the leaderboard reads); written to ``results_dir`` when given."""
    run_id = f"20260101T{len(list(results_dir.glob('*.json'))) if results_dir else 0:06d}Z-{model}-s0-abcd"
    data = {
        "run_id": run_id, "model": model, "dataset": "mnist", "params": 7_852, "recipe": {"batch_size": batch_size},
        "device": device, "precision": precision, "threads": threads, "images_per_s": images_per_s,
        "epochs": [{"epoch": 1, "test_acc": 0.99, "images_per_s": images_per_s}], "final_test_acc": 0.99,
        "best_test_acc": 0.99, "machine": {"cpu": cpu or cpu_name(), "cpu_count": 2, "gpu": "H100"},
    }
    data.update(extra)
    if results_dir is not None:
        results_dir.mkdir(parents=True, exist_ok=True)
        (results_dir / f"{run_id}.json").write_text(json.dumps(data))
    return data


def test_the_harness_figure_comes_from_matching_records(tmp_path):
    results = tmp_path / "results"
    record(results, images_per_s=1000.0)
    record(results, images_per_s=2000.0)
    record(results, images_per_s=9999.0, batch_size=64)  # another batch size
    record(results, images_per_s=9999.0, model="mnist_step1")
    (r,) = speed_json(tmp_path, "--model", "mnist_gap", "--device", "cpu")
    assert r["harness"]["runs"] == 2 and r["harness"]["images_per_s"] == 1500.0
    assert r["harness"]["ratio"] == pytest.approx(1500.0 / r["train"]["images_per_s"])
    result = bench("speed", *TINY, "--model", "mnist_gap", "--device", "cpu", "--results-dir", str(results))
    assert result.exit_code == 0, result.output
    assert "1,500 (2)" in result.output.splitlines()[2]


@pytest.mark.parametrize(
    "changes",
    [
        {"batch_size": 64}, {"model": "mnist_step1"}, {"precision": "bf16"}, {"device": "cuda:0"}, {"threads": 2},
        {"cpu": "Another CPU"}, {"channels_last": True}, {"compile": "default"},
        {"compile": {"mode": "max-autotune", "seconds": 30.0}}, {"launch": {"jobs_on_device": 2}},
        {"launch": {"fused_seeds": 3}}, {"fast_path": {"channels_last": True, "compile": "none"}},
        {"fast_path": {"channels_last": False, "compile": "default"}},
        {"images_per_s": None},
    ],
)
def test_records_of_other_settings_are_not_compared(changes):
    result = fake_result()
    assert speed_mod.harness_figure([RunRecord.from_json(record())], result) is not None
    assert speed_mod.harness_figure([RunRecord.from_json(record(**changes))], result) is None


def test_missing_layout_and_compile_count_as_off_and_named_ones_match():
    same = [record(), record(channels_last=False, compile="none"), record(compile={"mode": "none"}),
            record(threads=None), record(launch={"jobs_on_device": 1, "fused_seeds": 1}),
            record(fast_path={"channels_last": False, "compile": "none", "cudnn_benchmark": False})]
    figure = speed_mod.harness_figure([RunRecord.from_json(r) for r in same], fake_result())
    assert figure is not None and figure.runs == len(same) and figure.ratio == pytest.approx(1.5)
    compiled = fake_result(compile="default", channels_last=True)
    named = [record(channels_last=True, compile="default"),
             record(fast_path={"channels_last": True, "compile": "default"})]
    figure = speed_mod.harness_figure([RunRecord.from_json(r) for r in named], compiled)
    assert figure is not None and figure.runs == 2


def fake_result(**changes: Any) -> speed_mod.SpeedResult:
    timing = speed_mod.PhaseTiming.from_windows([0.1, 0.1], 1, 200, 0.5, 0.4)  # 2,000 img/s
    values = dict(
        model="mnist_gap", dataset="mnist", params=7_852, batch_size=128, device="cpu", precision="fp32",
        channels_last=False, compile="none", threads=1, warmup_steps=1, windows=2, train=timing, eval=timing,
        flops_per_image_forward=1.0, flops_per_image_train=3.0, train_gflops_per_s=1.0, eval_gflops_per_s=1.0,
        peak_memory_bytes=1, peak_memory_kind="rss_peak", machine={"cpu": cpu_name(), "cpu_count": 2},
        torch_version="x", created="now",
    )
    values.update(changes)
    return speed_mod.SpeedResult(**values)


# --- errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--model", "nope"], ["unknown model 'nope'", "mnist_gap", "cifar_c13"]),
        (["--model", "zzz*"], ["no model matches 'zzz*'", "mnist_gap"]),
        (["--model", "mnist_gap", "--batch-size", "0"], ["--batch-size"]),
        (["--model", "mnist_gap", "--batch-size", "many"], ["--batch-size"]),
        (["--model", "mnist_gap", "--device", "toaster"], ["--device 'toaster'"]),
        (["--model", "mnist_gap", "--device", "cuda:7"], ["--device cuda:7"]),
        (["--model", "mnist_gap", "--compile", "fast"], ["--compile", "reduce-overhead"]),
        (["--model", "mnist_gap", "--precision", "fp8"], ["--precision"]),
        (["--model", "mnist_gap", "--steps", "-1"], ["--steps"]),
        (["--model", "mnist_gap", "--windows", "0"], ["--windows"]),
        (["--model", "mnist_gap", "--warmup", "0"], ["--warmup"]),
        (["--model", "mnist_gap", "--threads", "0"], ["--threads"]),
        (["--model", "mnist_gap", "--format", "csv"], ["--format"]),
        ([], ["--model"]),
    ],
)
def test_error_paths(args, fragments):
    assert_one_line_error(bench("speed", *args), *fragments)


def test_a_failure_while_measuring_is_one_line(tmp_path, monkeypatch):
    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(speed_mod, "measure_speed", fail)
    result = bench("speed", "--model", "mnist_gap", "--device", "cpu", "--results-dir", str(tmp_path))
    assert_one_line_error(result, "mnist_gap", "RuntimeError: CUDA out of memory")


def test_speed_help_does_not_import_torch():
    code = (
        "import sys\nfrom cnnbench.cli import main\n"
        "try:\n    main(['speed', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--compile" in result.stdout and "--results-dir" in result.stdout


@pytest.mark.slow
def test_compile_default_on_cpu(tmp_path):
    """torch.compile on CPU builds C++ kernels: tens of seconds."""
    (r,) = speed_json(tmp_path, "--model", "mnist_gap", "--device", "cpu", "--compile", "default",
                      "--batch-size", "32")
    assert r["compile"] == "default" and r["train"]["images_per_s"] > 0
    assert r["train"]["first_step_s"] > 10 * r["train"]["step_ms"] / 1000  # the first step compiled
    assert r["flops_per_image_forward"] == pytest.approx(mnist_gap_forward_flops(), rel=0.02)
