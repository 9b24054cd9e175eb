"""Bounded inputs: counts beyond their caps, results folders holding what is not a record, data files
that are FIFOs, devices, endless or bombs, fused seeds past memory, ffcv conversion onto a full disk.

Each case is refused (or skipped) in one line, before anything is built, and never blocks: every read
of a file that could be a FIFO runs under ``within`` (a thread with a deadline).
"""

from __future__ import annotations

import dataclasses
import errno
import gzip
import importlib.util
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from support import SHARED_DATA

from cnnbench.cli import main
from cnnbench.errors import DataError, UsageError
from cnnbench.records import DatasetSpec, Recipe
from cnnbench.runrecord import MAX_RECORD_BYTES, RecordWarning, iter_records, read_record, write_record
from cnnbench.training import memory, plan
from cnnbench.training.plan import Overrides, check_counts, check_recipe, make_plan

RECORD = {
    "schema_version": 3, "run_id": "good", "model": "m", "dataset": "mnist", "params": 10,
    "epochs": [{"epoch": 1, "test_acc": 0.5}], "final_test_acc": 0.5, "best_test_acc": 0.5,
}


def within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()``, failing the test (instead of hanging it) when it has not returned after ``seconds``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def one_line(result) -> str:
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


# --- counts: checked by make_plan, so bench run and bench sweep refuse them alike ----------------------


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(plan, "usable_cores", lambda: 2)


@pytest.mark.parametrize(
    "model, overrides, message",
    [
        ("mnist_gap", Overrides(threads=100_000), "--threads is 100,000; at most 8 (4 per core, 2 here)"),
        ("mnist_gap", Overrides(threads=9), "--threads is 9; at most 8"),
        ("mnist_gap", Overrides(workers=100_000), "--workers is 100,000; at most 8"),
        ("mnist_gap", Overrides(batch_size=100_000), "--batch-size is 100,000; at most 60,000 (the mnist training set "
                                                     "has 60,000 images)"),
        ("cifar_c13", Overrides(batch_size=50_001), "--batch-size is 50,001; at most 50,000 (the cifar10 training"),
        ("mnist_gap", Overrides(epochs=1_000_000), "--epochs is 1,000,000; at most 10,000 (each epoch is kept"),
        ("mnist_gap", Overrides(limit_train=70_000), "--limit-train is 70,000; at most 60,000 (mnist has 60,000 "
                                                     "training images)"),
        ("mnist_gap", Overrides(limit_test=10**20), "--limit-test is 100,000,000,000,000,000,000; at most 10,000"),
        ("mnist_gap", Overrides(threads=0), "--threads is 0; it must be at least 1"),
        ("mnist_gap", Overrides(workers=-1), "--workers is -1; it must be at least 0"),
        ("mnist_gap", Overrides(batch_size=1.5), "--batch-size is 1.5; it must be a whole number"),
        ("mnist_gap", Overrides(epochs="3"), "--epochs is '3'; it must be a whole number"),
        ("mnist_gap", Overrides(val_split=True), "--val-split is True; it must be a whole number"),
    ],
)
def test_counts_beyond_their_caps_are_usage_errors_before_anything_is_built(registry, tmp_path, two_cores, model,
                                                                             overrides, message):
    results = tmp_path / "results"
    o = dataclasses.replace(overrides, results_dir=results, data_dir=tmp_path / "no-data")
    with pytest.raises(UsageError) as err:
        make_plan(registry, model, o)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not results.exists()  # nothing was written, not even the results folder's probe


def test_the_thread_cap_follows_the_cores_here_and_is_fixed_for_another_machine(registry, monkeypatch, tmp_path):
    monkeypatch.setattr(plan, "usable_cores", lambda: 16)
    assert make_plan(registry, "mnist_gap", Overrides(threads=64, results_dir=tmp_path)).threads == 64
    with pytest.raises(UsageError, match="at most 64"):
        make_plan(registry, "mnist_gap", Overrides(threads=65, results_dir=tmp_path))
    remote = make_plan(registry, "mnist_gap", Overrides(threads=1024, results_dir=tmp_path), check_device_here=False)
    assert remote.threads == 1024
    with pytest.raises(UsageError, match="at most 1,024 .for a run on another machine."):
        make_plan(registry, "mnist_gap", Overrides(threads=1025, results_dir=tmp_path), check_device_here=False)


def test_a_plugin_recipe_beyond_the_caps_names_the_recipe_field():
    dataset = DatasetSpec("d", "x:y", "d", (1, 4, 4), 10, (0.5,), (0.5,), train_size=100, test_size=10)
    with pytest.raises(UsageError, match=r"^recipe epochs is 20,000; at most 10,000"):
        check_counts(Overrides(), Recipe(epochs=20_000), dataset)
    with pytest.raises(UsageError, match=r"^recipe batch_size is 101; at most 100 \(the d training set has 100"):
        check_counts(Overrides(), Recipe(epochs=1, batch_size=101), dataset)
    with pytest.raises(UsageError, match=r"^recipe lr is fast; it must be a finite number >= 0$"):
        check_recipe(Recipe(epochs=1, lr="fast"))
    with pytest.raises(UsageError, match=r"^recipe nesterov is 'yes'; it must be true or false$"):
        check_recipe(Recipe(epochs=1, nesterov="yes"))


def test_a_dataset_that_states_no_size_still_has_caps():
    unsized = DatasetSpec("u", "x:y", "u", (1, 4, 4), 10, (0.5,), (0.5,))
    check_counts(Overrides(limit_train=10**6, batch_size=65_536), Recipe(epochs=1, batch_size=65_536), unsized)
    with pytest.raises(UsageError, match="--batch-size is 65,537; at most 65,536"):
        check_counts(Overrides(batch_size=65_537), Recipe(epochs=1, batch_size=65_537), unsized)
    with pytest.raises(UsageError, match="--limit-train is 2,147,483,648; at most 2,147,483,647"):
        check_counts(Overrides(limit_train=2**31), Recipe(epochs=1), unsized)


def test_bench_run_with_a_huge_thread_count_is_one_line_and_writes_nothing(tmp_path, two_cores):
    result = CliRunner().invoke(main, ["run", "--model", "mnist_gap", "--threads", "100000", "--results-dir",
                                       str(tmp_path / "r"), "--data-dir", str(tmp_path / "no-data")])
    assert one_line(result) == "error: --threads is 100,000; at most 8 (4 per core, 2 here)"
    assert not (tmp_path / "r").exists()


def test_bench_convert_caps_its_writer_processes(tmp_path, two_cores):
    result = CliRunner().invoke(main, ["convert", "--dataset", "mnist", "--workers", "100000", "--out", str(tmp_path)])
    assert one_line(result).startswith("error: --workers is 100,000; at most 8")
    assert list(tmp_path.iterdir()) == []


# --- fused seeds past memory ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fused_plan(tmp_path_factory, registry):
    return make_plan(registry, "mnist_gap", Overrides(results_dir=tmp_path_factory.mktemp("r"), fused=True))


def test_fused_seeds_past_memory_are_refused_with_the_largest_count_that_fits(fused_plan):
    estimate = memory.estimate_fused(fused_plan)
    available = estimate.need(40) + estimate.per_seed // 2  # room for 40 seeds, not 41
    memory.check_fused_memory(fused_plan, 40, available=available)
    with pytest.raises(UsageError) as err:
        memory.check_fused_memory(fused_plan, 500, available=available)
    message = str(err.value)
    assert message.startswith("--fused: 500 seeds of mnist_gap need about ") and "per seed at batch 128" in message
    assert message.endswith("at most 40 seeds fit; run the others in another command"), message
    with pytest.raises(UsageError, match="not even 2 seeds fit; run the seeds one after another"):
        memory.check_fused_memory(fused_plan, 2, available=estimate.need(1))


def test_the_estimate_grows_with_the_batch_and_counts_the_optimizer(registry, fused_plan, tmp_path):
    small = memory.estimate_fused(fused_plan)
    bigger = memory.estimate_fused(make_plan(registry, "mnist_gap", Overrides(batch_size=256, results_dir=tmp_path)))
    adam = memory.estimate_fused(make_plan(registry, "mnist_gap", Overrides(optimizer="adam", results_dir=tmp_path)))
    assert 1.8 < bigger.per_seed / small.per_seed < 2.1  # activations dominate a small model's seed
    assert adam.per_seed > small.per_seed  # two moments instead of one momentum
    assert small.fixed >= 3 * 70_000 * 28 * 28  # both whole splits, as they are loaded, whatever --limit-* says


def test_available_memory_is_lowered_by_the_cgroup(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "cgroup_files", lambda: [(tmp_path / "memory.max", tmp_path / "memory.current")])
    (tmp_path / "memory.max").write_text("1000000\n")
    (tmp_path / "memory.current").write_text("400000\n")
    assert memory.cgroup_room() == 600_000
    assert memory.available_memory("cpu") == min(600_000, memory.mem_available())
    (tmp_path / "memory.max").write_text("max\n")
    assert memory.cgroup_room() == memory.NO_LIMIT


# --- results folders: what is not a record is skipped with one warning, never read without bound --------


def not_records(folder: Path) -> dict[str, str]:
    """Files named like records that are not: name -> what the warning says."""
    os.mkfifo(folder / "fifo.json")
    (folder / "zero.json").symlink_to("/dev/zero")
    sparse = folder / "sparse.bin"
    with open(sparse, "wb") as fh:
        fh.truncate(100 * 2**30)  # 100 GiB of zeros that take no disk
    (folder / "endless.json").symlink_to(sparse)
    (folder / "folder.json").mkdir()
    (folder / "dangling.json").symlink_to(folder / "gone")
    (folder / "digits.json").write_text('{"params": ' + "1" * 5000 + "}")
    (folder / "latin1.json").write_bytes(b'{"model": "caf\xe9"}')
    return {
        "fifo.json": "a FIFO, not a regular file",
        "zero.json": "a character device, not a regular file",
        "endless.json": f"larger than {MAX_RECORD_BYTES // 2**20} MiB",
        "folder.json": "a folder, not a regular file",
        "dangling.json": "a link to ",
        "digits.json": "a number with more digits than Python converts",
        "latin1.json": "not UTF-8 text at byte 14",
    }


def test_what_is_not_a_record_is_skipped_with_a_warning_and_never_blocks(tmp_path):
    (tmp_path / "good.json").write_text(json.dumps(RECORD))
    expected = not_records(tmp_path)
    with pytest.warns(RecordWarning) as caught:
        loaded = within(20, lambda: list(iter_records(tmp_path)))
    assert [r.data.run_id for r in loaded] == ["good"]
    warned = {Path(str(w.message).split(": ", 1)[0].removeprefix("skipping ")).name: str(w.message) for w in caught}
    assert set(warned) == set(expected)
    for name, fragment in expected.items():
        assert fragment in warned[name] and "\n" not in warned[name], warned[name]


def test_bench_runs_lists_the_records_beside_a_fifo(tmp_path):
    write_record(read_record_from(RECORD), tmp_path)
    os.mkfifo(tmp_path / "fifo.json")
    result = within(60, lambda: CliRunner().invoke(main, ["runs", "--results-dir", str(tmp_path)]))
    assert result.exit_code == 0 and "good" in result.output, result.output
    assert "warning: skipping" in result.stderr and "fifo.json: a FIFO" in result.stderr  # one line, not Python's two


def read_record_from(data: dict) -> Any:
    from cnnbench.runrecord import RunRecord

    return RunRecord.from_json(data)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"recipe": {"scheduler": "onecycle", "warmup_epochs": "x"}},
         "recipe warmup_epochs 'x' is not of the type float or null"),
        ({"recipe": {"epochs": "many"}}, "recipe epochs 'many' is not of the type int"),
        ({"recipe": {"batch_size": 128.0}}, "recipe batch_size 128.0 is not of the type int"),
        ({"recipe": {"nesterov": 1}}, "recipe nesterov 1 is not of the type bool"),
        ({"seed": -3}, "seed -3 is negative"),
        ({"epochs_run": -1}, "epochs_run -1 is negative"),
        ({"epochs": [{"epoch": 1, "test_acc": 1.5}]}, "epoch 1: test_acc 1.5 is not a fraction in [0, 1]"),
        ({"epochs": [{"epoch": 0, "test_acc": 0.5}]}, "epoch number 0 is not a positive integer"),
    ],
)
def test_records_with_values_the_reports_cannot_show_are_skipped(tmp_path, change, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**RECORD, **change}))
    with pytest.raises(ValueError) as err:
        read_record(path)
    assert message in str(err.value)


def test_older_recipes_with_nulls_and_ints_for_floats_still_read(tmp_path):
    recipe = {"epochs": 2, "batch_size": 64, "lr": 1, "dropout": None, "warmup_epochs": None, "optimizer": "sgd",
              "scheduler": "cosine-from-a-plugin", "nesterov": False}
    path = tmp_path / "old.json"
    path.write_text(json.dumps({**RECORD, "recipe": recipe}))
    assert read_record(path).recipe["lr"] == 1


# --- data files: FIFOs, devices, endless files and bombs are one-line DataErrors ----------------------


@pytest.fixture
def no_download(monkeypatch):
    import torchvision.datasets

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torchvision.datasets, "MNIST", refuse)
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", refuse)


def mnist_dir(tmp_path: Path, stem: str) -> Path:
    """A data dir whose MNIST test files link to the real ones, except ``stem`` (left for the test to make)."""
    from cnnbench.plugins import mnist

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in mnist.FILES["test"][:2]:
        if name != stem:
            (raw / f"{name}.gz").symlink_to(SHARED_DATA / "MNIST" / "raw" / f"{name}.gz")
    return raw


def sparse_file(path: Path, size: int) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: os.mkfifo(p.with_suffix(".gz")), "not a regular file (a FIFO, a device or a folder)"),
        (lambda p: p.with_suffix(".gz").symlink_to("/dev/zero"), "not a regular file"),
        (lambda p: p.with_suffix(".gz").mkdir(), "not a regular file"),
        (lambda p: sparse_file(p, 100 * 2**30), "larger than 48,088,592 bytes; not the data file it is named after"),
    ],
    ids=["fifo", "dev-zero", "folder", "sparse-100GiB"],
)
def test_mnist_files_that_are_not_files_are_refused_unread(tmp_path, data_dir, no_download, make, fragment):
    from cnnbench.plugins import mnist

    raw = mnist_dir(tmp_path, "t10k-images-idx3-ubyte")
    make(raw / "t10k-images-idx3-ubyte")
    with pytest.raises(DataError) as err:
        within(20, lambda: mnist.load(tmp_path, "test"))
    assert fragment in str(err.value) and "t10k-images-idx3-ubyte" in str(err.value)


def test_a_gzip_bomb_is_refused_while_inflating(tmp_path, data_dir, no_download, monkeypatch):
    from cnnbench.plugins import mnist

    raw = mnist_dir(tmp_path, "t10k-images-idx3-ubyte")
    bomb = gzip.compress(bytes(200 * 2**20), compresslevel=9)  # 200 MiB of zeros in 200 kB
    assert len(bomb) < 2**20
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(bomb)
    monkeypatch.setattr(mnist, "OFFICIAL_MD5", {})  # the md5 would refuse it first
    with pytest.raises(DataError, match="decompresses to more than 48,088,592 bytes"):
        mnist.load(tmp_path, "test")


def cifar_dir(tmp_path: Path, name: str) -> Path:
    from cnnbench.plugins import cifar10

    folder = tmp_path / cifar10.FOLDER
    folder.mkdir()
    for other in cifar10.OFFICIAL_MD5:
        if other != name:
            (folder / other).symlink_to(SHARED_DATA / cifar10.FOLDER / other)
    return folder / name


@pytest.mark.parametrize(
    "make, fragment",
    [
        (os.mkfifo, "not a regular file (a FIFO, a device or a folder)"),
        (lambda p: p.symlink_to("/dev/zero"), "not a regular file"),
        (lambda p: sparse_file(p, 40 * 2**20), "larger than 33,554,432 bytes; not an official CIFAR-10 batch"),
    ],
    ids=["fifo", "dev-zero", "sparse-40MiB"],
)
def test_cifar_batches_that_are_not_files_are_refused_unread(tmp_path, data_dir, no_download, make, fragment):
    from cnnbench.plugins import cifar10

    make(cifar_dir(tmp_path, "test_batch"))
    with pytest.raises(DataError) as err:
        within(20, lambda: cifar10.load(tmp_path, "test"))
    assert fragment in str(err.value) and "test_batch" in str(err.value)


# --- ffcv conversion: a full disk, a failing writer, leftovers of a killed conversion ------------------

needs_ffcv = pytest.mark.skipif(importlib.util.find_spec("ffcv") is None, reason="pip install 'cnnbench[ffcv]'")


def tiny_spec(name: str = "tiny") -> DatasetSpec:
    g = torch.Generator().manual_seed(0)
    data = {"train": (torch.randint(0, 256, (60, 1, 28, 28), dtype=torch.uint8, generator=g), torch.arange(60) % 10)}
    return DatasetSpec(name, lambda data_dir, split: data[split], name, (1, 28, 28), 10, (0.5,), (0.25,))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@needs_ffcv
def test_not_enough_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    from cnnbench.plugins import ffcv_convert

    monkeypatch.setattr(ffcv_convert.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 10**6))
    with pytest.raises(DataError) as err:
        ffcv_convert.ensure_beton(tiny_spec(), "train", out_dir=tmp_path, log=lambda m: None, workers=1)
    assert str(err.value).startswith(f"{tmp_path / 'tiny-train.beton'}: needs up to ")
    assert str(err.value).endswith(f" MB, but {tmp_path} has 1.0 MB free; free some space or pass another --out DIR")
    assert list(tmp_path.iterdir()) == []  # no .tmp, no .lock


@needs_ffcv
def test_a_writer_worker_that_fails_ends_the_conversion_in_one_line(tmp_path, monkeypatch):
    """ffcv's own writer waits forever for a dead worker; the supervised one reports the worker's error."""
    from ffcv.memory_allocator import MemoryAllocator

    from cnnbench.plugins import ffcv_convert

    def full(self):  # what a full disk does to a worker's page write
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(MemoryAllocator, "flush_page", full)  # the forked workers inherit it
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    started = time.perf_counter()
    with pytest.raises(DataError) as err:
        within(120, lambda: ffcv_convert.ensure_beton(tiny_spec(), "train", out_dir=tmp_path, log=lambda m: None,
                                                      workers=2))
    assert str(err.value) == (f"{tmp_path / 'tiny-train.beton'}: cannot be written (ffcv's writer failed: "
                              "OSError: [Errno 28] No space left on device)")
    assert time.perf_counter() - started < 60
    assert list(tmp_path.iterdir()) == []
    if shm_before:
        assert set(os.listdir("/dev/shm")) <= shm_before  # ffcv's metadata segment is released


@needs_ffcv
def test_real_full_disk_convert_is_one_line_and_leaves_nothing(tmp_path, data_dir):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); the patched writer covers it")
    try:
        result = within(240, lambda: CliRunner().invoke(main, ["convert", "--dataset", "mnist", "--split", "test",
                                                               "--out", str(mount), "--data-dir", str(data_dir)]))
        line = one_line(result)
        assert line.startswith(f"error: {mount / 'mnist-test.beton'}: needs up to ") and "MB free" in line
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@needs_ffcv
def test_leftovers_of_a_killed_conversion_do_not_block_the_next(tmp_path):
    from cnnbench.plugins import ffcv_convert

    (tmp_path / ".tiny-train.beton.lock").write_text("")  # a conversion killed with SIGKILL left its lock file
    os.mkfifo(tmp_path / "tiny-train.beton.json")  # and something odd where the stamp goes
    done = within(120, lambda: ffcv_convert.ensure_beton(tiny_spec(), "train", out_dir=tmp_path, log=lambda m: None,
                                                         workers=1))
    assert done.written and done.count == 60
    assert leftovers(tmp_path) == []  # the lock file is removed once the conversion is done
    assert not within(20, lambda: ffcv_convert.ensure_beton(tiny_spec(), "train", out_dir=tmp_path,
                                                            workers=1)).written


def test_the_lock_file_goes_with_its_holder_and_a_waiter_relocks_the_current_file(tmp_path):
    from cnnbench.plugins import ffcv_convert

    beton, lock = tmp_path / "x.beton", tmp_path / ".x.beton.lock"
    with pytest.raises(RuntimeError), ffcv_convert.conversion_lock(beton):
        raise RuntimeError("a failing conversion")
    assert not lock.exists()
    order: list[str] = []
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        with ffcv_convert.conversion_lock(beton):  # wakes on the removed file, locks a new one
            order.append("waiter")
            assert lock.exists() and ffcv_convert.same_file(os.open(lock, os.O_RDONLY), lock)

    with ffcv_convert.conversion_lock(beton):
        thread = threading.Thread(target=waiter)
        thread.start()
        waiting.wait(10)
        time.sleep(0.2)  # the waiter blocks in flock on the holder's file
        order.append("holder")
    thread.join(20)
    assert order == ["holder", "waiter"] and not lock.exists()
