"""bench speed against the machine's limit: the cached matrix-product peak and the % of peak,
the operator profile and bytes moved (--profile), and every option side by side (--options)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from test_speed import TINY, fake_result

from cnnbench.cli import main
from cnnbench.cli import speed as speed_cli
from cnnbench.training import speed as speed_mod
from cnnbench.training.speed import options as options_mod
from cnnbench.training.speed import peak as peak_mod
from cnnbench.training.speed.profile import bytes_moved, is_arithmetic, profile_operators

CPU = torch.device("cpu")


def bench(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


# --- the peak and its cache ----------------------------------------------------------------------


def test_the_peak_is_measured_once_then_read_from_the_cache(tmp_path):
    first, path, fresh = peak_mod.machine_peak(CPU, 1, folder=tmp_path, size=256)
    assert fresh and path == tmp_path / "peaks.json" and path.is_file()
    assert first.fp32_gflops > 0 and first.copy_gb_per_s > 0 and first.matrix_size == 256
    assert first.key == peak_mod.machine_key(CPU, 1) and "1 threads" in first.key and torch.__version__ in first.key
    again, _, fresh = peak_mod.machine_peak(CPU, 1, folder=tmp_path, size=256)
    assert not fresh and again == first
    other, _, fresh = peak_mod.machine_peak(CPU, 2, folder=tmp_path, size=256)  # another thread count: its own entry
    assert fresh and set(json.loads(path.read_text())) == {first.key, other.key}
    refreshed, _, fresh = peak_mod.machine_peak(CPU, 1, folder=tmp_path, size=256, refresh=True)
    assert fresh and refreshed.measured >= first.measured


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"KEY": {"fp32_gflops": 1}}', ""])
def test_an_unreadable_cache_is_measured_again_and_replaced(tmp_path, content):
    path = tmp_path / "peaks.json"
    path.write_text(content.replace("KEY", peak_mod.machine_key(CPU, 1)))
    peak, _, fresh = peak_mod.machine_peak(CPU, 1, folder=tmp_path, size=128)
    assert fresh and peak.fp32_gflops > 0
    assert json.loads(path.read_text())[peak.key]["fp32_gflops"] == peak.fp32_gflops


def test_an_unwritable_cache_costs_only_a_new_measurement(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    peak, _, fresh = peak_mod.machine_peak(CPU, 1, folder=blocker / "cache", size=128)
    assert fresh and peak.fp32_gflops > 0


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "mine"))
    assert peak_mod.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("BENCH_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert peak_mod.cache_dir() == tmp_path / "xdg" / "cnnbench"


def test_bf16_steps_are_measured_against_the_bf16_peak():
    peak = peak_mod.MachinePeak("k", 100.0, 400.0, 10.0, 2048, "t", 1.0)
    assert (peak.gflops("fp32"), peak.gflops("bf16")) == (100.0, 400.0)
    assert peak_mod.MachinePeak("k", 100.0, None, 10.0, 2048, "t", 1.0).gflops("bf16") == 100.0


def test_the_matrix_product_rate_is_the_flops_over_the_best_window(monkeypatch):
    clock = iter([0.0, 2.0, 10.0, 11.0] + [20.0, 24.0] * 10)  # windows of 2 s, then 1 s, then 4 s ...
    monkeypatch.setattr(peak_mod.time, "perf_counter", lambda: next(clock))
    rate = peak_mod.matmul_gflops(CPU, torch.float32, 64)
    assert rate == pytest.approx(2 * 64**3 * peak_mod.REPEATS / 1.0 / 1e9)


def test_speed_reports_the_fraction_of_the_peak(tmp_path):
    result = bench("speed", *TINY, "--json", "--model", "mnist_fast", "--device", "cpu",
                   "--results-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    (r,) = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    peak = r["peak"]
    assert peak["key"] == peak_mod.machine_key(CPU, 1)
    assert r["peak_fraction"] == pytest.approx(r["train_gflops_per_s"] / peak["fp32_gflops"])
    assert 0 < r["peak_fraction"] < 1
    table = bench("speed", *TINY, "--model", "mnist_fast", "--device", "cpu", "--results-dir", str(tmp_path))
    assert table.exit_code == 0, table.output
    header, _, row = table.output.splitlines()[:3]
    assert "% of peak" in header and "%" in row
    assert "matrix-product peak of cpu|" in table.output and "copy bandwidth" in table.output
    plain = bench("speed", *TINY, "--no-peak", "--json", "--model", "mnist_fast", "--device", "cpu",
                  "--results-dir", str(tmp_path))
    assert json.loads(plain.output.splitlines()[-1])["peak_fraction"] is None


# --- the profile ---------------------------------------------------------------------------------


def test_bytes_moved_counts_inputs_and_outputs_and_no_views():
    a, b = torch.ones(1000), torch.ones(1000)
    assert bytes_moved(lambda: torch.add(a, b)) == 3 * 4000
    assert bytes_moved(lambda: a.view(10, 100).t()) == 0
    assert bytes_moved(lambda: a.view(10, 100).sum(0)) == 4000 + 400


def test_convolutions_and_matrix_products_are_the_arithmetic():
    arithmetic = ["aten::mkldnn_convolution", "aten::convolution_backward", "aten::addmm", "aten::mm",
                  "aten::cudnn_convolution", "aten::linear"]
    other = ["aten::native_batch_norm", "aten::max_pool2d_with_indices", "aten::threshold_backward", "aten::add_"]
    assert all(map(is_arithmetic, arithmetic)) and not any(map(is_arithmetic, other))


def test_the_profile_ranks_operators_by_their_own_time():
    x, w = torch.randn(64, 64), torch.randn(64, 64)
    profile = profile_operators(lambda: (x @ w).relu().sum(), CPU, steps=4, top=3)
    names = [op.name for op in profile.top]
    assert profile.steps == 4 and len(names) <= 3 and "aten::mm" in names
    assert profile.top == sorted(profile.top, key=lambda op: -op.ms_per_step)
    assert 0 < profile.arithmetic_share <= 1 and profile.self_ms_per_step > 0
    assert sum(op.share for op in profile.top) <= 1 + 1e-9
    assert next(op for op in profile.top if op.name == "aten::mm").calls_per_step == 1


def test_speed_profile_names_the_operators_of_a_real_step(tmp_path):
    result = bench("speed", *TINY, "--profile", "--model", "mnist_fast", "--device", "cpu",
                   "--results-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "aten::convolution_backward" in result.output and "aten::max_pool2d_with_indices" in result.output
    assert "convolutions and matrix products" in result.output and "MB/step" in result.output
    as_json = bench("speed", *TINY, "--profile", "--json", "--model", "mnist_fast", "--device", "cpu",
                    "--results-dir", str(tmp_path))
    profile = json.loads(as_json.output.splitlines()[-1])["profile"]
    # at least the input batch, every conv's weights and the 26x26 activations of the first layer
    assert profile["bytes_per_step"] > 128 * 10 * 26 * 26 * 4 and profile["gb_per_s"] > 0
    assert 0 < profile["arithmetic_share"] < 1 and len(profile["top"]) == 8


# --- options side by side -----------------------------------------------------------------------


def fake_measure(rates: dict[tuple[str, bool, str, int, int | None], float]):
    """A measure() that answers img/s by the options it is given (compile, channels_last, precision, batch, threads)."""
    seen = []

    def measure(o: Any) -> speed_mod.SpeedResult:
        seen.append(o)
        rate = rates.get((o.compile, o.channels_last, o.precision, o.batch_size, o.threads), 1000.0)
        timing = speed_mod.PhaseTiming.from_windows([o.batch_size / rate], 1, o.batch_size, 0.5, 0.4)
        return fake_result(train=timing, eval=timing, batch_size=o.batch_size, train_gflops_per_s=rate / 100)

    return measure, seen


def test_every_option_is_timed_and_compared_with_the_default():
    measure, seen = fake_measure({("default", True, "fp32", 128, None): 2000.0,
                                  ("none", False, "fp32", 256, None): 500})
    separate_calls = []

    def separate(o: Any, processes: int) -> list[dict[str, Any]]:
        separate_calls.append((o.threads, processes))
        part = {"train": {"images_per_s": 700.0, "warmup_s": 0.1}, "eval": {"images_per_s": 900.0, "warmup_s": 0.1},
                "train_gflops_per_s": 7.0}
        return [part] * processes

    from cnnbench.training.plan import Overrides

    rows = options_mod.compare_options(Overrides(device="cpu"), "m", 128, measure, separate, "cpu")
    labels = [r.option.label for r in rows]
    assert labels == [o.label for o in options_mod.CPU_OPTIONS]
    assert separate_calls == [(1, 2)] and len(seen) == len(labels) - 1
    by = {r.option.label: r for r in rows}
    assert by["compile default + channels_last"].train_images_per_s == pytest.approx(2000)
    assert by["batch x2"].batch_size == 256 and by["batch x4"].batch_size == 512
    assert by["2 processes x 1 thread"].train_images_per_s == 1400 and by["2 processes x 1 thread"].result is None
    assert by["bf16 autocast"].option.effect == "changes numbers"
    assert by["batch x2"].option.effect == "changes the recipe"
    peak = peak_mod.MachinePeak("k", 100.0, 400.0, 10.0, 2048, "t", 1.0)
    text = options_mod.render_options("m", rows, peak.gflops)
    line = next(x for x in text.splitlines() if x.startswith("compile default + channels_last"))
    assert "2,000" in line and "2.00" in line and "20.0" in line and "20.0%" in line  # 20 GFLOP/s of 100
    bf16 = next(x for x in text.splitlines() if x.startswith("bf16 autocast"))
    assert "2.5%" in bf16  # 10 GFLOP/s of the bf16 peak, 400
    assert "the two default rows differ by +0%" in text
    assert json.loads(json.dumps(rows[-2].to_json()))["processes"] == 2


def test_rounds_go_round_every_option_and_report_the_median_round():
    order, rates = [], iter(range(1000, 1000 + 3 * 11 * 10, 10))  # every call 10 img/s faster than the last

    def measure(o: Any) -> speed_mod.SpeedResult:
        rate = float(next(rates))
        order.append((o.compile, o.channels_last, o.precision, o.batch_size, o.threads))
        timing = speed_mod.PhaseTiming.from_windows([o.batch_size / rate], 1, o.batch_size, 0.5, 0.4)
        return fake_result(train=timing, eval=timing, batch_size=o.batch_size)

    from cnnbench.training.plan import Overrides

    rows = options_mod.compare_options(Overrides(device="cpu"), "m", 128, measure, lambda o, n: [
        {"train": {"images_per_s": 1.0, "warmup_s": 0.0}, "eval": {"images_per_s": 1.0, "warmup_s": 0.0},
         "train_gflops_per_s": 0.0}] * n, "cpu", rounds=3)
    per_round = len(options_mod.CPU_OPTIONS) - 1  # the two-process row does not call measure()
    assert order[:per_round] == order[per_round:2 * per_round]  # round-robin: the same order every round
    first = rows[0]
    assert first.rounds == [1000.0, 1000.0 + 10 * per_round, 1000.0 + 20 * per_round]
    assert first.train_images_per_s == pytest.approx(1000.0 + 10 * per_round)  # the median round
    text = options_mod.render_options("m", rows, None)
    assert "(rounds)" in text.splitlines()[0] and f"1,000-{1000 + 20 * per_round:,}" in text


def test_without_a_compiler_the_compile_options_are_left_out():
    measure, _ = fake_measure({})
    from cnnbench.training.plan import Overrides

    rows = options_mod.compare_options(Overrides(device="cpu"), "m", 64, measure, lambda o, n: [], "cpu",
                                       compiler=False)
    assert not any("compile" in r.option.label for r in rows) and rows


def test_gpu_options_have_cuda_graphs_and_no_thread_rows():
    labels = [o.label for o in options_mod.options_for("cuda")]
    assert "compile reduce-overhead" in labels and not any("thread" in label for label in labels)


def test_two_processes_really_run_side_by_side(tmp_path):
    from cnnbench.training.plan import Overrides

    parts = options_mod.speed_in_processes("mnist_fast", Overrides(device="cpu", threads=1, batch_size=16), 2,
                                           ["--warmup", "1", "--windows", "1", "--steps", "1", "--no-peak"])
    assert len(parts) == 2 and all(p["threads"] == 1 and p["batch_size"] == 16 for p in parts)


def test_a_failing_process_is_one_line(tmp_path, monkeypatch):
    from cnnbench.training.plan import Overrides

    with pytest.raises(RuntimeError, match="a separate bench speed process failed: .*unknown model"):
        options_mod.speed_in_processes("nope", Overrides(device="cpu", threads=1), 1, ["--no-peak"])


def test_speed_options_on_the_command_line(tmp_path, monkeypatch):
    measure, _ = fake_measure({("max-autotune", False, "fp32", 128, None): 3000.0})
    monkeypatch.setattr(speed_mod, "measure_speed", lambda plan, *a, **k: measure(plan.overrides))
    monkeypatch.setattr(speed_cli, "speed_in_processes", lambda *a, **k: [
        {"train": {"images_per_s": 600.0, "warmup_s": 0.0}, "eval": {"images_per_s": 1.0, "warmup_s": 0.0},
         "train_gflops_per_s": 6.0}] * 2)
    result = bench("speed", "--options", "--no-peak", "--model", "mnist_fast", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "compile max-autotune" in result.output and "3.00" in result.output
    assert "2 processes x 1 thread" in result.output and "1,200" in result.output
    as_json = bench("speed", "--options", "--json", "--no-peak", "--model", "mnist_fast_s?", "--device", "cpu")
    (line,) = as_json.output.splitlines()
    assert json.loads(line)["model"] == "mnist_fast_s2" and len(json.loads(line)["options"]) == 11


@pytest.mark.parametrize(("args", "fragment"), [
    (["--rounds", "3"], "--rounds goes with --options"),
    (["--options", "--profile"], "--profile and --options are separate"),
    (["--options", "--rounds", "0"], "--rounds"),
])
def test_option_combinations_that_mean_nothing_are_refused(args, fragment):
    from test_cli import assert_one_line_error

    assert_one_line_error(bench("speed", "--model", "mnist_fast", "--device", "cpu", *args), fragment)


def test_speed_help_names_the_new_options():
    text = bench("speed", "--help").output
    for option in ("--peak / --no-peak", "--refresh-peak", "--profile", "--options"):
        assert option in text
