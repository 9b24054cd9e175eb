"""bench sweep under faults: bounded inputs, jobs that never train twice, Ray that fails fast.

Every bad input is one ``error:`` line and a non-zero exit, before anything is built or trained,
and answers at once (a count is checked before its list is built, a grid before it is expanded).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from support import BENCH

from cnnbench.cli import main
from cnnbench.runrecord import read_record

TINY = ["--model", "mnist_gap", "--epochs", "1", "--limit-train", "256", "--limit-test", "256", "--no-progress"]
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")


def bench(*args: str):
    return CliRunner().invoke(main, list(args))


def is_plan(line: str) -> bool:
    """A line of the plan ``bench sweep`` prints before it starts the launcher."""
    return line.startswith(("sweep: ", "job ", "-----", "mnist_gap-s"))


def assert_quick_one_line(args: list[str], *fragments: str, within: float = 10.0) -> str:
    """One ``error:`` line (besides the plan, when the launcher's start-up failed), within seconds."""
    started = time.perf_counter()
    result = bench(*args)
    took = time.perf_counter() - started
    lines = [line for line in result.output.strip().splitlines() if line.strip() and not is_plan(line)]
    assert result.exit_code != 0 and len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith("error: ") and all(f in lines[0] for f in fragments), lines[0]
    assert took < within, f"{took:.1f}s: {lines[0]}"
    return lines[0]


# --- seeds: bench run, bench sweep and its TOML file share one bound ------------------------------

THOUSAND_AND_ONE = ",".join(str(s) for s in range(1001))


@pytest.mark.parametrize(
    ("seeds", "fragment"),
    [
        ("1000000000", "at most 1000 seeds"),
        ("1e30", "give a count (5) or a comma-separated list"),
        (THOUSAND_AND_ONE, "at most 1000 seeds in one command (got 1,001)"),
        ("99999999999999999999999999", "give a count"),
    ],
)
@pytest.mark.parametrize("command", ["run", "sweep"])
def test_huge_seed_counts_and_lists_are_refused_at_once(tmp_path, command, seeds, fragment):
    args = [command, "--model", "mnist_gap", "--seeds", seeds, "--results-dir", str(tmp_path / "r")]
    assert_quick_one_line(args + (["--dry-run"] if command == "sweep" else []), fragment, within=5)
    assert not (tmp_path / "r").exists()


# --- sweep files ------------------------------------------------------------------------------

HUGE_GRID = "[grid]\nmodel = \"mnist_gap\"\n" + "".join(
    f"{key} = [{', '.join(str(v) for v in range(1, 11))}]\n"
    for key in ("epochs", "batch_size", "limit_train", "limit_test", "val_split", "workers", "warmup_epochs", "lr"))


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ('[grid]\nmodel = "mnist_gap"\nseeds = 1000000000\n', "seeds = 1000000000: at most 1000 seeds"),
        ('[grid]\nmodel = "mnist_gap"\nseeds = 1e30\n', "seeds = 1e+30: give a count (5) or a list"),
        ('[grid]\nmodel = "mnist_gap"\nseeds = [' + THOUSAND_AND_ONE + "]\n",
         "at most 1000 seeds in one sweep entry (got 1,001)"),
        ('[grid]\nmodel = "mnist_gap"\nseeds = "1000000000"\n', "at most 1000 seeds"),
        ('[grid]\nmodel = "mnist_gap"\nseeds = true\n', "seeds = True: give a count"),
        ('[grid]\nmodel = "mnist_gap"\nseeds = [1.5]\n', "seeds = [1.5]: give a count"),
        ('[grid]\nmodel = "mnist_gap"\nseeds = [-1]\n', "seeds must lie in 0.."),
        ('[grid]\nmodel = "mnist_gap"\nseeds = [3, 3]\n', "no repeats"),
        ('[grid]\nmodel = "mnist_gap"\nseeds = 99999999999999999999999999\n', "at most 1000 seeds"),
        (HUGE_GRID, "the sweep asks for 100,000,000 jobs; at most 10,000"),
        ("[grid]\nmodel = \"mnist_gap\"\nlr = [0.1, 0.2]\n" + "[[config]]\nepochs = [1, 2, 3, 4, 5]\n" * 1001,
         "asks for 10,010 jobs"),
        ('[grid]\nmodel = "mnist_gap"\nepochs = 99999999999999999999999\n', "epochs = 99999999999999999999999: beyond"),
        ('[grid]\nmodel = "mnist_gap"\nlr = {a = 1}\n', "lr = {'a': 1}: give a value or a list of values"),
        ('[grid]\nmodel = "mnist_gap"\nlr = [[0.1, 0.2]]\n', "lr = [0.1, 0.2]: give a value or a list"),
        ('[grid]\nmodel = "mnist_gap"\nlr = nan\n', "lr = nan"),
        ('[grid]\nmodel = "mnist_gap"\nlr = inf\n', "lr = inf"),
        ("[grid]\nmodel = 5\n", "model = 5: a model is named by a string"),
        ("", "needs at least one model"),
        ('[grid]\nmodel = "mnist_gap"\n[[config]]\nbogus = 1\n', "config 1: unknown key 'bogus'"),
    ],
)
def test_bad_sweep_files_are_one_line_at_once(tmp_path, toml, fragment):
    path = tmp_path / "sweep.toml"
    path.write_text(toml)
    assert_quick_one_line(["sweep", "--file", str(path), "--results-dir", str(tmp_path / "r"), "--dry-run"],
                          fragment, within=5)
    assert not (tmp_path / "r").exists()


def test_a_grid_of_flags_over_the_cap_is_refused_before_it_is_expanded(tmp_path):
    lrs = ",".join(f"0.{i:05d}1" for i in range(2000))
    assert_quick_one_line(["sweep", "--model", "mnist_gap", "--lr", lrs, "--epochs", "1,2,3,4,5,6", "--dry-run",
                           "--results-dir", str(tmp_path / "r")], "asks for 12,000 jobs", within=5)


@pytest.mark.parametrize("kind", ["fifo", "folder", "too large", "not utf-8", "missing"])
def test_a_sweep_file_that_is_not_a_small_text_file_is_one_line(tmp_path, kind):
    path = tmp_path / "sweep.toml"
    if kind == "fifo":
        os.mkfifo(path)  # reading it would block forever
    elif kind == "folder":
        path.mkdir()
    elif kind == "too large":
        path.write_text('[grid]\nmodel = "mnist_gap"\n' + "# padding\n" * 200_000)
    elif kind == "not utf-8":
        path.write_bytes(b'[grid]\nmodel = "\xff\xfe"\n')
    fragment = {"fifo": "not a regular file", "folder": "sweep.toml", "too large": "larger than 1,048,576 bytes",
                "not utf-8": "not UTF-8", "missing": "cannot read sweep file"}[kind]
    assert_quick_one_line(["sweep", "--file", str(path), "--dry-run", "--results-dir", str(tmp_path / "r")],
                          fragment, within=5)


# --- jobs never train twice -------------------------------------------------------------------


def processes_with(*needles: str) -> list[int]:
    """Live processes whose command line holds every one of ``needles``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and all(n in command for n in needles):
            found.append(int(entry.name))
    return found


def job_processes(tmp_path: Path) -> list[int]:
    return processes_with("cnnbench.sweep.jobs", str(tmp_path))


def sweep_args(tmp_path: Path, data_dir: Path, log_dir: str) -> list[str]:
    return [str(BENCH), "sweep", *TINY, "--seeds", "2", "--jobs", "2", "--data-dir", str(data_dir),
            "--results-dir", str(tmp_path / "r"), "--log-dir", str(tmp_path / log_dir)]


def one_record_per_job(results: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in results.glob("*.json"):
        key = read_record(path).launch["job_key"]
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_killing_the_sweep_ends_its_jobs_and_a_repeat_trains_each_job_once(tmp_path, data_dir):
    driver = subprocess.Popen(sweep_args(tmp_path, data_dir, "logs1"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(job_processes(tmp_path)) < 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(job_processes(tmp_path)) == 2, "the sweep never started its two jobs"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 20
    while job_processes(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not job_processes(tmp_path), "job processes outlived the killed sweep"
    assert not list((tmp_path / "r").glob("*.claim"))
    again = subprocess.run(sweep_args(tmp_path, data_dir, "logs2"), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert sorted(one_record_per_job(tmp_path / "r").values()) == [1, 1]
    assert not list((tmp_path / "r").glob("*.claim")) and not list((tmp_path / "r").glob("*.ckpt"))


def test_two_sweeps_started_at_once_train_each_job_once(tmp_path, data_dir):
    sweeps = [subprocess.Popen(sweep_args(tmp_path, data_dir, f"logs{i}"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    outputs = [s.communicate(timeout=300) for s in sweeps]
    assert [s.returncode for s in sweeps] == [0, 0], outputs
    assert sorted(one_record_per_job(tmp_path / "r").values()) == [1, 1]
    trained = [p for i in (1, 2) for p in (tmp_path / f"logs{i}").glob("*.log") if "record: " in p.read_text()]
    assert len(trained) == 2  # each job's training ran in one of the two sweeps only
    assert not list((tmp_path / "r").glob("*.claim"))


# --- Ray fails fast, in one line ---------------------------------------------------------------------


@needs_ray
@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--ray-address", "127.0.0.1:1"], "--ray-address 127.0.0.1:1: nothing answers there"),
        (["--ray-address", "not an address"], "give auto, the head's HOST:PORT"),
        (["--ray-address", "127.0.0.1:99999"], "give auto, the head's HOST:PORT"),
        (["--ray-address", "no-such-host.invalid:6379"], "cannot resolve host"),
        (["--ray-cpus-per-job", "2", "--jobs", "1"], "no node can run a job needing 2 CPU"),
    ],
)
def test_ray_that_cannot_start_is_one_line_in_seconds(tmp_path, extra, fragment):
    assert_quick_one_line(["sweep", *TINY, "--launcher", "ray", *extra, "--results-dir", str(tmp_path / "r")],
                          fragment, within=30)
    assert not (tmp_path / "r").exists()


@needs_ray
def test_ray_auto_without_a_cluster_is_one_line_in_our_words(tmp_path, monkeypatch):
    if Path("/tmp/ray/ray_current_cluster").exists():
        pytest.skip("a Ray cluster runs on this machine")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert_quick_one_line(["sweep", *TINY, "--launcher", "ray", "--ray-address", "auto", "--results-dir",
                           str(tmp_path / "r")], "no Ray cluster runs on this machine", "ray start --head", within=30)
    assert not (tmp_path / "r").exists()


@needs_ray
def test_ray_refuses_a_gpu_this_machine_does_not_have_before_starting(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_quick_one_line(["sweep", *TINY, "--launcher", "ray", "--ray-gpus-per-job", "0.5", "--results-dir",
                           str(tmp_path / "r")], "needing 1 CPU and 0.5 GPU", "0 GPU", within=30)


@needs_ray
def test_ray_client_addresses_need_grpc_and_say_so(tmp_path):
    if importlib.util.find_spec("grpc") is not None:
        pytest.skip("grpc is installed: Ray's client mode can work")
    assert_quick_one_line(["sweep", *TINY, "--launcher", "ray", "--ray-address", "ray://127.0.0.1:10001",
                           "--results-dir", str(tmp_path / "r")], "pip install 'ray[client]'", within=30)


@needs_ray
def test_a_port_that_is_not_ray_times_out_in_one_line(tmp_path):
    with socket.socket() as listener:  # accepts connections, never speaks Ray
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        line = assert_quick_one_line(["sweep", *TINY, "--launcher", "ray", "--ray-address", address, "--ray-timeout",
                                      "3", "--results-dir", str(tmp_path / "r")], f"--ray-address {address}",
                                     within=30)
    assert "within 3 s" in line or "cannot join" in line, line
    assert not processes_with("cnnbench.plugins.launch_ray", address)  # the probe was killed


@needs_ray
def test_ctrl_c_of_a_ray_sweep_is_one_line(tmp_path, data_dir):
    args = [str(BENCH), "sweep", "--launcher", "ray", "--model", "mnist_gap", "--seeds", "2", "--epochs", "5",
            "--limit-train", "2048", "--limit-test", "256", "--jobs", "2", "--data-dir", str(data_dir),
            "--results-dir", "r", "--log-dir", "logs", "--no-progress"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "r").is_dir() and time.monotonic() < deadline:  # the jobs are claimed: Ray runs
        time.sleep(0.1)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - started < 20
    assert proc.returncode == 130, err
    assert [line for line in err.splitlines() if line.strip()] == [err.strip()]
    assert err.startswith("error: sweep interrupted")
    assert not list((tmp_path / "r").glob("*.claim"))
