"""The launcher contract: a base class, each launcher's own prefixed options, claimed jobs.

Third-party launchers are written by the tests into a temporary folder and loaded with
``--plugin``; the ``inline`` one trains its jobs in this process, so these tests stay fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import ROOT

from cnnbench.cli import main
from cnnbench.errors import PluginError, UsageError
from cnnbench.launcher import LauncherOptions, claim_job, claim_jobs, option_fields, release_claim
from cnnbench.plugins.launch_ray import RayOptions
from cnnbench.records import LaunchOptions
from cnnbench.runrecord import read_record
from cnnbench.sweep import grid

TINY = ["--model", "mnist_gap", "--epochs", "1", "--limit-train", "256", "--limit-test", "256", "--no-progress"]

INLINE = '''
import os
from dataclasses import dataclass

from cnnbench import hookimpl
from cnnbench.launcher import Launcher, LauncherOptions, option
from cnnbench.records import JobResult, LauncherSpec
from cnnbench.sweep.jobs import run_job

SEEN = []  # (job key, whether its claim file existed while it ran)


@dataclass(frozen=True)
class InlineOptions(LauncherOptions):
    note: str = option("none", "A note written into each record's launch info.")
    repeat: int = option(1, "Unused; bounded.", low=1, high=5)


class InlineLauncher(Launcher[InlineOptions]):
    Options = InlineOptions

    def launch(self, jobs, on_start, on_done):
        results = []
        for job in jobs:
            on_start(job)
            SEEN.append((job.key, os.path.exists(self.claims[job.key].path)))
            record, path = run_job(job, self.settings.results_dir, self.settings.data_dir, 1,
                                   {"launcher": "inline", "note": self.options.note})
            results.append(JobResult(job, True, str(path)))
            on_done(results[-1])
        return results


@hookimpl
def cnnbench_launchers():
    return [LauncherSpec("inline", InlineLauncher, "trains in the sweep's own process")]
'''


def write_plugin(folder: Path, name: str, code: str, monkeypatch) -> str:
    (folder / f"{name}.py").write_text(textwrap.dedent(code))
    monkeypatch.syspath_prepend(str(folder))
    return name


def bench(*args: str):
    return CliRunner().invoke(main, list(args))


def assert_one_line(result, *fragments: str) -> str:
    assert result.exit_code != 0, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith("error: ") and all(f in lines[0] for f in fragments), lines[0]
    return lines[0]


# --- options: each launcher's own, named after it ----------------------------------------------


def test_sweep_help_lists_each_launchers_options_without_importing_torch_or_ray():
    code = ("import sys\nfrom cnnbench.cli import main\ntry:\n    main(['sweep', '--help'])\nexcept SystemExit as e:\n"
            "    assert not e.code\nheavy = [m for m in ('torch', 'ray', 'torchvision') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for flag in ("--local-jobs-per-gpu", "--ray-address", "--ray-gpus-per-job", "--ray-cpus-per-job",
                 "--ray-max-retries", "--ray-timeout"):
        assert flag in out, flag
    assert "--address" not in out.replace("--ray-address", "") and "--gpus-per-job" not in out.replace(
        "--ray-gpus-per-job", "")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--ray-address", "auto"], ["--ray-address is an option of the ray launcher", "--launcher local"]),
        (["--ray-gpus-per-job", "0.5"], ["--ray-gpus-per-job is an option of the ray launcher"]),
        (["--launcher", "ray", "--local-jobs-per-gpu", "2"], ["--local-jobs-per-gpu", "--launcher ray"]),
        (["--launcher", "ray", "--ray-gpus-per-job", "nan"], ["--ray-gpus-per-job", "not a finite number"]),
        (["--launcher", "ray", "--ray-gpus-per-job", "inf"], ["--ray-gpus-per-job", "not a finite number"]),
        (["--launcher", "ray", "--ray-gpus-per-job", "1.5"], ["--ray-gpus-per-job", "[0, 1]"]),
        (["--launcher", "ray", "--ray-gpus-per-job", "-0.5"], ["--ray-gpus-per-job", "[0, 1]"]),
        (["--launcher", "ray", "--ray-cpus-per-job", "0"], ["--ray-cpus-per-job", "[1, 1024]"]),
        (["--launcher", "ray", "--ray-max-retries", "99999999999999999999"], ["--ray-max-retries"]),
        (["--launcher", "ray", "--ray-max-retries", "1e3"], ["--ray-max-retries", "not a whole number"]),
        (["--launcher", "ray", "--ray-timeout", "0"], ["--ray-timeout", "[1, 3600]"]),
        (["--launcher", "ray", "--ray-address", " "], ["--ray-address", "characters"]),
        (["--launcher", "local", "--local-jobs-per-gpu", "0"], ["--local-jobs-per-gpu", "[1, 64]"]),
        (["--launcher", "nope"], ["unknown launcher 'nope'", "local, ray"]),
        (["--jobs", "0"], ["--jobs"]),
        (["--jobs", "100000"], ["--jobs"]),
    ],
)
def test_bad_launcher_options_are_one_line_before_anything_runs(tmp_path, args, fragments):
    result = bench("sweep", *TINY, "--results-dir", str(tmp_path / "r"), "--dry-run", *args)
    assert_one_line(result, *fragments)
    assert not (tmp_path / "r").exists()


def test_options_dataclasses_check_python_callers_too():
    assert RayOptions(gpus_per_job=0.25).gpus_per_job == 0.25
    with pytest.raises(UsageError, match="gpus_per_job"):
        RayOptions(gpus_per_job=float("nan"))
    with pytest.raises(UsageError, match="max_retries"):
        RayOptions(max_retries=True)
    fields = {f.name: f for f in option_fields(RayOptions)}
    assert fields["address"].optional and fields["cpus_per_job"].kind is int


# --- third-party launchers ------------------------------------------------------------------------


def test_a_third_party_launcher_runs_claimed_jobs_with_its_own_options(tmp_path, data_dir, monkeypatch):
    name = write_plugin(tmp_path, "inline_launcher", INLINE, monkeypatch)
    results = tmp_path / "r"
    result = bench("--plugin", name, "sweep", *TINY, "--seeds", "2", "--launcher", "inline", "--inline-note", "hi",
                   "--data-dir", str(data_dir), "--results-dir", str(results), "--log-dir", str(tmp_path / "logs"))
    assert result.exit_code == 0, result.output
    assert "--inline-note" in bench("--plugin", name, "sweep", "--help").output
    records = [read_record(p) for p in results.glob("*.json")]
    assert len(records) == 2 and {r.launch["note"] for r in records} == {"hi"}
    seen = sys.modules[name].SEEN
    assert len(seen) == 2 and all(existed for _, existed in seen)  # each job was claimed while it ran
    assert not list(results.glob("*.claim")) and not list(results.glob("*.tmp"))
    again = bench("--plugin", name, "sweep", *TINY, "--seeds", "2", "--launcher", "inline", "--data-dir",
                  str(data_dir), "--results-dir", str(results), "--log-dir", str(tmp_path / "logs"))
    assert again.exit_code == 0 and "2 already have records, 0 to run" in again.output and len(seen) == 2


def test_a_job_claimed_by_another_process_is_skipped_not_trained(tmp_path, data_dir, monkeypatch):
    name = write_plugin(tmp_path, "inline_launcher2", INLINE, monkeypatch)
    results = tmp_path / "r"
    args = ["--plugin", name, "sweep", *TINY, "--seeds", "2", "--launcher", "inline", "--data-dir", str(data_dir),
            "--results-dir", str(results)]
    plan = bench(*args, "--dry-run").output
    busy_key = plan.split("mnist_gap-s0-", 1)[1].split()[0]
    held = claim_job(results, f"mnist_gap-s0-{busy_key}")  # as another sweep would hold it
    assert held is not None
    try:
        result = bench(*args)
    finally:
        release_claim(held)
    assert result.exit_code == 0, result.output
    assert "skipped: mnist_gap seed 0" in result.output and "running in another process (pid " in result.output
    assert "1 of 1 jobs done" in result.output and "1 skipped" in result.output
    assert [read_record(p).seed for p in results.glob("*.json")] == [1]
    assert not list(results.glob("*.claim"))


def test_a_job_finished_between_plan_and_claim_is_not_trained_again(tmp_path, data_dir, monkeypatch):
    name = write_plugin(tmp_path, "inline_launcher3", INLINE, monkeypatch)
    results = tmp_path / "r"
    first = bench("--plugin", name, "sweep", *TINY, "--launcher", "inline", "--data-dir", str(data_dir),
                  "--results-dir", str(results))
    assert first.exit_code == 0, first.output
    [record] = [read_record(p) for p in results.glob("*.json")]
    module = sys.modules[name]
    jobs = grid.expand({"model": ["mnist_gap"], "epochs": [1], "limit_train": [256], "limit_test": [256]})
    assert [j.key for j in jobs] == [record.launch["job_key"]]
    settings = LaunchOptions(str(results), str(tmp_path / "logs"), str(data_dir), progress=False)
    launcher = module.InlineLauncher(settings, module.InlineOptions())
    outcome = grid.run_sweep(launcher, "inline", jobs, settings)  # as if planned before the record appeared
    assert outcome.results == [] and outcome.finished_elsewhere == [jobs[0].key]
    assert len(list(results.glob("*.json"))) == 1 and len(module.SEEN) == 1


BROKEN = {
    "not_a_class": ("LauncherSpec('odd', lambda options: None, 'x')", "must be a subclass of cnnbench.launcher"),
    "bad_name": ("LauncherSpec('Odd Name', Plain, 'x')", "lowercase letters, digits and '-'"),
    "clash": ("LauncherSpec('no', Clash, 'x')", "adds option --no-progress, which bench sweep has already"),
    "list_field": ("LauncherSpec('lists', Lists, 'x')", "a launcher option is a bool, int, float or str"),
    "missing_module": ("LauncherSpec('gone', 'no_such_module_xyz:Launcher', 'x')", "cannot import"),
}
BROKEN_CODE = '''
from dataclasses import dataclass, field

from cnnbench import hookimpl
from cnnbench.launcher import Launcher, LauncherOptions, option
from cnnbench.records import LauncherSpec


class Plain(Launcher):
    def launch(self, jobs, on_start, on_done):
        raise RuntimeError("launch exploded")


@dataclass(frozen=True)
class ClashOptions(LauncherOptions):
    progress: bool = option(False, "Clashes with --no-progress.")


class Clash(Plain):
    Options = ClashOptions


@dataclass(frozen=True)
class ListOptions(LauncherOptions):
    hosts: list = field(default_factory=list)


class Lists(Plain):
    Options = ListOptions


@hookimpl
def cnnbench_launchers():
    return [SPEC]
'''


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_launcher_plugin_is_one_line_naming_it(tmp_path, monkeypatch, case):
    spec, fragment = BROKEN[case]
    name = write_plugin(tmp_path, f"broken_launcher_{case}", BROKEN_CODE.replace("SPEC", spec), monkeypatch)
    assert_one_line(bench("--plugin", name, "sweep", *TINY, "--dry-run"), name, fragment)


@pytest.mark.parametrize("returns", ["raise", "wrong type"])
def test_a_launcher_that_fails_leaves_no_claim_behind(tmp_path, data_dir, monkeypatch, returns):
    body = 'raise RuntimeError("launch exploded")' if returns == "raise" else 'return "all fine"'
    code = BROKEN_CODE.replace("SPEC", "LauncherSpec('plain', Plain, 'x')").replace(
        'raise RuntimeError("launch exploded")', body)
    name = write_plugin(tmp_path, f"failing_launcher_{returns.replace(' ', '_')}", code, monkeypatch)
    result = bench("--plugin", name, "sweep", *TINY, "--launcher", "plain", "--data-dir", str(data_dir),
                   "--results-dir", str(tmp_path / "r"))
    line = result.output.strip().splitlines()[-1]
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert line.startswith("error: launcher 'plain'"), line
    assert ("RuntimeError: launch exploded" if returns == "raise" else "not a list of JobResult") in line
    assert not list((tmp_path / "r").glob("*.claim"))


# --- claims ----------------------------------------------------------------------------------------


def test_a_claim_is_exclusive_and_removed_when_released(tmp_path):
    first = claim_job(tmp_path, "job-a")
    assert first is not None and claim_job(tmp_path, "job-a") is None  # another open file: refused
    assert (tmp_path / "job-a.claim").read_text().startswith("pid ")
    release_claim(first)
    assert not (tmp_path / "job-a.claim").exists()
    again = claim_job(tmp_path, "job-a")
    assert again is not None
    release_claim(again)


def test_a_stale_claim_file_of_a_killed_sweep_is_taken_over(tmp_path):
    (tmp_path / "job-b.claim").write_text("pid 1 on elsewhere\n")  # left unlocked by a SIGKILL
    claim = claim_job(tmp_path, "job-b")
    assert claim is not None
    release_claim(claim)
    assert not (tmp_path / "job-b.claim").exists()


def test_releasing_never_removes_a_newer_claim(tmp_path):
    old = claim_job(tmp_path, "job-c")
    assert old is not None
    (tmp_path / "job-c.claim").unlink()  # its holder (the job process) removed it on its way out ...
    newer = claim_job(tmp_path, "job-c")  # ... and another sweep claimed the job again
    assert newer is not None
    release_claim(old)  # the first sweep releases late: the newer claim stays
    assert (tmp_path / "job-c.claim").exists() and claim_job(tmp_path, "job-c") is None
    release_claim(newer)


def test_claims_are_released_whatever_ends_the_block(tmp_path):
    with pytest.raises(KeyboardInterrupt), claim_jobs(tmp_path, ["x", "y"]) as (claims, elsewhere):
        assert set(claims) == {"x", "y"} and not elsewhere
        raise KeyboardInterrupt
    assert not list(tmp_path.glob("*.claim"))
    holder = claim_job(tmp_path, "x")
    with claim_jobs(tmp_path, ["x", "y"]) as (claims, elsewhere):
        assert set(claims) == {"y"} and elsewhere["x"].startswith("pid ")
    assert holder is not None
    release_claim(holder)


def test_a_claim_passed_to_a_job_process_outlives_the_sweeps_descriptor(tmp_path):
    claim = claim_job(tmp_path, "job-d")
    assert claim is not None
    code = "import sys, time; time.sleep(1.5)"
    child = subprocess.Popen([sys.executable, "-c", code], pass_fds=(claim.fd,))
    os.close(claim.fd)  # the sweep is gone; the job process still holds the lock
    assert claim_job(tmp_path, "job-d") is None
    child.wait()
    taken = claim_job(tmp_path, "job-d")
    assert taken is not None
    release_claim(taken)
    assert not claim.path.exists()


def test_the_launcher_options_base_refuses_a_non_dataclass():
    with pytest.raises(PluginError):
        option_fields(dict)
    assert option_fields(LauncherOptions) == []
