"""``bench run --seeds K --fused``: K seeds trained as one batched computation equal the K seeds run
alone, step by step, and leave ordinary records and ordinary checkpoints.

This module is also the plugin the runs use (``--plugin test_fused``): a tiny synthetic dataset and
tiny networks, so the test needs no dataset files and takes seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cnnbench import DatasetSpec, ModelSpec, Recipe, hookimpl
from cnnbench.cli import main
from cnnbench.runrecord import read_record

PLUGIN = "test_fused"
SEEDS = 3
# A gentle recipe: at mnist_gap's lr 0.1 the first steps amplify float rounding ~50x per step, so fused and
# lone runs drift apart exactly as far as one lone run on 1 and on 2 threads do; here they stay within 1e-5.
RECIPE = Recipe(epochs=2, batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9, scheduler="step", step_size=1,
                gamma=0.5, augmentation="rotate10", dropout=0.0)
INTERRUPT_IN_EPOCH: int | None = None  # the batch iterator raises KeyboardInterrupt (Ctrl-C) in this epoch


# --- the plugin: a synthetic dataset whose labels depend on the images, and tiny networks --------------------------


def load_tiny(data_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    n = 384 if split == "train" else 96
    generator = torch.Generator().manual_seed(0 if split == "train" else 1)
    labels = torch.randint(0, 10, (n,), generator=generator)
    images = torch.randint(0, 96, (n, 1, 12, 12), generator=generator, dtype=torch.uint8)
    images[torch.arange(n), 0, labels, labels] = 255  # a bright pixel on the diagonal says the class
    return images, labels


def tiny_net(norm, dropout: float = 0.0, poisoned: bool = False):
    from torch import nn

    from cnnbench.blocks import SeedNet, conv_unit

    class TinyNet(SeedNet):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                conv_unit(1, 8, 3, norm, dropout, order="cbdr"), conv_unit(8, 12, 3, norm, order="cbr"),
                nn.AdaptiveAvgPool2d(1), nn.Conv2d(12, 10, 1),
            )
            # NaN in one seed's copy only (poisoned_net): that seed diverges, the others must not notice
            self.register_buffer("poison", torch.tensor(float("nan") if poisoned else 0.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) + self.poison

    return TinyNet()


BUILT = {"poisoned": 0}


def poisoned_net(norm, dropout: float = 0.0):
    """The net of seed 1 is poisoned (each seed builds its net right after seeding torch with its seed;
    other builds, such as the memory check's probe, do not shift which seed it is): seed 1 diverges."""
    BUILT["poisoned"] += 1
    return tiny_net(norm, dropout, poisoned=torch.initial_seed() == 1)


def raising_net(norm, dropout: float = 0.0):
    net = tiny_net(norm, dropout)
    net.forward = lambda x: (_ for _ in ()).throw(ValueError("forward cannot cope"))
    return net


@hookimpl
def cnnbench_datasets() -> list[DatasetSpec]:
    return [DatasetSpec("fused_tiny", load_tiny, "synthetic 12x12, class = bright diagonal pixel", (1, 12, 12), 10,
                        (0.2,), (0.2,), train_size=384, test_size=96)]


@hookimpl
def cnnbench_models() -> list[ModelSpec]:
    return [
        ModelSpec("fused_tiny_net", "fused_tiny", tiny_net, "tiny", "tests", 1_106, RECIPE),
        ModelSpec("fused_poisoned", "fused_tiny", poisoned_net, "one seed diverges", "tests", 1_106, RECIPE),
        ModelSpec("fused_raising", "fused_tiny", raising_net, "raises in forward", "tests", 1_106, RECIPE),
    ]


@hookimpl(tryfirst=True)
def cnnbench_epoch_batches(run, epoch, epochs, batches, progress):
    if INTERRUPT_IN_EPOCH != epoch:
        return None

    def interrupted() -> Iterator:
        yield next(iter(batches))
        raise KeyboardInterrupt

    return interrupted()


# --- helpers --------------------------------------------------------------------------------------------------------


def bench(*args: str):
    return CliRunner().invoke(main, ["--plugin", PLUGIN, *args])


def run_args(results: Path, *extra: str, model: str = "fused_tiny_net") -> list[str]:
    """One torch thread: the tensors are tiny, and on a busy shared CPU two threads spin (10x slower)."""
    return ["run", "--model", model, "--seeds", str(SEEDS), "--data-dir", str(results), "--results-dir",
            str(results), "--no-progress", "--threads", "1", "--device", "cpu", *extra]


def train(results: Path, *extra: str, model: str = "fused_tiny_net", exit_code: int = 0) -> tuple[list, list[float]]:
    """Run ``bench run``; the records by seed and every ``batch_loss`` value in call order."""
    from cnnbench.training import train as T

    calls: list[float] = []
    plain = T.batch_loss

    def recording(out, y, plan):
        loss = plain(out, y, plan)
        calls.append(loss.item())
        return loss

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(T, "batch_loss", recording)
        result = bench(*run_args(results, *extra, model=model))
    assert result.exit_code == exit_code, result.output
    records = sorted((read_record(p) for p in results.glob("*.json")), key=lambda r: r.seed)
    return records, calls


def weights(results: Path, record) -> dict[str, torch.Tensor]:
    return torch.load(results / record.weights, weights_only=True)


def close(a: list[float], b: list[float], tol: float = 1e-5) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol * max(1.0, abs(y)) for x, y in zip(a, b, strict=True))


EPOCH_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "val_loss", "val_acc")


def epoch_numbers(record) -> list[float]:
    return [getattr(e, k) for e in record.epochs for k in EPOCH_KEYS if getattr(e, k) is not None]


@pytest.fixture(scope="module")
def lone(tmp_path_factory) -> tuple[Path, list, list[list[float]]]:
    """The three seeds run one after another, as ``bench run --seeds 3`` does without ``--fused``."""
    results = tmp_path_factory.mktemp("lone")
    records, calls = train(results)
    steps = len(calls) // SEEDS
    return results, records, [calls[k * steps : (k + 1) * steps] for k in range(SEEDS)]


@pytest.fixture(scope="module")
def fused(tmp_path_factory) -> tuple[Path, list, list[list[float]]]:
    results = tmp_path_factory.mktemp("fused")
    records, calls = train(results, "--fused")
    return results, records, [calls[k::SEEDS] for k in range(SEEDS)]  # each step calls seeds 0, 1, 2 in turn


# --- the tests ------------------------------------------------------------------------------------------------------


def test_fused_seeds_equal_lone_seeds_step_by_step(lone, fused):
    """Batch norm, rotation augmentation, SGD momentum and StepLR; no dropout."""
    (lone_dir, lone_records, lone_steps), (fused_dir, fused_records, fused_steps) = lone, fused
    assert len(lone_steps[0]) == 2 * 6  # 2 epochs of 384 / 64 batches
    for k in range(SEEDS):
        assert close(fused_steps[k], lone_steps[k]), (k, fused_steps[k], lone_steps[k])
        assert close(epoch_numbers(fused_records[k]), epoch_numbers(lone_records[k]))
        assert fused_records[k].confusion == lone_records[k].confusion
        alone, together = weights(lone_dir, lone_records[k]), weights(fused_dir, fused_records[k])
        assert alone.keys() == together.keys()
        for name in alone:
            assert torch.allclose(together[name].double(), alone[name].double(), rtol=1e-4, atol=1e-5), name
    assert len({tuple(s) for s in fused_steps}) == SEEDS  # the seeds really differ from each other


@pytest.mark.parametrize(
    "options",
    [
        ["--optimizer", "adam", "--lr", "0.01", "--normalizer", "group"],
        ["--scheduler", "onecycle", "--warmup-epochs", "0.5", "--nesterov", "--label-smoothing", "0.1",
         "--tta", "flip", "--val-split", "64", "--augment", "none"],
    ],
    ids=["adam-groupnorm", "onecycle-nesterov-smoothing-tta-val"],
)
def test_fused_equals_lone_for_other_recipes(tmp_path, options):
    lone_records, lone_calls = train(tmp_path / "lone", *options)
    fused_records, fused_calls = train(tmp_path / "fused", *options, "--fused")
    steps = len(lone_calls) // SEEDS
    for k in range(SEEDS):
        assert close(fused_calls[k::SEEDS], lone_calls[k * steps : (k + 1) * steps])
        assert close(epoch_numbers(fused_records[k]), epoch_numbers(lone_records[k]))


def test_fused_records_are_ordinary_records(fused):
    from cnnbench.registry import get_registry
    from cnnbench.reports import leaderboard as lb

    results, records, _ = fused
    assert [r.seed for r in records] == [0, 1, 2] and len({r.run_id for r in records}) == SEEDS
    [group] = lb.group_records(lb.load_records(results))
    assert group.seeds() == [0, 1, 2]
    for record in records:
        assert record.launch["fused_seeds"] == SEEDS and record.status == "complete" and record.epochs_run == 2
        assert record.total_seconds == records[0].total_seconds  # one wall clock for all
        assert all(e.images_per_s > 0 for e in record.epochs)  # each seed's own images per second
        model = get_registry([PLUGIN]).create_model("fused_tiny_net")
        model.load_state_dict(weights(results, record))  # an ordinary state_dict of the plain model
    assert not list(results.glob("*.ckpt")) and not list(results.glob("*.lock"))
    board = bench("leaderboard", "--results-dir", str(results), "--format", "json")
    assert board.exit_code == 0, board.output


def test_dropout_masks_differ_between_seeds():
    from cnnbench.registry import get_registry
    from cnnbench.training.fused import Stacked

    model = get_registry([PLUGIN]).create_model("fused_tiny_net", dropout=0.5)
    stack, x = Stacked([model, model, model]), torch.randn(4, 1, 12, 12)  # three identical copies
    stack.train(False)
    out = stack(x, shared=True)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    stack.train()  # now only the dropout masks can tell the copies apart
    out = stack(x, shared=True)
    assert not torch.equal(out[0], out[1]) and not torch.equal(out[1], out[2]) and not torch.equal(out[0], out[2])


def test_one_diverged_seed_does_not_touch_the_others(tmp_path, lone):
    _, lone_records, _ = lone
    BUILT["poisoned"] = 0
    records, _ = train(tmp_path, "--fused", model="fused_poisoned", exit_code=1)  # bench run reports divergence
    assert [r.status for r in records] == ["complete", "diverged", "complete"]
    assert records[1].epochs_run == 1 and records[1].weights is None
    for k in (0, 2):
        assert close(epoch_numbers(records[k]), epoch_numbers(lone_records[k]))


def test_an_interrupted_fused_run_resumes_fused_and_exactly(tmp_path, fused):
    """Ctrl-C in epoch 2; one ``bench resume`` continues all three seeds, fused, to the uninterrupted numbers."""
    global INTERRUPT_IN_EPOCH
    INTERRUPT_IN_EPOCH = 2
    try:
        result = bench(*run_args(tmp_path, "--fused"))
    finally:
        INTERRUPT_IN_EPOCH = None
    assert result.exit_code == 130, result.output
    ckpts = sorted(tmp_path.glob("*.ckpt"), key=lambda p: p.name.split("-s")[1])
    assert len(ckpts) == SEEDS and not list(tmp_path.glob("*.json")) and not list(tmp_path.glob("*.lock"))
    run_ids = [ckpt.name.removesuffix(".ckpt") for ckpt in ckpts]
    [error] = result.stderr.strip().splitlines()
    assert "SIGINT" in error and "after epoch 1" in error and all(run_id in error for run_id in run_ids)
    assert f"bench resume {run_ids[0]} --results-dir {tmp_path}" in error
    resumed = CliRunner().invoke(main, ["resume", run_ids[1], "--results-dir", str(tmp_path), "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    records = sorted((read_record(p) for p in tmp_path.glob("*.json")), key=lambda r: r.seed)
    _, whole, _ = fused
    for record, uninterrupted in zip(records, whole, strict=True):
        assert record.resumed_at == [1] and record.epochs_run == 2 and record.launch["fused_seeds"] == SEEDS
        assert epoch_numbers(record) == epoch_numbers(uninterrupted)
    assert not list(tmp_path.glob("*.ckpt")) and not list(tmp_path.glob("*.lock"))
    again = CliRunner().invoke(main, ["resume", run_ids[0], "--results-dir", str(tmp_path)])
    assert again.exit_code == 1 and "is complete; nothing to resume" in again.output


def test_plain_and_fused_checkpoints_hold_the_same_fields(tmp_path):
    """One skeleton writes both: the same keys, the wall time before the interruption included."""
    global INTERRUPT_IN_EPOCH
    INTERRUPT_IN_EPOCH = 2
    try:
        for name, seeds in (("plain", ["--seed", "0"]), ("fused", ["--seeds", "2", "--fused"])):
            result = bench("run", "--model", "fused_tiny_net", *seeds, "--data-dir", str(tmp_path), "--results-dir",
                           str(tmp_path / name), "--no-progress", "--threads", "1", "--device", "cpu")
            assert result.exit_code == 130, result.output
    finally:
        INTERRUPT_IN_EPOCH = None
    plain = torch.load(next((tmp_path / "plain").glob("*.ckpt")), weights_only=True)
    fused = torch.load(next((tmp_path / "fused").glob("*.ckpt")), weights_only=True)
    assert plain.keys() == fused.keys()
    assert plain["fused"] is None and fused["fused"]["seeds"] == [0, 1]
    assert plain["wall"] > 0 and fused["wall"] > 0 and len(plain["epochs"]) == len(fused["epochs"]) == 1


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--seeds", "1"], "at least two seeds"),
        (["--loader", "torchvision"], "memory loader only"),
        (["--model", "mnist_gap", "--augment", "rotate10-tv"], "'rotate10-tv' works per sample"),
        (["--channels-last"], "--channels-last"),
        (["--ema", "0.9"], "--ema"),
        (["--precision", "bf16"], "fp32 only"),
    ],
)
def test_what_fused_cannot_do_is_one_line_before_any_data(tmp_path, args, fragment):
    result = bench("run", "--model", "mnist_gap", "--seeds", "2", "--fused", "--data-dir", str(tmp_path / "none"),
                   "--results-dir", str(tmp_path / "r"), "--device", "cpu", *args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: --fused") and fragment in line, line  # not "MNIST files not found"


@pytest.mark.skipif(torch.cuda.is_available(), reason="--device auto picks the GPU here")
def test_fused_on_a_cpu_that_auto_chose_is_refused_and_points_to_the_alternatives(tmp_path):
    result = bench("run", "--model", "mnist_fast", "--seeds", "5", "--fused", "--data-dir", str(tmp_path / "none"),
                   "--results-dir", str(tmp_path / "r"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: --fused is slower than separate runs on a CPU") and "8.4x" in line, line
    assert "bench sweep --jobs 2" in line and "--device cpu fuses anyway" in line
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").iterdir())


def test_a_plugin_failing_in_a_fused_run_is_named(tmp_path):
    result = bench(*run_args(tmp_path, "--fused", model="fused_raising"))
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()[-1:]
    assert f"plugin {PLUGIN!r} failed in fused seeds 0, 1, 2" in line and "forward cannot cope" in line


def test_fused_is_in_the_run_help():
    assert "--fused" in CliRunner().invoke(main, ["run", "--help"]).output


def test_records_say_fused_in_json(fused):
    results, records, _ = fused
    data = json.loads((results / f"{records[0].run_id}.json").read_text())
    assert data["launch"] == {"launcher": None, "jobs_on_device": 1, "fused_seeds": SEEDS}
