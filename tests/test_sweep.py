"""bench sweep: a grid through the local and Ray launchers, idempotent, failures contained."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import BENCH, PLUGIN_FIXTURES

from cnnbench.cli import main
from cnnbench.runrecord import read_record
from cnnbench.sweep.grid import expand

GRID = ["--model", "mnist_step1,mnist_step2", "--seeds", "2", "--epochs", "2", "--limit-train", "384",
        "--limit-test", "128"]
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed: "
                               "pip install -c .ci/constraints.txt 'cnnbench[ray]' (.ci/install does)")


def bench(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), env=env)


def sweep(results: Path, data_dir: Path, *extra: str, env: dict | None = None):
    return bench("sweep", *GRID, "--data-dir", str(data_dir), "--results-dir", str(results), "--log-dir",
                 str(results.parent / f"{results.name}-logs"), "--no-progress", *extra, env=env)


def by_key(results: Path) -> dict[str, list[tuple]]:
    out = {}
    for path in results.glob("*.json"):
        record = read_record(path)
        out[record.launch["job_key"]] = [(e.train_loss, e.train_acc, e.test_loss, e.test_acc) for e in record.epochs]
    return out


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory, data_dir) -> Path:
    results = tmp_path_factory.mktemp("sweep") / "local"
    result = sweep(results, data_dir, "--jobs", "2")
    assert result.exit_code == 0, result.output
    return results


def test_local_sweep_equals_single_runs_at_the_same_thread_count(local_sweep, tmp_path, data_dir):
    records = [read_record(p) for p in local_sweep.glob("*.json")]
    assert len(records) == 4 and {r.threads for r in records} == {1}
    assert {(r.launch["launcher"], r.launch["jobs_on_device"]) for r in records} == {("local", 2)}
    assert len(list(local_sweep.glob("*.pt"))) == 4 and len(list(local_sweep.parent.glob("local-logs/*.log"))) == 4
    for record in records:
        single = tmp_path / record.launch["job_key"]
        result = bench("run", "--model", record.model, "--seed", str(record.seed), "--epochs", "2", "--limit-train",
                       "384", "--limit-test", "128", "--threads", "1", "--data-dir", str(data_dir),
                       "--results-dir", str(single), "--no-progress")
        assert result.exit_code == 0, result.output
        [path] = single.glob("*.json")
        alone = read_record(path)
        assert [(e.train_loss, e.test_acc) for e in alone.epochs] == [(e.train_loss, e.test_acc) for e in record.epochs]
        assert alone.launch == {"launcher": None, "jobs_on_device": 1}


def test_repeating_a_sweep_runs_only_the_missing_jobs(local_sweep, tmp_path, data_dir):
    results = tmp_path / "again"
    results.mkdir()
    kept = sorted(local_sweep.glob("*.json"))[:2]
    for path in kept:  # as if the sweep had been interrupted after two jobs
        (results / path.name).write_bytes(path.read_bytes())
    dry = sweep(results, data_dir, "--dry-run")
    assert "2 already have records, 2 to run" in dry.output and not list((tmp_path / "again-logs").glob("*.log"))
    result = sweep(results, data_dir, "--jobs", "2")
    assert result.exit_code == 0, result.output
    assert len(list(results.glob("*.json"))) == 4 and len(list((tmp_path / "again-logs").glob("*.log"))) == 2
    assert by_key(results) == by_key(local_sweep)
    assert "4 already have records, 0 to run" in sweep(results, data_dir).output


def test_a_failing_job_does_not_stop_the_others(tmp_path, data_dir):
    result = bench("--plugin", "nan_model", "sweep", "--model", "nan_net,mnist_step2", "--epochs", "3",
                   "--limit-train", "512", "--limit-test", "128", "--data-dir", str(data_dir), "--results-dir",
                   str(tmp_path / "r"), "--log-dir", str(tmp_path / "logs"), "--no-progress", "--jobs", "2",
                   env={"PYTHONPATH": str(PLUGIN_FIXTURES)})
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: 1 of 2 jobs failed; their logs are in {tmp_path / 'logs'}"]
    assert "failed: nan_net seed 0" in result.output and "diverged" in result.output
    statuses = sorted(read_record(p).status for p in (tmp_path / "r").glob("*.json"))
    assert statuses == ["complete", "diverged"]


@pytest.mark.parametrize(
    "toml, fragment",
    [
        ('[grid]\nmodel = ["mnist_step2"]\nfoo = 1\n', "unknown key 'foo'"),
        ('[grid]\nmodel = ["resnet50"]\n', "unknown model 'resnet50'"),
        ("[grid]\nmodel = []\n", "the grid is empty"),
        ('[grid]\nepochs = 2\n', "needs at least one model"),
        ('[grid]\nmodel = "mnist_step2"\nseeds = 0\n', "seeds = 0"),
        ('[grid]\nmodel = "mnist_step2"\nlr = -1\n', "lr = -1"),
        ('[grid]\nmodel = "mnist_step2"\n[[config]]\nnormalizer = "instance"\n', "valid normalizers"),
        ('[grid\n', "not valid TOML"),
        ('[jobs]\nmodel = "x"\n', "unknown table 'jobs'"),
        ("grid = 3\n", "must be a table"),
    ],
)
def test_bad_sweep_files_are_one_line_before_anything_trains(tmp_path, toml, fragment):
    path = tmp_path / "sweep.toml"
    path.write_text(toml)
    result = bench("sweep", "--file", str(path), "--results-dir", str(tmp_path / "r"))
    assert result.exit_code != 0 and "Traceback" not in result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error:") and fragment in line, line
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").iterdir())


def test_sweep_file_with_grid_and_explicit_configs(tmp_path, data_dir):
    path = tmp_path / "sweep.toml"
    path.write_text('[grid]\nmodel = ["mnist_step2"]\nseeds = [3, 4]\nepochs = 1\n'
                    '[[config]]\nnormalizer = ["group", "layer"]\n[[config]]\nlr = 0.05\n')
    result = bench("sweep", "--file", str(path), "--results-dir", str(tmp_path / "r"), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "sweep: 6 jobs (3 configurations x seeds)" in result.output
    assert "normalizer=layer" in result.output and "lr=0.05" in result.output and "seed 4" in result.output


@needs_ray
def test_ray_launcher_gives_the_same_records(local_sweep, tmp_path, data_dir):
    results = tmp_path / "ray"
    result = sweep(results, data_dir, "--launcher", "ray", "--jobs", "2")
    assert result.exit_code == 0, result.output
    assert by_key(results) == by_key(local_sweep)
    records = [read_record(p) for p in results.glob("*.json")]
    assert {r.launch["launcher"] for r in records} == {"ray"} and all(r.launch["node"] for r in records)
    assert len(list(results.glob("*.pt"))) == 4 and len(list((tmp_path / "ray-logs").glob("*.log"))) == 4


@needs_ray
def test_a_killed_ray_worker_is_retried(tmp_path, data_dir, monkeypatch):
    marker = tmp_path / "killed-once"
    monkeypatch.setenv("KILLER_MARKER", str(marker))
    monkeypatch.setenv("PYTHONPATH", str(PLUGIN_FIXTURES))
    result = bench("--plugin", "killer", "sweep", "--launcher", "ray", "--jobs", "2", "--model", "mnist_step2",
                   "--epochs", "1", "--limit-train", "256", "--limit-test", "128", "--data-dir", str(data_dir),
                   "--results-dir", str(tmp_path / "r"), "--log-dir", str(tmp_path / "logs"), "--no-progress")
    assert result.exit_code == 0, result.output
    assert marker.exists()  # the first attempt's worker died
    [path] = (tmp_path / "r").glob("*.json")
    assert read_record(path).status == "complete"


def test_asking_for_a_default_does_not_make_a_new_job(registry):
    plain = expand({"model": ["mnist_gap"], "seeds": 1}, registry=registry)
    spelled = expand({"model": ["mnist_gap"], "seeds": 1, "loader": ["memory"], "normalizer": ["batch"],
                      "epochs": [15], "lr": [0.1]}, registry=registry)
    other = expand({"model": ["mnist_gap"], "seeds": 1, "epochs": [14]}, registry=registry)
    assert [j.key for j in plain] == [j.key for j in spelled] != [j.key for j in other]


def test_ctrl_c_stops_a_local_sweep_and_repeating_it_resumes(tmp_path, data_dir):
    args = [str(BENCH), "sweep", "--model", "mnist_step2", "--seeds", "2", "--epochs", "4", "--limit-train", "3072",
            "--limit-test", "128", "--data-dir", str(data_dir), "--results-dir", "r", "--log-dir", "logs",
            "--no-progress", "--jobs", "2"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        logs = list((tmp_path / "logs").glob("*.log"))
        if len(logs) == 2 and all("epoch   1" in p.read_text() for p in logs):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("error: sweep interrupted"), err
    assert len(list((tmp_path / "r").glob("*.ckpt"))) == 2 and not list((tmp_path / "r").glob("*.json"))
    assert not [p for p in os.popen("ps -eo args").read().splitlines()
                if "cnnbench.sweep.jobs" in p and str(tmp_path) in p]
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    records = [read_record(p) for p in (tmp_path / "r").glob("*.json")]
    assert len(records) == 2 and all(r.resumed_at and r.n_epochs == 4 for r in records)
    assert not list((tmp_path / "r").glob("*.ckpt"))


def test_ray_refuses_cuda_jobs_without_gpus_before_starting(tmp_path):
    result = bench("sweep", "--launcher", "ray", "--model", "mnist_step2", "--device", "cuda", "--results-dir",
                   str(tmp_path / "r"), "--no-progress")
    if "ray' needs ray" in result.output:
        pytest.skip("ray is not installed")
    assert result.exit_code == 1 and "asks for CUDA" in result.stderr and "--ray-gpus-per-job" in result.stderr
