"""One sweep job, run in this process with the same plan and loop as ``bench run``.

Launchers call ``run_job`` where the job should run: the local launcher in a fresh
``python -m cnnbench.jobs JOB.json`` process per job (its output is the job's log), Ray
inside a task on whichever node it schedules. With the local launcher, a job that was
interrupted earlier and left a checkpoint in the results folder is resumed rather than
started again (Ray tasks train in a temporary folder, so an interrupted Ray job starts over).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from .errors import BenchError, RunInterrupted, Terminated, on_sigterm
from .records import Job


def job_to_json(job: Job) -> dict[str, Any]:
    return dataclasses.asdict(job)


def job_from_json(data: dict[str, Any]) -> Job:
    return Job(data["key"], data["model"], int(data["seed"]), dict(data["overrides"]),
               tuple(data.get("plugin_modules", ())))


def find_job_checkpoint(results_dir: Path, key: str) -> dict[str, Any] | None:
    """The loaded checkpoint of an interrupted run of this job in ``results_dir``, if there is one."""
    from .checkpoint import incomplete_runs

    for path, state in incomplete_runs(results_dir):
        if ((state.get("overrides") or {}).get("launch") or {}).get("job_key") == key:
            if state.get("running"):
                raise BenchError(f"job {key} is running in another process ({path.name}); not starting it twice")
            return state
    return None


def run_job(job: Job, results_dir: str | Path, data_dir: str | None, threads: int | None,
            launch: dict[str, Any]) -> tuple[Any, Path]:
    """Train ``job`` (or resume its checkpoint) into ``results_dir``; returns ``(record, path)``."""
    from .plan import Overrides, make_plan
    from .registry import get_registry
    from .resume import resume_state

    launch = {**launch, "job_key": job.key, "node": launch.get("node") or socket.gethostname()}
    checkpoint = find_job_checkpoint(Path(results_dir), job.key)
    if checkpoint is not None:
        print(f"resuming {checkpoint['run']['run_id']}", flush=True)
        record = resume_state(checkpoint, results_dir, data_dir, progress=False)
        return record, Path(results_dir) / f"{record.run_id}.json"
    registry = get_registry(job.plugin_modules)
    overrides = Overrides(**{**job.overrides, "results_dir": str(results_dir), "data_dir": data_dir,
                             "threads": threads, "progress": False, "launch": launch})
    from .train import train

    return train(make_plan(registry, job.model, overrides), job.seed, registry.hook)


def main(argv: list[str] | None = None) -> int:
    """``python -m cnnbench.jobs SPEC.json``: run one job; exit 0 done, 2 diverged, 1 failed."""
    args = argv if argv is not None else sys.argv[1:]
    spec = json.loads(Path(args[0]).read_text())
    if spec.get("cuda_visible_devices") is not None:  # before torch initialises CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = spec["cuda_visible_devices"]
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
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


if __name__ == "__main__":
    sys.exit(main())
