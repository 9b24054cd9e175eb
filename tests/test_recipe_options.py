"""Recipe options beyond the seeds (Nesterov, label smoothing, warm-up, EMA, TTA), --val-split,
the fast-path options, the wall clock, and the targets' time budgets."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from support import H100, make_record, rows_for

from cnnbench import hookimpl
from cnnbench.cli import main
from cnnbench.records import Target
from cnnbench.reports import leaderboard as lb
from cnnbench.runrecord import RECIPE_DEFAULTS_V3, RunRecord
from cnnbench.training.ema import WeightEMA
from cnnbench.training.plan import Overrides, make_plan


def bench(*args: str):
    return CliRunner().invoke(main, list(args))


def tiny(data_dir: Path, results: Path, *extra: str, train: int = 512, epochs: int = 1) -> list[str]:
    return ["--epochs", str(epochs), "--limit-train", str(train), "--limit-test", "128", "--data-dir", str(data_dir),
            "--results-dir", str(results), "--no-progress", "--no-weights", *extra]


def only_record(results: Path) -> dict:
    [path] = results.glob("*.json")
    return json.loads(path.read_text())


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--label-smoothing", "1"], "--label-smoothing"),
        (["--ema", "1"], "--ema"),
        (["--ema", "0"], "--ema"),
        (["--tta", "rotate"], "--tta"),
        (["--optimizer", "adam", "--nesterov"], "Nesterov momentum needs the sgd optimizer"),
        (["--scheduler", "step", "--warmup-epochs", "1"], "warmup_epochs is the onecycle schedule's rising phase"),
        (["--scheduler", "onecycle", "--epochs", "2", "--warmup-epochs", "2"], "warmup_epochs is 2.0"),
        (["--val-split", "60000"], "--val-split 60000 leaves no training images"),
        (["--limit-train", "100", "--val-split", "100"], "leaves no training images (the training split has 100)"),
        (["--compile", "turbo"], "--compile"),
    ],
)
def test_bad_recipe_options_are_one_line_errors_before_data_is_read(tmp_path, args, fragment):
    result = bench("run", "--model", "mnist_gap", "--data-dir", str(tmp_path / "none"), "--results-dir",
                   str(tmp_path / "r"), *args)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.output
    assert not (tmp_path / "r").exists()


def test_val_split_holds_out_a_fixed_slice_and_records_it(tmp_path, data_dir):
    for name in ("a", "b"):
        result = bench("run", "--model", "mnist_step2", "--seed", "1" if name == "a" else "2",
                       *tiny(data_dir, tmp_path / name, "--val-split", "100"))
        assert result.exit_code == 0, result.output
    a, b = only_record(tmp_path / "a"), only_record(tmp_path / "b")
    assert a["train_images"] == b["train_images"] == 412 and a["val_images"] == b["val_images"] == 100
    assert 0 <= a["epochs"][0]["val_acc"] <= 1 and a["epochs"][0]["val_loss"] > 0
    assert "val " in result.output  # the console shows it
    from cnnbench.training.train import load_splits

    plan = make_plan(__import__("support").make_registry(), "mnist_step2",
                     Overrides(limit_train=512, val_split=100, data_dir=data_dir, results_dir=tmp_path))
    first, again = load_splits(plan), load_splits(plan)
    assert torch.equal(first["val"][1], again["val"][1])  # the same slice for every run and seed
    held = set(map(tuple, first["val"][0].flatten(1).tolist()))
    assert not any(tuple(x) in held for x in first["train"][0].flatten(1).tolist()[:50])


def test_recipe_options_are_recorded_and_shown_in_the_configuration(tmp_path, data_dir):
    result = bench("run", "--model", "mnist_step2",
                   *tiny(data_dir, tmp_path, "--nesterov", "--label-smoothing", "0.1", "--ema", "0.9",
                         "--scheduler", "onecycle", "--warmup-epochs", "0.5", epochs=2))
    assert result.exit_code == 0, result.output
    record = only_record(tmp_path)
    recipe = record["recipe"]
    assert recipe["nesterov"] is True and recipe["label_smoothing"] == 0.1 and recipe["ema"] == 0.9
    assert recipe["warmup_epochs"] == 0.5 and recipe["tta"] == "none"
    assert record["fast_path"] == {"channels_last": False, "compile": "none", "cudnn_benchmark": False}
    assert record["wall_seconds"] >= record["total_seconds"] > 0
    text = lb.recipe_text(recipe)
    assert "nesterov 0.9" in text and "ls 0.1" in text and "ema 0.9" in text and "warm-up 0.5 ep" in text


def test_label_smoothing_equals_cross_entropy_with_smoothing():
    from cnnbench.training.train import batch_loss

    logits, y = torch.randn(16, 10), torch.randint(0, 10, (16,))
    plan = type("P", (), {"recipe": type("R", (), {"label_smoothing": 0.2})()})()
    expected = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.2)
    assert torch.allclose(batch_loss(torch.log_softmax(logits, 1), y, plan), expected, atol=1e-6)


def test_flip_tta_scores_the_mean_probability_of_an_image_and_its_mirror():
    from cnnbench.training.train import evaluate

    class LeftRight(torch.nn.Module):  # class 0 when the left half is brighter
        def forward(self, x):
            left, right = x[..., :2].mean((1, 2, 3)), x[..., 2:].mean((1, 2, 3))
            return torch.log_softmax(torch.stack([left - right, right - left], 1) * 5, 1)

    model = LeftRight()
    model.weight = torch.nn.Parameter(torch.zeros(1))  # evaluate reads the device from a parameter
    x = torch.rand(8, 1, 4, 4)
    y = torch.zeros(8, dtype=torch.int64)
    plain_loss, _, _ = evaluate(model, [(x, y)], 2, "fp32")
    loss, _, confusion = evaluate(model, [(x, y)], 2, "fp32", tta="flip")
    # the mirror votes exactly against the image: every image ties at p = 0.5, a loss of log 2
    assert loss == pytest.approx(math.log(2), abs=1e-6) and plain_loss != pytest.approx(math.log(2), abs=1e-3)
    assert confusion.sum() == 8


def test_weight_ema_warms_up_and_copies_counters():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = WeightEMA(model, decay=0.99)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model[1].num_batches_tracked += 5
    before = ema.module[0].weight.clone()
    ema.update(model)  # step 0: decay min(0.99, 1/10) = 0.1, so the average moves 90% of the way
    assert torch.allclose(ema.module[0].weight, before + 0.9, atol=1e-6)
    assert int(ema.module[1].num_batches_tracked) == 5
    state = ema.state_dict()
    other = WeightEMA(model, decay=0.99)
    other.load_state_dict(state)
    assert other.steps == 1 and torch.equal(other.module[0].weight, ema.module[0].weight)


def test_ema_run_resumes_exactly(tmp_path, data_dir):
    """A run with an EMA, stopped by a hook after epoch 1 and resumed, equals the uninterrupted run."""
    from support import make_registry

    from cnnbench.training.checkpoint import load_checkpoint
    from cnnbench.training.runner import run_seeds
    from cnnbench.training.train import train

    registry = make_registry()
    plan = make_plan(registry, "mnist_step2", Overrides(epochs=2, limit_train=256, limit_test=128, ema=0.9,
                                                      data_dir=data_dir, results_dir=tmp_path / "whole",
                                                      progress=False, save_weights=False))
    [whole] = run_seeds(plan, [3], registry.hook)

    class Interrupt:
        @staticmethod
        @hookimpl
        def cnnbench_epoch_end(run, epoch):
            raise KeyboardInterrupt

    registry.pm.register(Interrupt, name="interrupt")
    cut = make_plan(registry, "mnist_step2", Overrides(epochs=2, limit_train=256, limit_test=128, ema=0.9,
                                                     data_dir=data_dir, results_dir=tmp_path / "cut",
                                                     progress=False, save_weights=False))
    with pytest.raises(Exception):  # noqa: B017  (RunInterrupted)
        train(cut, 3, registry.hook)
    registry.pm.unregister(name="interrupt")
    [ckpt] = (tmp_path / "cut").glob("*.ckpt")
    state = load_checkpoint(ckpt)
    assert state["ema"]["steps"] == 2  # 256 images / batch 128
    record, _ = train(cut, 3, registry.hook, resume=state)
    assert [e.test_acc for e in record.epochs] == [e.test_acc for e in whole.epochs]
    assert [e.train_loss for e in record.epochs] == [e.train_loss for e in whole.epochs]


def _first_losses(data_dir: Path, tmp_path: Path, **options) -> list[float]:
    from support import make_registry

    from cnnbench.training.train import (
        build_model,
        configure_backends,
        make_optimizer,
        prepare_model,
        seed_everything,
        train_step,
    )

    plan = make_plan(make_registry(), "mnist_gap", Overrides(data_dir=data_dir, results_dir=tmp_path, **options))
    seed_everything(0)
    model = build_model(plan.model, plan.normalizer, 0.0)
    configure_backends(plan)
    net = prepare_model(model, plan)
    optimizer, _ = make_optimizer(model, plan, 10)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(4):
        x = torch.randn(32, 1, 28, 28, generator=generator)
        y = torch.randint(0, 10, (32,), generator=generator)
        losses.append(float(train_step(net, x, y, optimizer, plan)[0].detach()))
    return losses


def test_channels_last_leaves_the_first_losses_where_they_were(tmp_path, data_dir):
    """Another memory layout picks other kernels: the same sums in another order, so the first loss agrees
    to rounding and the next ones (after steps at the recipe's lr 0.1) to a fraction of a percent."""
    plain = _first_losses(data_dir, tmp_path)
    fast = _first_losses(data_dir, tmp_path, channels_last=True)
    assert fast[0] == pytest.approx(plain[0], rel=1e-5) and fast == pytest.approx(plain, rel=1e-2)


@pytest.mark.slow  # torch.compile builds C++ kernels: tens of seconds on 2 cores
def test_compile_leaves_the_first_losses_where_they_were(tmp_path, data_dir):
    plain = _first_losses(data_dir, tmp_path)
    fast = _first_losses(data_dir, tmp_path, compile="default")
    assert fast[0] == pytest.approx(plain[0], rel=1e-5) and fast == pytest.approx(plain, rel=1e-2)


# --- time budgets -----------------------------------------------------------------------

FAST = Target("fast", "mnist", 0.99, 10_000, 6, "test", max_seconds=(("cpu-2", 120.0), ("gpu-h100", 10.0)),
              allow_tta=False)


def fast_record(wall: float | None, threads: int = 2, **extra) -> RunRecord:
    return make_record(accs=[0.991, 0.995], threads=threads, wall_seconds=wall, **extra)


def status(records: list[RunRecord], target: Target = FAST) -> str:
    [row] = rows_for(records, [target])
    return row.status


def test_a_time_budget_is_checked_against_the_records_hardware_class():
    assert status([fast_record(100.0), fast_record(119.9, seed=1)]) == "pass"
    assert status([fast_record(100.0), fast_record(121.0, seed=1)]) == "fail (time)"
    assert status([fast_record(None)]) == "fail (no wall time)"
    assert status([fast_record(50.0, threads=4)]) == "fail (no time budget for cpu-4)"
    gpu = dict(device="cuda:0", machine=H100)
    assert status([fast_record(9.0, **gpu)]) == "pass"
    assert status([fast_record(11.0, **gpu)]) == "fail (time)"
    assert lb.hardware_class(fast_record(1.0, **gpu)) == "gpu-h100"


def test_a_target_may_forbid_test_time_augmentation():
    plain = fast_record(100.0)
    record = dataclasses.replace(plain, recipe={**plain.recipe, "tta": "flip"})
    assert status([record]) == "fail (tta)"
    assert status([record], Target("any", "mnist", 0.99, 10_000, 6, "test")) == "pass"
    assert "tta flip" in lb.recipe_text(record.recipe)


def test_older_records_read_the_new_recipe_fields_as_defaults_and_group_with_new_ones():
    new = make_record(accs=[0.99, 0.994], seed=1)
    old = make_record(accs=[0.99, 0.995]).to_json()  # as schema 1 wrote it: none of the schema-3 fields
    old["recipe"] = {k: v for k, v in old["recipe"].items() if k not in RECIPE_DEFAULTS_V3}
    for key in ("plugins", "status", "resumed_at", "launch", "wall_seconds", "fast_path", "val_images"):
        del old[key]
    old["schema_version"] = 1
    groups = lb.group_records([RunRecord.from_json(old), new])
    assert len(groups) == 1 and len(groups[0].records) == 2
    assert RunRecord.from_json(old).fast_path == {} and RunRecord.from_json(old).wall_seconds is None


def test_fast_path_options_are_part_of_the_configuration():
    plain = make_record(accs=[0.99, 0.995])
    fast = make_record(accs=[0.99, 0.995], seed=1, fast_path={"channels_last": True, "compile": "reduce-overhead"})
    groups = lb.group_records([plain, fast])
    assert len(groups) == 2
    assert lb.precision_text(fast) == "fp32, cl, compile reduce-overhead"
