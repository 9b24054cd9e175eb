"""The ``local`` launcher: a pool of job processes on this machine.

Each job runs in a fresh ``python -m cnnbench.jobs`` process whose output is the job's log,
so a crash ends one job, not the sweep. On CPU, N concurrent jobs split the cores (each gets
``cores // N`` torch threads, at least 1), so they never oversubscribe the machine; on a GPU
machine, ``--jobs-per-gpu K`` jobs share each visible GPU and each job sees only its own
(``CUDA_VISIBLE_DEVICES``). Records say how many jobs shared their device.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from cnnbench import hookimpl
from cnnbench.jobs import job_to_json
from cnnbench.records import Job, JobResult, LauncherSpec, LaunchOptions


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def last_line(path: Path, prefix: str) -> str | None:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.startswith(prefix)]
    return lines[-1][len(prefix):].strip() if lines else None


class LocalLauncher:
    def __init__(self, options: LaunchOptions) -> None:
        self.options = options
        self.gpus = visible_gpus()
        cores = os.cpu_count() or 1
        slots = self.gpus * options.jobs_per_gpu if self.gpus else cores
        self.concurrency = max(1, options.jobs or slots)
        self.threads = max(1, cores // self.concurrency)

    def launch(self, jobs: list[Job], on_start: Callable[[Job], None],
               on_done: Callable[[JobResult], None]) -> list[JobResult]:
        concurrency = min(self.concurrency, len(jobs))
        free_gpus: queue.Queue[int] = queue.Queue()
        for slot in range(self.gpus * self.options.jobs_per_gpu):
            free_gpus.put(slot % self.gpus)
        shared = min(concurrency, self.options.jobs_per_gpu) if self.gpus else concurrency
        launch = {"launcher": "local", "jobs_on_device": shared, "concurrent_jobs": concurrency}
        Path(self.options.log_dir).mkdir(parents=True, exist_ok=True)
        results = []
        with ThreadPoolExecutor(concurrency) as pool:
            futures = [pool.submit(self.run_one, job, launch, free_gpus, on_start) for job in jobs]
            for future in as_completed(futures):
                results.append(future.result())
                on_done(results[-1])
        return results

    def run_one(self, job: Job, launch: dict[str, Any], free_gpus: queue.Queue[int],
                on_start: Callable[[Job], None]) -> JobResult:
        gpu = free_gpus.get() if self.gpus else None
        on_start(job)
        log_dir = Path(self.options.log_dir)
        spec_path, log_path = log_dir / f"{job.key}.json", log_dir / f"{job.key}.log"
        spec = {"job": job_to_json(job),
                "results_dir": self.options.results_dir, "data_dir": self.options.data_dir, "threads": self.threads,
                "launch": launch, "cuda_visible_devices": None if gpu is None else str(gpu)}
        spec_path.write_text(json.dumps(spec))
        try:
            with open(log_path, "w") as log:
                code = subprocess.run([sys.executable, "-m", "cnnbench.jobs", str(spec_path)], stdout=log,
                                      stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
        finally:
            if gpu is not None:
                free_gpus.put(gpu)
        record = last_line(log_path, "record: ")
        if code == 0 and record:
            return JobResult(job, True, record, log_path=str(log_path))
        error = last_line(log_path, "error: ") or f"exit code {code}"
        return JobResult(job, False, record, error=error, log_path=str(log_path))


@hookimpl
def cnnbench_launchers() -> list[LauncherSpec]:
    return [LauncherSpec("local", LocalLauncher, "a pool of job processes on this machine (cores or GPUs split)")]
