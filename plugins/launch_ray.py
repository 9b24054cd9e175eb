"""The ``ray`` launcher (extra ``cnnbench[ray]``): one Ray task per job, on this machine or a cluster.

``--ray-address`` joins an existing cluster (``auto``, or the head's ``HOST:6379``); without it a
local Ray instance is started (``--jobs N`` caps its CPUs; ``RAY_ADDRESS`` is not used) and shut
down afterwards. Each task trains into a temporary folder on its worker and returns the record,
the weights and its log to the driver, which writes them into the results folder: the cluster
needs no shared filesystem. Each node needs cnnbench (with the plugins the sweep uses) installed
and the datasets at ``--data-dir`` or its own ``$BENCH_DATA_DIR``. A task whose worker or node
dies is retried (``--ray-max-retries``); a job that fails by itself (a bad value, NaN) is not.
Fractional ``--ray-gpus-per-job`` lets several small jobs share a GPU under Ray's scheduler.

Ray fails fast here: the address is checked (a TCP connection), the cluster's resources are read
by a probe process killed after ``--ray-timeout`` seconds (a local instance's are checked against
this machine before it starts), and a job that no node has the CPUs or GPUs for is refused, all
before anything is submitted; Ray's own log lines are silenced.
Ray's client (``ray://HOST:10001``) needs ``ray[client]`` (grpcio), which the ``ray`` extra does
not install: such an address is refused in one line unless grpc is importable.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnbench import hookimpl
from cnnbench.errors import BenchError, UsageError
from cnnbench.files import write_atomic
from cnnbench.launcher import Launcher, LauncherOptions, option
from cnnbench.records import Job, JobResult, LauncherSpec
from cnnbench.registry import first_line
from cnnbench.runrecord import RunRecord, write_record
from cnnbench.sweep.jobs import job_from_json, job_to_json, run_job

INSTALL_HINT = "pip install 'cnnbench[ray]'"
CLIENT_HINT = "pip install 'ray[client]' (grpcio), or run bench sweep on the head node with --ray-address auto"
CANCEL_SECONDS = 10  # a cancelled task stops within this, or its worker is killed
ADDRESS = re.compile(r"(?P<client>ray://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(?P<port>\d{1,5})")


@dataclass(frozen=True)
class RayOptions(LauncherOptions):
    address: str | None = option(None, "Join this cluster (auto, or the head's HOST:6379) instead of starting a "
                                 "local Ray instance; ray://HOST:10001 needs ray[client].", metavar="ADDRESS")
    gpus_per_job: float = option(0.0, "GPUs per job (0.25: four jobs share one).", low=0, high=1)
    cpus_per_job: int = option(1, "CPU cores (and torch threads) per job.", low=1, high=1024)
    max_retries: int = option(3, "Retries of a job whose worker or node died.", low=0, high=100)
    timeout: float = option(30.0, "Seconds to start or join Ray and read its resources before giving up.",
                            low=1, high=3600)


def ray_job(job_json: dict[str, Any], data_dir: str | None, threads: int, launch: dict[str, Any]) -> dict[str, Any]:
    """Runs inside a Ray worker: train one job in a temporary folder and return what it wrote."""
    import ray  # lazy: ray

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


# --- failing fast -------------------------------------------------------------------------


def parse_address(address: str) -> tuple[bool, str, int] | None:
    """``(client mode, host, port)`` of ``HOST:PORT`` or ``ray://HOST:PORT``; None for ``auto``."""
    if address == "auto":
        return None
    match = ADDRESS.fullmatch(address)
    if not match or not 0 < int(match["port"]) < 65536:
        raise UsageError(f"--ray-address {address!r}: give auto, the head's HOST:PORT (e.g. 10.0.0.5:6379) "
                         "or ray://HOST:10001")
    return bool(match["client"]), match["host"].strip("[]"), int(match["port"])


def check_reachable(address: str, host: str, port: int, timeout: float) -> None:
    """A TCP connection to the head: a wrong address fails in seconds instead of Ray's minutes of retries."""
    try:
        socket.create_connection((host, port), timeout=min(timeout, 5.0)).close()
    except socket.gaierror:
        raise UsageError(f"--ray-address {address}: cannot resolve host {host!r}") from None
    except TimeoutError:
        raise UsageError(f"--ray-address {address}: no answer within {min(timeout, 5.0):g} s") from None
    except OSError as exc:
        raise UsageError(f"--ray-address {address}: nothing answers there ({exc.strerror or exc}); start the "
                         "head with `ray start --head` or check the address") from None


def probe_cluster(address: str, timeout: float) -> list[dict[str, float]]:
    """The resources of each live node, read by a separate process that is killed after ``timeout``
    seconds: Ray's connection retries cannot be cut short from inside the process that runs them."""
    command = [sys.executable, "-m", "cnnbench.plugins.launch_ray", address]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(child)
        _, err = child.communicate()
        raise UsageError(f"--ray-address {address}: no Ray cluster answered within {timeout:g} s (--ray-timeout)"
                         f"{why_not_joined(err) or '; check the address and that the head runs'}") from None
    except BaseException:  # Ctrl-C: the probe goes too
        stop_group(child)
        raise
    lines = out.strip().splitlines()
    if child.returncode != 0 or not lines:
        why = lines[-1].removeprefix("error: ") if lines else f"the probe exited with {child.returncode}"
        if "Could not find any running Ray instance" in why:
            raise UsageError(f"--ray-address {address}: no Ray cluster runs on this machine; start one with "
                             "`ray start --head`, or give the head's HOST:6379")
        raise UsageError(f"--ray-address {address}: cannot join the cluster ({why}){why_not_joined(err)}")
    try:
        return [{str(k): float(v) for k, v in node.items()} for node in json.loads(lines[-1])]
    except (ValueError, TypeError, AttributeError):
        raise UsageError(f"--ray-address {address}: the cluster's resources could not be read") from None


def why_not_joined(ray_log: str) -> str:
    """What Ray's own log lines (silenced) say about a failed connection, when it is something to fix."""
    if "InvalidAuthToken" in ray_log or "Authentication token" in ray_log:
        return ("; the cluster uses Ray's token authentication: set RAY_AUTH_MODE=token (the token is "
                "~/.ray/auth_token or $RAY_AUTH_TOKEN)")
    return ""


def stop_group(child: subprocess.Popen[str]) -> None:
    """Kill a probe and whatever it started (it runs in its own process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def check_resources(nodes: list[dict[str, float]], cpus: int, gpus: float,
                    where: str = "the cluster's nodes have") -> None:
    """Some live node can run one job: Ray would otherwise wait forever for resources that never come."""
    if any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        return
    have = "; ".join(f"{n.get('CPU', 0):g} CPU, {n.get('GPU', 0):g} GPU" for n in nodes) or "no live node"
    raise UsageError(f"ray: no node can run a job needing {cpus} CPU and {gpus:g} GPU (--ray-cpus-per-job, "
                     f"--ray-gpus-per-job); {where}: {have}")


def live_nodes() -> list[dict[str, float]]:
    import ray  # lazy: ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


@contextlib.contextmanager
def keep_sigterm_handler() -> Iterator[None]:
    """``ray.init`` replaces the SIGTERM handler (with one that exits): put bench's back."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, TypeError):  # not the main thread: ray.init left it alone too
            signal.signal(signal.SIGTERM, handler)


def cancel(refs: list[Any]) -> None:
    """Stop running tasks: first as Ctrl-C stops a run (each cleans its temporary folder up), then,
    after ``CANCEL_SECONDS``, by killing their workers."""
    import ray  # lazy: ray

    for force in (False, True):
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=force)
        if not force:
            with contextlib.suppress(Exception):
                _, refs = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_SECONDS)
        if not refs:
            return


# --- the launcher -----------------------------------------------------------------------------


class RayLauncher(Launcher[RayOptions]):
    Options = RayOptions
    jobs_run_here = False  # the cluster's devices count, not this machine's
    started_ray = False

    def check(self, jobs: list[Job]) -> None:
        """What can be refused at once: CUDA jobs without GPUs, a bad or unreachable address, a job a
        local instance on this machine cannot fit."""
        on_gpu = [j for j in jobs if str(j.overrides.get("device") or "").startswith("cuda")]
        if on_gpu and not self.options.gpus_per_job:
            raise UsageError(f"{on_gpu[0].label()} asks for CUDA, but Ray gives a task no GPU unless "
                             "--ray-gpus-per-job is set (e.g. 0.25 for four jobs per GPU)")
        address = self.options.address
        parsed = parse_address(address) if address else None
        if address and parsed:
            if parsed[0] and importlib.util.find_spec("grpc") is None:
                raise UsageError(f"--ray-address {address}: Ray's client mode needs grpcio, which the 'ray' extra "
                                 f"does not install: {CLIENT_HINT}")
            check_reachable(address, parsed[1], parsed[2], self.options.timeout)
        if not address:
            self.check_this_machine()

    def check_this_machine(self) -> None:
        """A local instance has this machine's CPUs (at most ``--jobs``) and GPUs: refuse a job that
        cannot fit before Ray starts."""
        import torch  # lazy: torch

        cpus = self.settings.jobs or os.cpu_count() or 1
        gpus = torch.cuda.device_count() if self.options.gpus_per_job else 0
        check_resources([{"CPU": float(cpus), "GPU": float(gpus)}], self.options.cpus_per_job,
                        self.options.gpus_per_job, "a local instance on this machine has (--jobs caps its CPUs)")

    def start(self) -> None:
        """Join the cluster (or start a local instance) and check it can run a job, within the time limit."""
        import ray  # lazy: ray

        if ray.is_initialized():  # a caller's own Ray session: used as it is, and left running
            check_resources(live_nodes(), self.options.cpus_per_job, self.options.gpus_per_job)
            return
        address = self.options.address
        if address:  # its syntax and reachability were checked before the plan was printed
            check_resources(probe_cluster(address, self.options.timeout), self.options.cpus_per_job,
                            self.options.gpus_per_job)
        self.init_ray(address)
        self.started_ray = True
        check_resources(live_nodes(), self.options.cpus_per_job, self.options.gpus_per_job)

    def init_ray(self, address: str | None) -> None:
        import ray  # lazy: ray

        saved = os.environ.get("PYTHONPATH")
        try:
            with keep_sigterm_handler():
                if address:
                    ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
                else:
                    # local workers import what this process imports, --plugin modules from this folder too
                    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), saved) if p)
                    ray.init(address="local", num_cpus=self.settings.jobs, include_dashboard=False,
                             log_to_driver=False, logging_level=logging.ERROR)
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError ...
            where = address or "a local instance"
            raise UsageError(f"ray: cannot start or join {where} ({type(exc).__name__}: {first_line(exc)})") from None
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved

    def stop(self) -> None:
        import ray  # lazy: ray

        if self.started_ray:
            with keep_sigterm_handler():
                ray.shutdown()
            self.started_ray = False

    def launch(self, jobs: list[Job], on_start: Callable[[Job], None],
               on_done: Callable[[JobResult], None]) -> list[JobResult]:
        import ray  # lazy: ray

        cpus, gpus = self.options.cpus_per_job, self.options.gpus_per_job
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=self.options.max_retries)(ray_job)
        launch = {"launcher": "ray", "jobs_on_device": self.jobs_on_device(len(jobs)), "cpus_per_job": cpus,
                  "gpus_per_job": gpus}
        refs: dict[Any, Job] = {}
        pending: list[Any] = []
        try:
            for job in jobs:
                refs[task.remote(job_to_json(job), self.settings.data_dir, cpus, launch)] = job
                on_start(job)
            results, pending = [], list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                results.append(self.collect(refs[done[0]], done[0]))
                on_done(results[-1])
            return results
        except BaseException:  # on a cluster that outlives this sweep, nothing runs for nobody
            cancel(pending or list(refs))
            raise

    def jobs_on_device(self, count: int) -> int:
        """How many jobs share a device: a GPU's fraction, or as many CPU jobs as one node holds."""
        if self.options.gpus_per_job:
            return max(1, round(1 / self.options.gpus_per_job))
        node_cpus = max((int(n.get("CPU", 1)) for n in live_nodes()), default=1)
        return max(1, min(count, node_cpus // self.options.cpus_per_job))

    def collect(self, job: Job, ref: Any) -> JobResult:
        """Write what a task returned (record, weights, log) into the results and log folders."""
        import ray  # lazy: ray

        log_path = Path(self.settings.log_dir) / f"{job.key}.log"
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
        path = write_record(record, Path(self.settings.results_dir), out["weights"])
        return JobResult(job, out["ok"], str(path), error=out["error"], log_path=str(log_path))


@hookimpl
def cnnbench_launchers() -> list[LauncherSpec]:
    return [LauncherSpec("ray", RayLauncher, "one Ray task per job, on a local instance or a cluster (--ray-address)",
                         requires=("ray",), install_hint=INSTALL_HINT)]


def probe_main(argv: list[str]) -> int:
    """``python -m cnnbench.plugins.launch_ray ADDRESS``: print the live nodes' resources as JSON."""
    import ray  # lazy: ray

    try:
        ray.init(address=argv[0], log_to_driver=False, logging_level=logging.ERROR)
        print(json.dumps(live_nodes()), flush=True)
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {first_line(exc)}", flush=True)
        return 1
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(probe_main(sys.argv[1:]))
