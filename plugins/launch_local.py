"""The ``local`` launcher: a pool of job processes on this machine.

Each job runs in a fresh ``python -m cnnbench.sweep.jobs`` process whose output is the job's log,
so a crash ends one job, not the sweep. On CPU, N concurrent jobs split the cores (each gets
``cores // N`` torch threads, at least 1), so they never oversubscribe the machine; on a GPU
machine, ``--local-jobs-per-gpu K`` jobs share each visible GPU and each job sees only its own
(``CUDA_VISIBLE_DEVICES``). Records say how many jobs shared their device.

A job process holds its job's claim (the sweep passes the descriptor down) and dies with the
sweep: a killed sweep leaves no job training on, and no second sweep starts a job still running.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnbench import hookimpl
from cnnbench.files import write_atomic
from cnnbench.launcher import Launcher, LauncherOptions, option
from cnnbench.records import Job, JobResult, LauncherSpec, LaunchOptions
from cnnbench.sweep.jobs import job_to_json

STOP_SECONDS = 120  # a job checkpoints and exits within this after SIGTERM, or is killed


@dataclass(frozen=True)
class LocalOptions(LauncherOptions):
    jobs_per_gpu: int = option(1, "On a GPU machine: jobs sharing each visible GPU.", low=1, high=64)


def visible_gpus() -> list[str]:
    """The ids to put in a job's ``CUDA_VISIBLE_DEVICES``: the ones this process may use."""
    import torch  # lazy: torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    given = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return given[:count] if given else [str(i) for i in range(count)]


def last_line(path: Path, prefix: str) -> str | None:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.startswith(prefix)]
    return lines[-1][len(prefix):].strip() if lines else None


def uses_gpu(job: Job) -> bool:
    return str(job.overrides.get("device") or "auto").split(":")[0] in ("auto", "cuda")


class LocalLauncher(Launcher[LocalOptions]):
    Options = LocalOptions
    shares_results_dir = True  # each job is a process on this machine, in the results folder

    def __init__(self, settings: LaunchOptions, options: LocalOptions) -> None:
        super().__init__(settings, options)
        self.gpus: list[str] = []
        self.children: set[subprocess.Popen[bytes]] = set()
        self.lock = threading.Lock()

    def start(self) -> None:
        self.gpus = visible_gpus()

    def launch(self, jobs: list[Job], on_start: Callable[[Job], None],
               on_done: Callable[[JobResult], None]) -> list[JobResult]:
        cores = os.cpu_count() or 1
        per_gpu = self.options.jobs_per_gpu
        slots = len(self.gpus) * per_gpu if self.gpus else cores
        concurrency = max(1, min(self.settings.jobs or slots, len(jobs)))
        free_gpus: queue.Queue[str] = queue.Queue()
        for slot in range(len(self.gpus) * per_gpu):
            free_gpus.put(self.gpus[slot % len(self.gpus)])
        shared = min(concurrency, per_gpu) if self.gpus else concurrency
        run = {"launcher": "local", "jobs_on_device": shared, "concurrent_jobs": concurrency}
        threads = max(1, cores // concurrency)
        Path(self.settings.log_dir).mkdir(parents=True, exist_ok=True)
        results: list[JobResult] = []
        pool = ThreadPoolExecutor(concurrency)
        try:
            futures = [pool.submit(self.run_one, job, run, threads, free_gpus, on_start) for job in jobs]
            for future in as_completed(futures):
                results.append(future.result())
                on_done(results[-1])
        except BaseException:  # Ctrl-C, SIGTERM or a launcher error: queued jobs never start
            pool.shutdown(wait=False, cancel_futures=True)
            self.stop_children()
            raise
        pool.shutdown()
        return results

    def stop_children(self) -> None:
        """Pass the interruption on: each running job checkpoints and exits; wait for them."""
        with self.lock:
            children = list(self.children)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def job_spec(self, job: Job, run: dict[str, Any], threads: int, gpu: str | None) -> dict[str, Any]:
        """What the job process is told: the job, where to write, and the claim it inherits."""
        claim = self.claims.get(job.key)
        return {"job": job_to_json(job), "results_dir": self.settings.results_dir, "data_dir": self.settings.data_dir,
                "threads": threads, "launch": run, "cuda_visible_devices": gpu, "driver_pid": os.getpid(),
                "claim": {"path": str(claim.path), "fd": claim.fd} if claim else None}

    def run_one(self, job: Job, run: dict[str, Any], threads: int, free_gpus: queue.Queue[str],
                on_start: Callable[[Job], None]) -> JobResult:
        gpu = free_gpus.get() if self.gpus and uses_gpu(job) else None
        log_dir = Path(self.settings.log_dir)
        spec_path, log_path = log_dir / f"{job.key}.json", log_dir / f"{job.key}.log"
        try:
            with self.lock:
                on_start(job)
            write_atomic(spec_path, json.dumps(self.job_spec(job, run, threads, gpu)))
            claim = self.claims.get(job.key)
            code = self.run_process(spec_path, log_path, (claim.fd,) if claim else ())
        finally:
            if gpu is not None:
                free_gpus.put(gpu)
        record = last_line(log_path, "record: ")
        if code == 0 and record:
            return JobResult(job, True, record, log_path=str(log_path))
        error = last_line(log_path, "error: ") or f"exit code {code}"
        return JobResult(job, False, record, error=error, log_path=str(log_path))

    def run_process(self, spec_path: Path, log_path: Path, claim_fds: tuple[int, ...]) -> int:
        """``python -m cnnbench.sweep.jobs SPEC`` with the job's claim; its exit code."""
        with open(log_path, "w") as log:
            # its own session: a Ctrl-C reaches the sweep, which passes it on as SIGTERM
            child = subprocess.Popen([sys.executable, "-m", "cnnbench.sweep.jobs", str(spec_path)], stdout=log,
                                     stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                     start_new_session=True, pass_fds=claim_fds)
            with self.lock:
                self.children.add(child)
            try:
                return child.wait()
            finally:
                with self.lock:
                    self.children.discard(child)


@hookimpl
def cnnbench_launchers() -> list[LauncherSpec]:
    return [LauncherSpec("local", LocalLauncher, "a pool of job processes on this machine (cores or GPUs split)")]
