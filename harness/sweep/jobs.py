"""One sweep job, run in this process with the same plan and loop as ``bench run``.

Launchers call ``run_job`` where the job should run: the local launcher in a fresh
``python -m cnnbench.sweep.jobs JOB.json`` process per job (its output is the job's log), Ray
inside a task on whichever node it schedules. With the local launcher, a job that was
interrupted earlier and left a checkpoint in the results folder is resumed rather than
started again (Ray tasks train in a temporary folder, so an interrupted Ray job starts over).

A job process dies with the sweep that started it: the kernel sends it SIGTERM when the sweep
ends, however it ends (``PR_SET_PDEATHSIG``; elsewhere than Linux, a thread watches the parent),
so it checkpoints and exits instead of training on for nobody. It holds the job's claim, passed
down by the sweep, until it exits, and removes the claim file on its way out (the sweep, which
waits for it, finds the file gone; a killed sweep cannot remove it).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cnnbench.errors import BenchError, RecordError, RunInterrupted, Terminated, UsageError, on_sigterm
from cnnbench.files import read_regular
from cnnbench.launcher import JobClaim, release_claim
from cnnbench.records import Job
from cnnbench.registry import get_registry
from cnnbench.runrecord import RunRecord, read_record
from cnnbench.training.plan import Overrides, make_plan
from cnnbench.verify.replay import verify_run
from cnnbench.verify.store import append_verification

MAX_SPEC_BYTES = 2**20
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def job_to_json(job: Job) -> dict[str, Any]:
    return dataclasses.asdict(job)


def job_from_json(data: dict[str, Any]) -> Job:
    task = data.get("task", "train")
    if task not in ("train", "verify"):
        raise ValueError(f"unknown job task {task!r}")
    return Job(data["key"], data["model"], int(data["seed"]), dict(data["overrides"]),
               tuple(data.get("plugin_modules", ())), task)


def find_job_checkpoint(results_dir: Path, key: str) -> dict[str, Any] | None:
    """The loaded checkpoint of an interrupted run of this job in ``results_dir``, if there is one."""
    from cnnbench.training.checkpoint import incomplete_runs  # lazy: torch

    for path, state in incomplete_runs(results_dir):
        if ((state.get("overrides") or {}).get("launch") or {}).get("job_key") == key:
            if state.get("running"):
                raise BenchError(f"job {key} is running in another process ({path.name}); not starting it twice")
            return state
    return None


def run_job(job: Job, results_dir: str | Path, data_dir: str | None, threads: int | None,
            launch: dict[str, Any]) -> tuple[RunRecord, Path]:
    """Train ``job`` (or resume its checkpoint) into ``results_dir``; returns ``(record, path)``. A verify
    job trains its recorded run again and appends the verification beside it (``RecordError`` when the
    run is not reproduced, so the job fails)."""
    if job.task == "verify":
        return verify_job(job, Path(results_dir), data_dir)
    from cnnbench.training.resume import resume_state  # lazy: torch
    from cnnbench.training.train import train  # lazy: torch

    launch = {**launch, "job_key": job.key, "node": launch.get("node") or socket.gethostname()}
    checkpoint = find_job_checkpoint(Path(results_dir), job.key)
    if checkpoint is not None:
        print(f"resuming {checkpoint['run']['run_id']}", flush=True)
        record = resume_state(checkpoint, results_dir, data_dir, progress=False)
        return record, Path(results_dir) / f"{record.run_id}.json"
    registry = get_registry(job.plugin_modules)
    overrides = Overrides(**{**job.overrides, "results_dir": str(results_dir), "data_dir": data_dir,
                             "threads": threads, "progress": False, "launch": launch})
    return train(make_plan(registry, job.model, overrides), job.seed, registry.hook)


def verify_job(job: Job, results_dir: Path, data_dir: str | None) -> tuple[RunRecord, Path]:
    path = results_dir / f"{job.overrides['run_id']}.json"
    try:
        record = read_record(path)
    except ValueError as exc:
        raise RecordError(f"{path}: not a readable run record ({exc})") from None
    verification = verify_run(record, path, data_dir, job.overrides.get("epochs"))
    written = append_verification(results_dir, record.run_id, verification)
    print(f"{record.run_id}: {verification['verdict']} ({written})", flush=True)
    if verification["verdict"] == "not reproduced":
        raise RecordError(f"run {record.run_id} not reproduced; see {written}")
    return record, path


def die_with_parent(parent: int) -> None:
    """SIGTERM this process when ``parent`` (the sweep) ends; ``Terminated`` now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        watched_by_kernel = sys.platform.startswith("linux") and libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) == 0
    except (OSError, AttributeError):
        watched_by_kernel = False
    if not watched_by_kernel:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="watch-sweep").start()
    if os.getppid() != parent:  # it ended before the watch began
        raise Terminated()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


def read_spec(path: str) -> dict[str, Any]:
    try:
        spec = json.loads(read_regular(path, MAX_SPEC_BYTES))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read job spec {path}: {exc}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("job"), dict):
        raise UsageError(f"job spec {path} has no job")
    return spec


def inherited_claim(spec: dict[str, Any]) -> JobClaim | None:
    """The job's claim, whose descriptor the sweep passed down (None when run without one)."""
    claim = spec.get("claim")
    if not isinstance(claim, dict):
        return None
    return JobClaim(str(spec["job"]["key"]), Path(claim["path"]), int(claim["fd"]))


def run_spec(spec: dict[str, Any]) -> int:
    """Run the job of ``spec``; exit 0 done, 2 diverged, 1 failed, 130/143 interrupted."""
    try:
        if spec.get("driver_pid"):
            die_with_parent(int(spec["driver_pid"]))
        record, path = run_job(job_from_json(spec["job"]), spec["results_dir"], spec.get("data_dir"),
                               spec.get("threads"), spec.get("launch") or {})
    except RunInterrupted as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print("error: interrupted before the run started", file=sys.stderr, flush=True)
        return 143 if isinstance(exc, Terminated) else 130
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"record: {path}", flush=True)
    if record.status == "diverged":
        print(f"error: diverged in epoch {record.n_epochs} (the record is marked diverged)", flush=True)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m cnnbench.sweep.jobs SPEC.json``: run one job (see ``run_spec`` for the exit code)."""
    signal.signal(signal.SIGTERM, on_sigterm)  # before anything can send it
    args = argv if argv is not None else sys.argv[1:]
    try:
        if len(args) != 1:
            raise UsageError("usage: python -m cnnbench.sweep.jobs SPEC.json")
        spec = read_spec(args[0])
        claim = inherited_claim(spec)
    except (UsageError, KeyError, TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    if spec.get("cuda_visible_devices") is not None:  # before torch initialises CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = spec["cuda_visible_devices"]
    try:
        return run_spec(spec)
    finally:  # the job is over, so its claim is: the sweep may be gone, and it finds the file removed
        if claim is not None:
            with contextlib.suppress(OSError):
                release_claim(claim)


if __name__ == "__main__":
    sys.exit(main())
