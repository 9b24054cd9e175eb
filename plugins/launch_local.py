"""The ``local`` launcher: a pool of job processes on this machine.

Each job runs in a fresh ``python -m cnnbench.jobs`` process whose output is the job's log,
so a crash ends one job, not the sweep. On CPU, N concurrent jobs split the cores (each gets
``cores // N`` torch threads, at least 1), so they never oversubscribe the machine; on a GPU
machine, ``--jobs-per-gpu K`` jobs share each visible GPU and each job sees only its own
(``CUDA_VISIBLE_DEVICES``). Records say how many jobs shared their device.
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
from pathlib import Path
from typing import Any

from cnnbench import hookimpl
from cnnbench.files import write_atomic
from cnnbench.jobs import job_to_json
from cnnbench.records import Job, JobResult, LauncherSpec, LaunchOptions


def visible_gpus() -> list[str]:
    """The ids to put in a job's ``CUDA_VISIBLE_DEVICES``: the ones this process may use."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    given = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return given[:count] if given else [str(i) for i in range(count)]


def last_line(path: Path, prefix: str) -> str | None:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.startswith(prefix)]
    return lines[-1][len(prefix):].strip() if lines else None


def uses_gpu(job: Job) -> bool:
    return str(job.overrides.get("device") or "auto").split(":")[0] in ("auto", "cuda")


class LocalLauncher:
    def __init__(self, options: LaunchOptions) -> None:
        self.options = options
        self.gpus = visible_gpus()
        self.children: set[subprocess.Popen] = set()
        self.lock = threading.Lock()

    def launch(self, jobs: list[Job], on_start: Callable[[Job], None],
               on_done: Callable[[JobResult], None]) -> list[JobResult]:
        cores = os.cpu_count() or 1
        slots = len(self.gpus) * self.options.jobs_per_gpu if self.gpus else cores
        concurrency = max(1, min(self.options.jobs or slots, len(jobs)))
        free_gpus: queue.Queue[str] = queue.Queue()
        for slot in range(len(self.gpus) * self.options.jobs_per_gpu):
            free_gpus.put(self.gpus[slot % len(self.gpus)])
        shared = min(concurrency, self.options.jobs_per_gpu) if self.gpus else concurrency
        run = {"launcher": "local", "jobs_on_device": shared, "concurrent_jobs": concurrency}
        threads = max(1, cores // concurrency)
        Path(self.options.log_dir).mkdir(parents=True, exist_ok=True)
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
                child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                child.kill()

    def run_one(self, job: Job, run: dict[str, Any], threads: int, free_gpus: queue.Queue[str],
                on_start: Callable[[Job], None]) -> JobResult:
        gpu = free_gpus.get() if self.gpus and uses_gpu(job) else None
        log_dir = Path(self.options.log_dir)
        spec_path, log_path = log_dir / f"{job.key}.json", log_dir / f"{job.key}.log"
        try:
            with self.lock:
                on_start(job)
            spec = {"job": job_to_json(job), "results_dir": self.options.results_dir,
                    "data_dir": self.options.data_dir, "threads": threads, "launch": run, "cuda_visible_devices": gpu}
            write_atomic(spec_path, json.dumps(spec))
            with open(log_path, "w") as log:
                # its own session: a Ctrl-C reaches the sweep, which passes it on as SIGTERM
                child = subprocess.Popen([sys.executable, "-m", "cnnbench.jobs", str(spec_path)], stdout=log,
                                         stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                         start_new_session=True)
                with self.lock:
                    self.children.add(child)
                code = child.wait()
                with self.lock:
                    self.children.discard(child)
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
