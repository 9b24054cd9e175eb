"""A fused run killed (a real SIGKILL, from outside) in the middle of an epoch and then resumed continues
exactly as the run that was never interrupted, dropout included: the seeds' dropout masks come from one
shared generator, so only a fused continuation can draw them as the uninterrupted run did.

This module is also a plugin of the killed run (``--plugin test_fused_resume``): it pauses the run in the
middle of the epoch the environment names and says so on stdout, for the test to kill it there. The
dataset and network are ``test_fused``'s (tiny and synthetic: the whole test takes seconds).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from support import BENCH, PLUGIN_FIXTURES, ROOT

from cnnbench import hookimpl
from cnnbench.cli import main
from cnnbench.runrecord import read_record

PAUSE_IN_EPOCH = "CNNBENCH_TEST_PAUSE_IN_EPOCH"
PAUSED = "paused in the middle of the epoch"
SEEDS = 3
EXACT = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr")


@hookimpl(tryfirst=True)
def cnnbench_epoch_batches(run, epoch, epochs, batches, progress):
    if os.environ.get(PAUSE_IN_EPOCH) != str(epoch):
        return None

    def paused() -> Iterator:
        batch = iter(batches)
        yield next(batch)
        yield next(batch)  # two steps of this epoch are taken: the run is in the middle of it
        print(PAUSED, flush=True)
        time.sleep(600)
        yield from batch

    return paused()


def run_args(results: Path) -> list[str]:
    return ["--plugin", "test_fused", "run", "--model", "fused_tiny_net", "--seeds", str(SEEDS), "--fused",
            "--epochs", "3", "--dropout", "0.2", "--data-dir", str(results), "--results-dir", str(results),
            "--no-progress", "--threads", "1", "--device", "cpu"]


def bench(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, list]:
    results = tmp_path_factory.mktemp("whole")
    done = bench(*run_args(results))
    assert done.exit_code == 0, done.output
    return results, sorted((read_record(p) for p in results.glob("*.json")), key=lambda r: r.seed)


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> tuple[Path, list[str]]:
    """The same run, SIGKILLed in the middle of epoch 2; its results folder and run ids by seed."""
    results = tmp_path_factory.mktemp("killed")
    env = {**os.environ, PAUSE_IN_EPOCH: "2", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(PLUGIN_FIXTURES)])}
    proc = subprocess.Popen([str(BENCH), "--plugin", "test_fused_resume", *run_args(results)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=results)
    try:
        for line in proc.stdout:
            if line.startswith(PAUSED):
                break
        else:
            pytest.fail(f"the run ended before it paused: {proc.wait()} {proc.stderr.read()}")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.communicate()
    ckpts = sorted(results.glob("*.ckpt"), key=lambda p: int(p.name.split("-s")[1].split("-")[0]))
    assert len(ckpts) == SEEDS and not list(results.glob("*.json")) and not list(results.glob("*.pt"))
    return results, [p.name.removesuffix(".ckpt") for p in ckpts]


def same_as_uninterrupted(results: Path, run_id: str, whole_dir: Path, whole) -> None:
    record = read_record(results / f"{run_id}.json")
    assert record.resumed_at == [1] and record.epochs_run == 3 and record.launch["fused_seeds"] == SEEDS
    for resumed, uninterrupted in zip(record.epochs, whole.epochs, strict=True):
        assert [getattr(resumed, k) for k in EXACT] == [getattr(uninterrupted, k) for k in EXACT]
    assert record.confusion == whole.confusion
    mine = torch.load(results / record.weights, weights_only=True)
    theirs = torch.load(whole_dir / whole.weights, weights_only=True)
    assert all(torch.equal(mine[name], theirs[name]) for name in theirs)


def test_a_killed_fused_run_resumes_every_epoch_exactly(killed, uninterrupted, tmp_path):
    results, run_ids = killed
    results = Path(shutil.copytree(results, tmp_path / "r"))
    listing = bench("runs", "--incomplete", "--results-dir", str(results)).output
    assert all(run_id in listing for run_id in run_ids) and listing.count("1/3") == SEEDS
    before = [torch.load(results / f"{run_id}.ckpt", weights_only=True)["wall"] for run_id in run_ids]
    resumed = bench("resume", run_ids[1].rsplit("-", 1)[0], "--results-dir", str(results), "--no-progress")
    assert resumed.exit_code == 0, resumed.output
    whole_dir, whole = uninterrupted
    for k, run_id in enumerate(run_ids):  # one resume continues the three seeds together
        same_as_uninterrupted(results, run_id, whole_dir, whole[k])
        assert read_record(results / f"{run_id}.json").wall_seconds >= round(before[k], 2) > 0  # both sessions
    assert not list(results.glob("*.ckpt")) and not list(results.glob("*.lock"))
    assert not list(results.glob(".*.tmp"))


def test_a_seed_without_its_checkpoint_leaves_the_others_exact(killed, uninterrupted, tmp_path):
    """Seed 2's checkpoint is gone (as when a seed finished early): a stand-in takes its place in the stack,
    so seeds 0 and 1 still draw their dropout masks where the uninterrupted run drew them."""
    results, run_ids = killed
    results = Path(shutil.copytree(results, tmp_path / "r"))
    (results / f"{run_ids[2]}.ckpt").unlink()
    resumed = bench("resume", run_ids[0], "--results-dir", str(results), "--no-progress")
    assert resumed.exit_code == 0, resumed.output
    whole_dir, whole = uninterrupted
    assert sorted(p.stem for p in results.glob("*.json")) == sorted(run_ids[:2])
    for k in (0, 1):
        same_as_uninterrupted(results, run_ids[k], whole_dir, whole[k])


def test_the_seeds_of_a_fused_run_differ_and_dropout_is_on(uninterrupted):
    """What makes the exact comparison above worth making: dropout draws, and the seeds are not copies."""
    _, whole = uninterrupted
    assert whole[0].recipe["dropout"] == 0.2
    assert len({tuple(e.train_loss for e in record.epochs) for record in whole}) == SEEDS


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
