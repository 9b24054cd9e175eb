"""The ``ray`` launcher (extra ``cnnbench[ray]``): one Ray task per job, on this machine or a cluster.

``--address`` joins an existing cluster (``auto``, or ``ray://head:10001``); without it a local
Ray instance is started (``--jobs N`` caps its CPUs) and shut down afterwards. Each task
trains into a temporary folder on its worker and returns the record, the weights and its log
to the driver, which writes them into the results folder: the cluster needs no shared
filesystem. Each node needs cnnbench (with the plugins the sweep uses) installed and the
datasets at ``--data-dir`` or its own ``$BENCH_DATA_DIR``. A task whose worker or node dies is
retried (``--max-retries``, default 3); a job that fails by itself (a bad value, NaN) is not.
Fractional ``--gpus-per-job`` lets several small jobs share a GPU under Ray's scheduler.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnbench import BenchError, hookimpl
from cnnbench.files import write_atomic
from cnnbench.jobs import job_from_json, job_to_json
from cnnbench.records import Job, JobResult, LauncherSpec, LaunchOptions
from cnnbench.registry import first_line
from cnnbench.runrecord import RunRecord, write_record

INSTALL_HINT = "pip install 'cnnbench[ray]'"


def ray_job(job_json: dict[str, Any], data_dir: str | None, threads: int, launch: dict[str, Any]) -> dict[str, Any]:
    """Runs inside a Ray worker: train one job in a temporary folder and return what it wrote."""
    import ray

    from cnnbench.jobs import run_job

    node = f"{socket.gethostname()} ({ray.get_runtime_context().get_node_id()[:12]})"
    log = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="cnnbench-ray-") as tmp:
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                record, path = run_job(job_from_json(job_json), tmp, data_dir, threads, {**launch, "node": node})
        except BenchError as exc:
            return {"ok": False, "error": str(exc), "log": log.getvalue()}
        except Exception as exc:  # a bug in plugin code: report it with the log instead of losing both
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "log": log.getvalue()}
        weights = Path(tmp) / record.weights if record.weights else None
        return {
            "ok": record.status != "diverged", "error": "diverged" if record.status == "diverged" else "",
            "record": path.read_bytes(), "log": log.getvalue(), "weights": weights.read_bytes() if weights else None,
        }


class RayLauncher:
    def __init__(self, options: LaunchOptions) -> None:
        self.options = options

    def start(self) -> bool:
        """Connect to the cluster (or start a local instance); True when this launcher started it."""
        import ray

        if ray.is_initialized():
            return False
        saved = os.environ.get("PYTHONPATH")
        try:
            if self.options.address:
                ray.init(address=self.options.address, log_to_driver=False)
            else:
                # local workers import what this process imports, --plugin modules from this folder too
                os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), saved) if p)
                ray.init(num_cpus=self.options.jobs, include_dashboard=False, log_to_driver=False)
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError (RAY_ADDRESS set) ...
            where = self.options.address or "a local instance"
            raise BenchError(f"ray: cannot start or join {where} ({type(exc).__name__}: {first_line(exc)})") from None
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
        return True

    def launch(self, jobs: list[Job], on_start: Callable[[Job], None],
               on_done: Callable[[JobResult], None]) -> list[JobResult]:
        import ray

        on_gpu = [j for j in jobs if str(j.overrides.get("device") or "").startswith("cuda")]
        if on_gpu and not self.options.gpus_per_job:
            raise BenchError(f"{on_gpu[0].label()} asks for CUDA, but Ray gives a task no GPU unless "
                             "--gpus-per-job is set (e.g. 0.25 for four jobs per GPU)")
        started = self.start()
        pending: list[Any] = []
        try:
            cpus = self.options.cpus_per_job or 1
            task = ray.remote(num_cpus=cpus, num_gpus=self.options.gpus_per_job,
                              max_retries=self.options.max_retries)(ray_job)
            if self.options.gpus_per_job:
                shared = max(1, round(1 / self.options.gpus_per_job))
            else:  # CPU jobs: as many as one node's CPUs hold share that node
                node_cpus = max(int(n["Resources"].get("CPU", 1)) for n in ray.nodes() if n.get("Alive"))
                shared = max(1, min(len(jobs), node_cpus // cpus))
            launch = {"launcher": "ray", "jobs_on_device": shared, "cpus_per_job": cpus,
                      "gpus_per_job": self.options.gpus_per_job}
            refs = {}
            for job in jobs:
                refs[task.remote(job_to_json(job), self.options.data_dir, cpus, launch)] = job
                on_start(job)
            results, pending = [], list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                results.append(self.collect(refs[done[0]], done[0]))
                on_done(results[-1])
            return results
        except BaseException:
            for ref in pending:  # on a cluster that outlives this sweep, nothing keeps running for nobody
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            raise
        finally:
            if started:
                ray.shutdown()

    def collect(self, job: Job, ref: Any) -> JobResult:
        """Write what a task returned (record, weights, log) into the results and log folders."""
        import ray

        log_path = Path(self.options.log_dir) / f"{job.key}.log"
        try:
            out = ray.get(ref)
        except ray.exceptions.RayError as exc:
            message = " ".join(str(exc).split())[:300]
            write_atomic(log_path, f"{type(exc).__name__}: {exc}\n")
            return JobResult(job, False, error=f"{type(exc).__name__}: {message}", log_path=str(log_path))
        write_atomic(log_path, out["log"])
        if "record" not in out:
            return JobResult(job, False, error=out["error"], log_path=str(log_path))
        record = RunRecord.from_json(json.loads(out["record"]))
        path = write_record(record, Path(self.options.results_dir), out["weights"])
        return JobResult(job, out["ok"], str(path), error=out["error"], log_path=str(log_path))


@hookimpl
def cnnbench_launchers() -> list[LauncherSpec]:
    return [LauncherSpec("ray", RayLauncher, "one Ray task per job, on a local instance or a cluster (--address)",
                         requires=("ray",), install_hint=INSTALL_HINT)]

