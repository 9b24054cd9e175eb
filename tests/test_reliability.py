"""Runs that survive: kill and resume, signals, full disks, unwritable folders, divergence,
concurrent runs, and every kind of bad input ending in one line, never a traceback or a lost run."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from support import BENCH, PLUGIN_FIXTURES

from cnnbench.cli import main
from cnnbench.reports import leaderboard as lb
from cnnbench.runrecord import read_record

METRICS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr")


def bench(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), env=env)


def one_line_error(result, *fragments: str) -> str:
    """Exit non-zero, no traceback, and stderr is one line: ``error: ...`` holding every fragment."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def tiny(data_dir: Path, results: Path, *extra: str, epochs: int = 2, train: int = 512) -> list[str]:
    return ["--epochs", str(epochs), "--limit-train", str(train), "--limit-test", "128", "--data-dir", str(data_dir),
            "--results-dir", str(results), "--no-progress", *extra]


def spawn(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(PLUGIN_FIXTURES)}
    return subprocess.Popen([str(BENCH), *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for_line(proc: subprocess.Popen, prefix: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"no line starting {prefix!r}; stderr: {proc.stderr.read()}")


def metrics(record) -> list[tuple]:
    return [tuple(getattr(e, k) for k in METRICS) for e in record.epochs]


# --- resume ---------------------------------------------------------------------------------


def test_kill_during_epoch_2_then_resume_equals_the_uninterrupted_run(tmp_path, data_dir):
    common = ["run", "--model", "mnist_gap", "--seed", "5"]
    args = [*common, *tiny(data_dir, Path("r"), epochs=3, train=1024)]
    done = subprocess.run([str(BENCH), *common, *tiny(data_dir, Path("whole"), epochs=3, train=1024)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    [whole] = (tmp_path / "whole").glob("*.json")

    proc = spawn(args, tmp_path)
    wait_for_line(proc, "epoch   1")  # epoch 1 is checkpointed; epoch 2 is under way
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    results = tmp_path / "r"
    [ckpt] = results.glob("*.ckpt")
    assert not list(results.glob("*.json")) and not list(results.glob("*.pt"))
    run_id = ckpt.name.removesuffix(".ckpt")
    listing = bench("runs", "--incomplete", "--results-dir", str(results)).output
    assert run_id in listing and f"bench resume {run_id} --results-dir {results}" in listing and "1/3" in listing

    resumed = bench("resume", run_id[:20], "--results-dir", str(results), "--no-progress")
    assert resumed.exit_code == 0, resumed.output
    record = read_record(results / f"{run_id}.json")
    assert metrics(record) == metrics(read_record(whole))
    assert record.resumed_at == [1] and record.final_test_acc == read_record(whole).final_test_acc
    assert not list(results.glob("*.ckpt")) and (results / f"{run_id}.pt").is_file()
    assert "nothing to resume" in bench("resume", run_id, "--results-dir", str(results)).output


@pytest.mark.parametrize("sig, code, name", [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")])
def test_signals_end_a_run_cleanly_with_a_checkpoint(tmp_path, data_dir, sig, code, name):
    proc = spawn(["run", "--model", "mnist_step2", *tiny(data_dir, tmp_path, epochs=20, train=2048)], tmp_path)
    wait_for_line(proc, "epoch   1")
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and "bench resume" in lines[0] and "after epoch" in lines[0], stderr
    assert len(list(tmp_path.glob("*.ckpt"))) == 1 and not list(tmp_path.glob("*.json"))


# --- nothing lost, nothing half-written ---------------------------------------------------------


def fill_disk_at(monkeypatch, marker: str):
    """Every write of a file whose temporary name holds ``marker`` (``.json.``: records) fails with ENOSPC, other
    files are written; returns a function that gives the disk its space back."""
    from cnnbench import files

    real_fill = files._fill

    def full(fd, tmp, data):
        if marker in tmp:
            os.close(fd)
            raise OSError(errno.ENOSPC, "No space left on device", tmp)
        real_fill(fd, tmp, data)

    monkeypatch.setattr(files, "_fill", full)
    return lambda: monkeypatch.setattr(files, "_fill", real_fill)


@pytest.fixture
def full_disk_at_records(monkeypatch):
    yield fill_disk_at(monkeypatch, ".json.")


def test_full_disk_at_the_record_costs_no_trained_epoch(tmp_path, data_dir, full_disk_at_records):
    result = bench("run", "--model", "mnist_step2", *tiny(data_dir, tmp_path))
    one_line_error(result, "No space left on device")
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob(".*tmp")) and not list(tmp_path.glob("*.json"))
    [ckpt] = tmp_path.glob("*.ckpt")
    full_disk_at_records()  # space again
    resumed = bench("resume", ckpt.name.removesuffix(".ckpt"), "--results-dir", str(tmp_path), "--no-progress")
    assert resumed.exit_code == 0, resumed.output
    [path] = tmp_path.glob("*.json")
    record = read_record(path)
    assert record.n_epochs == 2 and record.resumed_at == [2] and (tmp_path / record.weights).is_file()


def test_full_disk_keeps_the_previous_leaderboard(tmp_path, monkeypatch):
    from cnnbench import files

    board = tmp_path / "LEADERBOARD.md"
    board.write_text("previous\n")

    def full(fd, tmp, data):
        os.close(fd)
        raise OSError(errno.ENOSPC, "No space left on device", tmp)

    monkeypatch.setattr(files, "_fill", full)
    result = bench("leaderboard", "--write", "--results-dir", str(tmp_path), "--readme", str(tmp_path / "none.md"))
    one_line_error(result, "No space left on device")
    assert board.read_text() == "previous\n" and [p.name for p in tmp_path.iterdir()] == ["LEADERBOARD.md"]


def test_real_small_tmpfs_fills_up(tmp_path, data_dir):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root and a mount namespace); the patched writer covers it")
    try:
        result = bench("run", "--model", "mnist_gap", *tiny(data_dir, mount, epochs=1, train=256))
        one_line_error(result, "No space left on device")
        assert not list(mount.glob(".*tmp")) and not list(mount.glob("*.pt"))
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("where", ["file-in-path", "proc"])
def test_unwritable_results_dir_fails_before_any_data(tmp_path, where):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    results = blocker / "results" if where == "file-in-path" else Path("/proc/cnnbench-results")
    # the data dir does not exist: an error about data would mean data was read first
    result = bench("run", "--model", "mnist_gap", "--data-dir", str(tmp_path / "no-data"), "--results-dir",
                   str(results))
    one_line_error(result, "results dir", "is not writable")


def test_a_failing_run_end_hook_leaves_no_weights_without_a_record(tmp_path, data_dir):
    result = bench("--plugin", "bad_hooks", "run", "--model", "mnist_step2", *tiny(data_dir, tmp_path),
                   env={"BAD_HOOK": "run_end"})
    one_line_error(result, "plugin 'bad_hooks' failed in cnnbench_run_end", "boom in run_end")
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.json"))
    assert len(list(tmp_path.glob("*.ckpt"))) == 1  # the trained epochs are kept
    assert not list(tmp_path.glob("*.lock"))  # a failure removes the run's lock


def test_nan_loss_stops_the_run_and_marks_the_record(tmp_path, data_dir):
    result = bench("--plugin", "nan_model", "run", "--model", "nan_net", *tiny(data_dir, tmp_path, epochs=3))
    one_line_error(result, "nan_net diverged", "epoch 2")
    [path] = tmp_path.glob("*.json")

    def no_constants(name):
        raise AssertionError(f"bare {name} in a record")

    data = json.loads(path.read_text(), parse_constant=no_constants)  # strict JSON
    assert data["status"] == "diverged" and data["epochs_run"] == 2 and "train_loss" not in data["epochs"][1]
    assert data["weights"] is None and not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.ckpt"))
    record = read_record(path)
    healthy = read_record(path)
    healthy.seed, healthy.status, healthy.run_id = 1, "complete", "z" + record.run_id
    [group] = lb.group_records([record, healthy])
    assert len(group.records) == 2  # the diverged seed is counted, not dropped
    from cnnbench import Target

    row = lb.check(group, Target("t", "mnist", 0.1, 10**6, None, "test"))
    assert row.status.startswith("fail") and "1 diverged" in row.status


def test_eight_concurrent_runs_into_one_folder(tmp_path, data_dir):
    seeds = [0, 0, 1, 1, 2, 2, 3, 3]
    procs = [spawn(["run", "--model", "mnist_step2", "--seed", str(s), "--threads", "1",
                    *tiny(data_dir, tmp_path, epochs=1, train=256)], tmp_path) for s in seeds]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    paths = sorted(tmp_path.glob("*.json"))
    assert len(paths) == 8 and len({p.name for p in paths}) == 8 and len(list(tmp_path.glob("*.pt"))) == 8
    records = [read_record(p) for p in paths]
    assert not list(tmp_path.glob("*.ckpt")) and not list(tmp_path.glob(".*tmp"))
    [group] = lb.group_records(records)
    assert len(group.records) == 4 and len(group.superseded) == 4 and group.seeds() == [0, 1, 2, 3]
    table = bench("leaderboard", "--results-dir", str(tmp_path), "--format", "json").output
    rows = json.loads(table)["rows"]
    assert {r["n"] for r in rows} == {4} and all(len(r["superseded_runs"]) == 4 for r in rows)


# --- every input a one-line error -----------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--lr", "nan"], "'nan' is not a finite number"),
        (["--lr", "inf"], "'inf' is not a finite number"),
        (["--lr", "-1"], "above 0"),
        (["--lr", "0"], "above 0"),
        (["--dropout", "nan"], "'nan' is not a finite number"),
        (["--dropout", "1"], "below 1"),
        (["--dropout", "-inf"], "is not a finite number"),
        (["--seed", "-1"], "--seed"),
        (["--seed", str(2**64)], "--seed"),
        (["--seeds", ""], "--seeds ''"),
        (["--seeds", "x"], "--seeds 'x'"),
        (["--seeds", "1,1"], "no repeats"),
        (["--seeds", "0"], "at least one seed"),
        (["--seeds", "-1,2"], "--seeds '-1,2'"),  # no sign: not a seed list (seeds.py)
        (["--seeds", "100000"], "at most 1000 seeds"),
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "0"], "--batch-size"),
        (["--threads", "0"], "--threads"),
        (["--device", "meta"], "cnnbench trains on cpu or cuda"),
        (["--device", "nonsense"], "is not a device torch knows"),
        (["--device", "cuda:7"], "cuda:7"),
        (["--normalizer", "instance"], "valid normalizers"),
        (["--augment", "cifar-album"], "is for cifar10, not mnist"),
        (["--loader", "disk"], "valid loaders"),
        (["--precision", "fp8"], "--precision"),
    ],
)
def test_bad_run_options_are_one_line(tmp_path, args, fragment):
    if args[:2] == ["--device", "cuda:7"] and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    result = bench("run", "--model", "mnist_gap", "--results-dir", str(tmp_path), "--data-dir",
                   str(tmp_path / "no-data"), *args)
    one_line_error(result, fragment)
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    "plugin, env, fragments",
    [
        ("bad_hooks", {"BAD_HOOK": "run_start"}, ["plugin 'bad_hooks' failed in cnnbench_run_start", "RuntimeError"]),
        ("bad_hooks", {"BAD_HOOK": "epoch_end"}, ["plugin 'bad_hooks' failed in cnnbench_epoch_end", "boom"]),
        ("bad_hooks", {"BAD_HOOK": "exit-epoch_end"}, ["plugin 'bad_hooks' failed in cnnbench_epoch_end",
                                                       "SystemExit"]),
        ("bad_hooks", {"BAD_HOOK": "batches"}, ["cnnbench_epoch_batches returned int"]),
        ("misspelled_hook", {}, ["plugin 'misspelled_hook'", "cnnbench_epoch_ends"]),
        ("wrong_signature", {}, ["plugin 'wrong_signature'", "optimizer"]),
        ("exits_on_import", {}, ["plugin 'exits_on_import'", "failed to import: SystemExit"]),
        ("unsafe_name", {}, ["plugin 'unsafe_name' registers model '../evil'", "names must be"]),
    ],
)
def test_misbehaving_plugins_are_one_line_naming_them(tmp_path, data_dir, plugin, env, fragments):
    result = bench("--plugin", plugin, "run", "--model", "mnist_step2", *tiny(data_dir, tmp_path, epochs=1, train=256),
                   env=env)
    one_line_error(result, *fragments)
    assert not list(tmp_path.glob("*.pt"))


def test_a_model_factory_that_raises_is_one_line(tmp_path, data_dir):
    result = bench("--plugin", "raising_factory", "run", "--model", "broken_net",
                   *tiny(data_dir, tmp_path, epochs=1, train=256))
    one_line_error(result, "model 'broken_net': its factory raised ValueError: cannot build this")


def test_a_plugin_both_installed_and_named_loads_once():
    result = bench("--plugin", "cnnbench.plugins.mnist_models", "--plugin", "stopper", "--plugin", "stopper",
                   "list", "models")
    assert result.exit_code == 0, result.output
    assert result.output.count("mnist_gap") == 1


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_dir) -> Path:
    results = tmp_path_factory.mktemp("finished")
    result = bench("run", "--model", "mnist_step2", *tiny(data_dir, results, epochs=1, train=256))
    assert result.exit_code == 0, result.output
    return results


def _copy_run(source: Path, target: Path, **changes) -> str:
    [path] = source.glob("*.json")
    data = {**json.loads(path.read_text()), **changes}
    target.mkdir(parents=True, exist_ok=True)
    (target / path.name).write_text(json.dumps(data))
    weights = source / f"{path.stem}.pt"
    if weights.exists() and not (target / weights.name).exists():
        (target / weights.name).write_bytes(weights.read_bytes())
    return path.stem


@pytest.mark.parametrize(
    "damage, fragment",
    [
        ("empty", "not a loadable weights file"),
        ("truncated", "not a loadable weights file"),
        ("garbage", "not a loadable weights file"),
        ("code", "holds Python objects other than tensors and plain data"),
        ("protocol-5", "not a loadable weights file"),  # torch warns about the protocol: not shown
        ("list", "not a state dict of tensors"),
        ("other-model", "do not match model 'mnist_step2'"),
        ("reshaped", "has shape"),
        ("missing", "is missing"),
    ],
)
def test_bad_weights_files_are_one_line(finished_run, tmp_path, data_dir, damage, fragment):
    run_id = _copy_run(finished_run, tmp_path)
    weights = tmp_path / f"{run_id}.pt"
    good = torch.load(weights, weights_only=True)
    if damage == "empty":
        weights.write_bytes(b"")
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:300])
    elif damage == "garbage":
        weights.write_bytes(os.urandom(2048))
    elif damage == "code":
        torch.save({"x": Path("/etc/passwd")}, weights)  # an arbitrary object: weights_only refuses it
    elif damage == "protocol-5":
        torch.save(good, weights, pickle_protocol=5, _use_new_zipfile_serialization=False)
    elif damage == "list":
        torch.save([1, 2, 3], weights)
    elif damage == "other-model":
        from cnnbench import create_model

        torch.save(create_model("mnist_gap").state_dict(), weights)
    elif damage == "reshaped":
        key = next(k for k, v in good.items() if v.ndim == 4)
        torch.save({**good, key: torch.zeros(1, 1, 1, 1)}, weights)
    elif damage == "missing":
        weights.unlink()
    result = bench("misclassified", run_id, "--results-dir", str(tmp_path), "--data-dir", str(data_dir),
                   "--out", str(tmp_path / "out.png"))
    line = one_line_error(result, fragment)
    assert "weights_only" not in line and len(line) < 300  # our words, not torch's advice to run the file's code


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"params": "many"}, "params is str"),
        ({"epochs": [{"epoch": 1, "test_acc": "x"}]}, "test_acc 'x' is not a number"),
        ({"epochs": []}, "epochs is not a non-empty list"),
        ({"final_test_acc": 3.5}, "final_test_acc 3.5 is not a fraction"),
        ({"confusion": [["a"]]}, "confusion is not a list of integer rows"),
        ({"weights": "../../etc/passwd"}, "is not a file name in the results directory"),
        ({"schema_version": 99}, "newer than this cnnbench reads"),
        ({"images_per_s": "fast"}, "images_per_s 'fast' is not a number"),
    ],
)
@pytest.mark.parametrize("command", ["show", "plot", "compare", "misclassified", "confusion"])
def test_records_of_the_wrong_shape_are_one_line_in_every_report(finished_run, tmp_path, changes, fragment, command):
    run_id = _copy_run(finished_run, tmp_path, **changes)
    extra = [run_id] if command == "compare" else []
    result = bench(command, run_id, *extra, "--results-dir", str(tmp_path))
    one_line_error(result, "unusable run record", fragment)
    with pytest.warns(UserWarning, match=fragment.split("'")[0]):
        assert lb.load_records(tmp_path) == []


def test_runs_lists_finished_and_interrupted(finished_run):
    out = bench("runs", "--results-dir", str(finished_run)).output
    assert "mnist_step2" in out and "complete" in out and "1/1" in out
    assert "no interrupted runs" in bench("runs", "--incomplete", "--results-dir", str(finished_run)).output


def test_a_checkpoint_that_is_not_one_is_one_line(tmp_path):
    (tmp_path / "20260101T000000Z-mnist_gap-s0-deadbeef.ckpt").write_bytes(b"not a checkpoint")
    one_line_error(bench("resume", "20260101T", "--results-dir", str(tmp_path)), "not a usable checkpoint")
    one_line_error(bench("resume", "nope", "--results-dir", str(tmp_path)), "no interrupted run 'nope'")
    assert "(unreadable checkpoint" in bench("runs", "--results-dir", str(tmp_path)).output


def test_python_warnings_are_not_tracebacks(tmp_path):
    (tmp_path / "half.json").write_text('{"run_id": ')
    result = bench("leaderboard", "--results-dir", str(tmp_path))
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert "warning: skipping" in result.output and "half.json" in result.output


# --- found in review ------------------------------------------------------------------------------


def test_a_stopped_run_resumes_without_training_again(tmp_path, data_dir):
    import stopper

    stopper.CALLS.clear()
    failed = bench("--plugin", "stopper", "--plugin", "bad_hooks", "run", "--model", "mnist_step2",
                   *tiny(data_dir, tmp_path, epochs=3), env={"BAD_HOOK": "run_end"})
    one_line_error(failed, "plugin 'bad_hooks' failed in cnnbench_run_end")
    [ckpt] = tmp_path.glob("*.ckpt")
    resumed = bench("resume", ckpt.name.removesuffix(".ckpt"), "--results-dir", str(tmp_path), "--no-progress")
    assert resumed.exit_code == 0, resumed.output
    [path] = tmp_path.glob("*.json")
    record = read_record(path)
    assert record.n_epochs == 1 and record.status == "stopped" and "after epoch 1" in record.stopped_by


def test_a_failing_record_written_hook_leaves_no_checkpoint(tmp_path, data_dir):
    result = bench("--plugin", "bad_hooks", "run", "--model", "mnist_step2", *tiny(data_dir, tmp_path, epochs=1),
                   env={"BAD_HOOK": "record_written"})
    one_line_error(result, "plugin 'bad_hooks' failed in cnnbench_record_written")
    assert len(list(tmp_path.glob("*.json"))) == 1 and len(list(tmp_path.glob("*.pt"))) == 1
    assert not list(tmp_path.glob("*.ckpt")) and not list(tmp_path.glob("*.lock"))


def test_weights_left_by_a_kill_between_the_two_writes_do_not_block_resume(tmp_path, data_dir,
                                                                             full_disk_at_records):
    one_line_error(bench("run", "--model", "mnist_step2", *tiny(data_dir, tmp_path, epochs=1)), "No space")
    full_disk_at_records()
    [ckpt] = tmp_path.glob("*.ckpt")
    run_id = ckpt.name.removesuffix(".ckpt")
    (tmp_path / f"{run_id}.pt").write_bytes(b"left by a kill")  # as if killed after the weights were written
    resumed = bench("resume", run_id, "--results-dir", str(tmp_path), "--no-progress")
    assert resumed.exit_code == 0, resumed.output
    assert torch.load(tmp_path / f"{run_id}.pt", weights_only=True)


def test_a_running_run_is_not_resumed_twice(finished_run, tmp_path):
    from cnnbench.training.checkpoint import run_lock

    run_id = "20260101T000000Z-mnist_step2-s0-0badc0de"
    (tmp_path / f"{run_id}.ckpt").write_bytes(b"x")
    with run_lock(tmp_path, run_id):
        one_line_error(bench("resume", run_id, "--results-dir", str(tmp_path)), "still running in another process")
    assert not (tmp_path / f"{run_id}.lock").exists()


@pytest.mark.parametrize(
    "plugin, env, fragments",
    [
        ("forward_raises", {}, ["plugin 'forward_raises' failed in seed 0", "ValueError: forward cannot cope"]),
        ("bad_hooks", {"BAD_HOOK": "not-json"}, ["cnnbench_run_end hook put a value into the record"]),
        ("exits_registering", {}, ["plugin 'exits_registering' raised while registering models: SystemExit"]),
    ],
)
def test_plugin_code_outside_hooks_is_one_line(tmp_path, data_dir, plugin, env, fragments):
    model = "raising_net" if plugin == "forward_raises" else "mnist_step2"
    result = bench("--plugin", plugin, "run", "--model", model, *tiny(data_dir, tmp_path, epochs=1, train=256),
                   env=env)
    one_line_error(result, *fragments)
    assert not list(tmp_path.glob("*.pt"))
