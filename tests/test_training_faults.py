"""Faults on the training side end in one line naming what is wrong, never a traceback, a hang or a lost run:
plugin models that break their contract, hooks that answer out of contract, a batch too large for memory,
failures that must not leave locks, and checkpoints that are damaged, renamed, foreign or not files at all.

This module is also the plugin the runs use (``--plugin test_training_faults``, with ``test_fused``'s tiny
synthetic dataset), so no test reads dataset files and each takes about a second.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from test_fused import RECIPE, tiny_net
from test_reliability import fill_disk_at, one_line_error

from cnnbench import ModelSpec, hookimpl
from cnnbench.cli import main
from cnnbench.runrecord import read_record

PLUGIN = "test_training_faults"
MODE: dict[str, Any] = {"batches": None, "vote": None, "forward": None}  # what the hooks and models do now
BUILT = {"calls": 0}
SHARED: dict[str, Any] = {}


# --- the plugin ------------------------------------------------------------------------------------------------------


def not_a_module(norm, dropout: float = 0.0):
    return "a network"


def five_classes(norm, dropout: float = 0.0):
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(144, 5), nn.LogSoftmax(1))


def two_outputs(norm, dropout: float = 0.0):
    from torch import nn

    class TwoOutputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = tiny_net(norm, dropout)

        def forward(self, x):
            out = self.net(x)
            return out, out

    return TwoOutputs()


def no_parameters(norm, dropout: float = 0.0):
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.AdaptiveAvgPool1d(10), nn.LogSoftmax(1))


def shape_shifter(norm, dropout: float = 0.0):
    """A wider first layer on every call: fused seeds cannot be stacked."""
    from torch import nn

    BUILT["calls"] += 1
    width = 4 + BUILT["calls"]
    return nn.Sequential(nn.Conv2d(1, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10),
                         nn.LogSoftmax(1))


def one_object(norm, dropout: float = 0.0):
    """The same module for every call (a cache): fused seeds would share one network."""
    if "net" not in SHARED:
        SHARED["net"] = tiny_net(norm, dropout)
    return SHARED["net"]


def moody(norm, dropout: float = 0.0):
    """A network that fails in training the ways ``MODE["forward"]`` says: out of CPU memory (a real allocation
    that fails at once), out of CUDA memory, or a plain exception of its own."""
    net = tiny_net(norm, dropout)
    plain = net.forward

    def forward(x):
        if net.training and MODE["forward"] == "cpu-memory":
            torch.empty(2**62, dtype=torch.uint8)
        if net.training and MODE["forward"] == "cuda-memory":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")
        if net.training and MODE["forward"] == "raise":
            raise ValueError("moody network refuses to train")
        return plain(x)

    net.forward = forward
    return net


@hookimpl
def cnnbench_models() -> list[ModelSpec]:
    factories = {"not_a_module": not_a_module, "five_classes": five_classes, "two_outputs": two_outputs,
                 "no_parameters": no_parameters, "shape_shifter": shape_shifter, "one_object": one_object,
                 "moody": moody}
    return [ModelSpec(name, "fused_tiny", factory, name, "tests", 1_106, RECIPE) for name, factory in factories.items()]


@hookimpl(tryfirst=True)
def cnnbench_epoch_batches(run, epoch, epochs, batches, progress):
    mode = MODE["batches"]
    if mode == "interrupt-in-2" and epoch == 2:
        def interrupted() -> Iterator:
            yield next(iter(batches))
            raise KeyboardInterrupt

        return interrupted()
    if mode == "string":
        return "batches"
    if mode == "empty":
        return iter(())
    if mode == "lone-tensors":
        return (x for x, _ in batches)
    if mode == "list":
        return list(batches)
    return None


@hookimpl
def cnnbench_epoch_end(run, epoch):
    return MODE["vote"]


# --- helpers ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def mode(monkeypatch) -> dict[str, Any]:
    """``MODE`` for one test; put back afterwards."""
    for key in MODE:
        monkeypatch.setitem(MODE, key, None)
    return MODE


def bench(*args: str):
    return CliRunner().invoke(main, ["--plugin", "test_fused", "--plugin", PLUGIN, *args])


def run(results: Path, model: str = "fused_tiny_net", *extra: str):
    return bench("run", "--model", model, "--data-dir", str(results), "--results-dir", str(results), "--no-progress",
                 "--threads", "1", *extra)


def left_behind(results: Path) -> list[str]:
    """Locks and temporary files: a failure leaves none."""
    return sorted(p.name for p in results.iterdir() if p.suffix in (".lock", ".tmp"))


@contextlib.contextmanager
def within(seconds: int) -> Iterator[None]:
    """A read that blocks (a FIFO) raises instead of hanging the test."""

    def hung(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


FUSED_CPU = ["--seeds", "2", "--fused", "--device", "cpu"]  # on a CPU, fusing must be asked for by name


# --- plugin models, checked before the first epoch --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "extra", "fragment"),
    [
        ("not_a_module", [], "its factory returned str, not a torch.nn.Module"),
        ("five_classes", [], "its output for 2 images has shape (2, 5); dataset 'fused_tiny' has 10 classes"),
        ("two_outputs", [], "its output is tuple, not a float tensor of log-probabilities"),
        ("no_parameters", [], "has no trainable parameters"),
        ("shape_shifter", [*FUSED_CPU], "built a different network on call 2 than on call 1"),
        ("one_object", [*FUSED_CPU], "returned one module object for several seeds"),
    ],
)
def test_a_model_plugin_breaking_its_contract_is_one_line_before_any_epoch(tmp_path, mode, model, extra, fragment):
    BUILT["calls"] = 0
    SHARED.clear()
    result = run(tmp_path, model, *extra)
    one_line_error(result, f"model {model!r} of plugin {PLUGIN!r}", fragment)
    assert "epoch" not in result.stdout  # refused before the first epoch
    assert not list(tmp_path.iterdir())  # no checkpoint, lock or record


# --- hooks that answer out of contract ------------------------------------------------------------------------------


@pytest.mark.parametrize(("vote", "shown"), [("stop", "str 'stop'"), (1, "int 1")])
def test_a_stop_vote_that_is_not_a_bool_is_one_line_naming_the_plugin(tmp_path, mode, vote, shown):
    mode["vote"] = vote
    result = run(tmp_path)
    one_line_error(result, f"plugin {PLUGIN!r} returned {shown} from cnnbench_epoch_end", "True to stop the run")
    assert not list(tmp_path.glob("*.json")) and len(list(tmp_path.glob("*.ckpt"))) == 1  # epoch 1 is kept
    assert not left_behind(tmp_path)


@pytest.mark.parametrize(
    ("batches", "fragment"),
    [
        ("string", f"plugin {PLUGIN!r}: cnnbench_epoch_batches returned str, not an iterable of batches"),
        ("empty", "epoch 1 had no training batches; they come from loader 'memory'"),
        ("lone-tensors", "training batch 1 of epoch 1 is a Tensor, not an (images, labels) pair of tensors"),
    ],
)
def test_epoch_batches_that_are_not_batches_are_one_line(tmp_path, mode, batches, fragment):
    mode["batches"] = batches
    one_line_error(run(tmp_path), fragment)
    assert not left_behind(tmp_path)


def test_epoch_batches_answered_as_a_list_train_as_usual(tmp_path, mode):
    """A list is an iterable of batches like any other (the hook's first answer, not a list of answers)."""
    mode["batches"] = "list"
    result = run(tmp_path)
    assert result.exit_code == 0, result.output
    [record] = (read_record(p) for p in tmp_path.glob("*.json"))
    assert record.epochs_run == 2 and not left_behind(tmp_path)


# --- memory and failures: the checkpoint stays, the lock goes -------------------------------------------------------


@pytest.mark.parametrize("memory", ["cpu-memory", "cuda-memory"])
def test_a_batch_too_large_for_memory_is_one_line_and_keeps_the_checkpoint(tmp_path, mode, memory):
    mode["forward"] = memory
    result = run(tmp_path, "moody", "--batch-size", "384")
    one_line_error(result, "a batch of 384 images did not fit in cpu memory in epoch 1: lower --batch-size",
                   "checkpoint from before epoch 1 is kept")
    assert len(list(tmp_path.glob("*.ckpt"))) == 1 and not left_behind(tmp_path)


def test_a_plugin_error_leaves_no_lock(tmp_path, mode):
    mode["forward"] = "raise"
    result = run(tmp_path, "moody")
    one_line_error(result, f"plugin {PLUGIN!r} failed in seed 0", "moody network refuses to train")
    assert len(list(tmp_path.glob("*.ckpt"))) == 1 and not left_behind(tmp_path)


@pytest.mark.parametrize("fused", [False, True])
def test_a_full_disk_at_the_checkpoint_leaves_no_lock_and_no_temporary_file(tmp_path, mode, monkeypatch, fused):
    fill_disk_at(monkeypatch, ".ckpt.")
    result = run(tmp_path, "fused_tiny_net", *(FUSED_CPU if fused else []))
    one_line_error(result, "No space left on device", ".ckpt")
    assert not list(tmp_path.iterdir())


def test_a_plugin_failing_during_resume_is_named(interrupted, tmp_path, mode):
    results, run_id = copy_run(interrupted, tmp_path)
    mode["forward"] = "raise"
    resumed = bench("resume", run_id, "--results-dir", str(results), "--no-progress")
    one_line_error(resumed, f"plugin {PLUGIN!r} failed in seed 0", "moody network refuses to train")
    assert (results / f"{run_id}.ckpt").is_file() and not left_behind(results)


# --- checkpoints ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A run of ``moody`` stopped by Ctrl-C in epoch 2: its checkpoint after epoch 1."""
    results = tmp_path_factory.mktemp("interrupted")
    MODE["batches"] = "interrupt-in-2"
    try:
        result = run(results, "moody")
    finally:
        MODE["batches"] = None
    assert result.exit_code == 130, result.output
    return results


def copy_run(source: Path, tmp_path: Path) -> tuple[Path, str]:
    results = Path(shutil.copytree(source, tmp_path / "r"))
    [ckpt] = results.glob("*.ckpt")
    return results, ckpt.name.removesuffix(".ckpt")


def resave(path: Path, change) -> None:
    state = torch.load(path, weights_only=True)
    change(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())


def legacy_protocol_5(path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(torch.load(path, weights_only=True), buffer, pickle_protocol=5, _use_new_zipfile_serialization=False)
    path.write_bytes(buffer.getvalue())


def a_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def a_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def reshaped(state: dict) -> None:
    name = next(k for k, v in state["model"].items() if v.ndim == 4)
    state["model"][name] = torch.zeros(1, 1, 1, 1)


DAMAGES = {
    "no-optimizer": (lambda p: resave(p, lambda s: s.pop("optimizer")), "it has no 'optimizer'"),
    "no-run": (lambda p: resave(p, lambda s: s.pop("run")), "it has no 'run'"),
    "epochs-text": (lambda p: resave(p, lambda s: s.update(epochs="many")), "'epochs' is str"),
    "bad-epoch": (lambda p: resave(p, lambda s: s["epochs"][0].update(test_acc="high")),
                  "epoch 1: test_acc 'high' is not a number"),
    "status": (lambda p: resave(p, lambda s: s.update(status="paused")), "status 'paused' is none of"),
    "format": (lambda p: resave(p, lambda s: s.update(format=99)), "not a cnnbench checkpoint of format 1"),
    "fused-elsewhere": (lambda p: resave(p, lambda s: s.update(fused={"index": 0, "run_ids": ["a", "b"],
                                                                        "seeds": [0, 1]})),
                        "'fused' names another run in this seed's place"),
    "code": (lambda p: torch.save({"format": 1, "run": Path("/etc/passwd")}, p),
             "it holds Python objects other than tensors and plain data, which cnnbench never loads"),
    "protocol-5": (legacy_protocol_5, "not a file torch.save wrote"),
    "empty": (lambda p: p.write_bytes(b""), "the file is empty"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:500]),
                  "not a file torch.save wrote (in its default format), or cut short"),
    "folder": (a_folder, "not a regular file"),
    "fifo": (a_fifo, "not a regular file"),
    "run-unknown-field": (lambda p: resave(p, lambda s: s["run"].update(colour="blue")),
                          "its run info has unknown 'colour'"),
    "plugin-modules": (lambda p: resave(p, lambda s: s.update(plugin_modules=[7])),
                       "'plugin_modules' is not a list of module names"),
    "stopped-without-epochs": (lambda p: resave(p, lambda s: s.update(status="stopped", epochs=[])),
                               "it says the run stopped, but holds no epoch"),
    "confusion-shape": (lambda p: resave(p, lambda s: s.update(confusion=torch.zeros(3))),
                        "its confusion matrix has shape (3,)"),
    "options": (lambda p: resave(p, lambda s: s["overrides"].update(epochs="many")), "is 'many'"),
    "reshaped": (lambda p: resave(p, reshaped), "does not fit 'moody' as it is now: 'features.0.0.weight' has shape"),
}
READABLE = ("options", "reshaped")  # loaded and listed; refused when the run is rebuilt


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_checkpoint_is_one_line_and_never_blocks(interrupted, tmp_path, damage):
    results, run_id = copy_run(interrupted, tmp_path)
    spoil, fragment = DAMAGES[damage]
    spoil(results / f"{run_id}.ckpt")
    with within(30):
        listing = bench("runs", "--results-dir", str(results))
        resumed = bench("resume", run_id, "--results-dir", str(results), "--no-progress")
    assert listing.exit_code == 0, listing.output
    if damage not in READABLE:
        assert f"(unreadable checkpoint {run_id}.ckpt" in listing.output
    line = one_line_error(resumed, fragment)
    assert "weights_only" not in line and "Traceback" not in resumed.output
    assert not list(results.glob("*.json")) and not left_behind(results)


def test_a_checkpoint_renamed_to_another_run_is_refused(interrupted, tmp_path):
    results, run_id = copy_run(interrupted, tmp_path)
    other = run_id.replace("-s0-", "-s7-")
    (results / f"{run_id}.ckpt").rename(results / f"{other}.ckpt")
    one_line_error(bench("resume", other, "--results-dir", str(results)),
                   f"it holds run {run_id!r}, not {other!r}", f"name it {run_id}.ckpt")
    assert not list(results.glob("*.json")) and (results / f"{other}.ckpt").is_file()


def test_an_oversized_checkpoint_is_refused_unread(interrupted, tmp_path, monkeypatch):
    from cnnbench.training import checkpoint

    results, run_id = copy_run(interrupted, tmp_path)
    monkeypatch.setattr(checkpoint, "MAX_CHECKPOINT_BYTES", 1000)
    one_line_error(bench("resume", run_id, "--results-dir", str(results)), "over 1,000 bytes")


def test_a_fifo_in_place_of_a_lock_does_not_block(interrupted, tmp_path):
    results, run_id = copy_run(interrupted, tmp_path)
    os.mkfifo(results / f"{run_id}.lock")
    with within(60):
        listing = bench("runs", "--incomplete", "--results-dir", str(results))
        resumed = bench("resume", run_id, "--results-dir", str(results), "--no-progress")
    assert f"bench resume {run_id}" in listing.output
    assert resumed.exit_code == 0, resumed.output
    assert read_record(results / f"{run_id}.json").resumed_at == [1] and not left_behind(results)


def test_a_resumed_run_equals_the_uninterrupted_one(interrupted, tmp_path, mode):
    """The checkpoint these tests damage is a good one: resumed untouched, it continues the run exactly."""
    results, run_id = copy_run(interrupted, tmp_path)
    resumed = bench("resume", run_id, "--results-dir", str(results), "--no-progress")
    assert resumed.exit_code == 0, resumed.output
    whole = run(tmp_path / "whole", "moody")
    assert whole.exit_code == 0, whole.output
    [uninterrupted] = (read_record(p) for p in (tmp_path / "whole").glob("*.json"))
    record = read_record(results / f"{run_id}.json")
    assert [e.test_loss for e in record.epochs] == [e.test_loss for e in uninterrupted.epochs]


def test_weights_in_our_words(tmp_path):
    """The weights reader refuses a FIFO without opening it for a blocking read, and refuses pickled code
    without torch's advice to load the file with code execution enabled."""
    from cnnbench.errors import RecordError
    from cnnbench.reports.runs import load_weights

    model = tiny_net(lambda c: torch.nn.BatchNorm2d(c))
    os.mkfifo(tmp_path / "fifo.pt")
    with within(10), pytest.raises(RecordError, match="not a loadable weights file .not a regular file"):
        load_weights(tmp_path / "fifo.pt", "tiny", model)
    (tmp_path / "code.pt").write_bytes(pickle.dumps({"x": Path("/etc")}))
    with pytest.raises(RecordError) as refused:
        load_weights(tmp_path / "code.pt", "tiny", model)
    assert "weights_only" not in str(refused.value) and len(str(refused.value)) < 200
