"""Sweeps: a grid of runs (from flags or a TOML file) handed to a launcher plugin.

A sweep expands to jobs: model x every option's values x seeds; with ``[[config]]`` tables,
each configuration (taking the grid's values for what it does not set) instead of the bare
grid. A value equal to the model's own default does not change a job. Every job has a key made of
its configuration and seed, which its record stores (``launch.job_key``): running the same sweep
again skips the jobs whose records exist, so an interrupted sweep is finished by repeating its
command. A key names the configuration as asked: after a model's recipe changes, use a new
results folder. Everything is checked (names, values, each job's plan) before the first job starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import time
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import BenchError
from .plan import DEFAULT_LOADER, Overrides, make_plan
from .records import Job, JobResult, LaunchOptions
from .registry import Registry
from .runrecord import RunRecord, iter_records

# Overrides that say where output goes or how fast it runs, not what is run: not part of a job's key.
# Not sweep keys: output-only settings, and --fused (a sweep job is one seed; fusing is bench run's)
NOT_IN_KEY = {"results_dir", "data_dir", "threads", "progress", "save_weights", "launch", "fused"}
# what a sweep may vary: the model, the seeds and every Overrides field that is part of a key
SWEEP_KEYS = ("model", "seeds", *sorted(f.name for f in dataclasses.fields(Overrides) if f.name not in NOT_IN_KEY))
DEFAULTS = Overrides()


def job_key(model: str, seed: int, overrides: dict[str, Any]) -> str:
    """``model-sSEED-hash``: the same configuration and seed give the same key in every sweep."""
    relevant = {k: v for k, v in sorted(overrides.items())
                if k not in NOT_IN_KEY and v is not None and v != getattr(DEFAULTS, k)}
    digest = hashlib.sha1(json.dumps([model, seed, relevant], sort_keys=True).encode()).hexdigest()[:10]
    return f"{model}-s{seed}-{digest}"


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def seeds_of(value: Any) -> list[int]:
    """``5`` -> 0..4; ``[1, 2]`` -> [1, 2]."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise BenchError(f"seeds = {value}: give a count of at least 1 or a list")
        return list(range(value))
    seeds = as_list(value)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise BenchError(f"seeds = {value!r}: give a count (5) or a list of seeds ([0, 1, 2])")
    return seeds


def canonical(registry: Registry | None, model: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without the ones that equal what the model runs anyway (``--loader memory``, its own
    normalizer, its recipe's epochs ...), so asking for a default does not make a new job."""
    try:
        spec = registry.model(model) if registry is not None else None
    except BenchError:
        return values  # check_jobs reports the unknown model
    if spec is None:
        return values
    defaults = {**dataclasses.asdict(spec.recipe), "normalizer": spec.normalizer, "loader": DEFAULT_LOADER}
    return {k: v for k, v in values.items() if not (k in defaults and defaults[k] == v)}


def expand(grid: dict[str, Any], configs: Iterable[dict[str, Any]] = (), plugin_modules: tuple[str, ...] = (),
           registry: Registry | None = None) -> list[Job]:
    """Jobs of a grid (every combination of its lists) and of explicit configurations (each
    taking the grid's values for what it does not set), times their seeds."""
    jobs: dict[str, Job] = {}
    explicit = list(configs)
    for where, table in [("grid", grid), *((f"config {i + 1}", c) for i, c in enumerate(explicit))]:
        unknown = sorted(set(table) - set(SWEEP_KEYS))
        if unknown:
            raise BenchError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(SWEEP_KEYS)}")
    tables = [{**grid, **c} for c in explicit] if explicit else [grid]
    for table in tables:
        if "model" not in table:
            raise BenchError("a sweep needs at least one model (--model or model = [...])")
        seeds = seeds_of(table.get("seeds", 1))
        axes = {k: as_list(v) for k, v in table.items() if k != "seeds"}
        if any(not values for values in axes.values()):
            empty = next(k for k, values in axes.items() if not values)
            raise BenchError(f"{empty} has no values: the grid is empty")
        for combo in itertools.product(*axes.values()):
            values = dict(zip(axes, combo, strict=True))
            model = values.pop("model")
            values = canonical(registry, model, values)
            for seed in seeds:
                key = job_key(model, seed, values)
                jobs.setdefault(key, Job(key, model, seed, values, plugin_modules))
    if not jobs:
        raise BenchError("the sweep is empty")
    return list(jobs.values())


def read_sweep_file(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``[grid]`` (lists are crossed) and ``[[config]]`` tables of a TOML sweep file."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise BenchError(f"cannot read sweep file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path}: not valid TOML ({exc})") from None
    unknown = sorted(set(data) - {"grid", "config"})
    if unknown:
        raise BenchError(f"{path}: unknown table {unknown[0]!r}; a sweep file has [grid] and [[config]] tables")
    grid, configs = data.get("grid", {}), data.get("config", [])
    if not isinstance(grid, dict) or not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise BenchError(f"{path}: [grid] must be a table and [[config]] an array of tables")
    return grid, configs


def check_jobs(registry: Registry, jobs: list[Job], options: LaunchOptions, here: bool = True) -> None:
    """Make every job's plan now, so a bad name or value fails before anything trains (``here``:
    the jobs run on this machine, so its devices count; Ray jobs run on the cluster's)."""
    for job in jobs:
        try:
            make_plan(registry, job.model, Overrides(**job.overrides, results_dir=options.results_dir,
                                                     data_dir=options.data_dir), check_device_here=here)
        except (TypeError, BenchError) as exc:
            raise BenchError(f"{job.label()}: {exc}") from None


def done_records(results_dir: Path, keys: Iterable[str]) -> dict[str, RunRecord]:
    """The newest record of each job key that already has one."""
    wanted, found = set(keys), {}
    for loaded in iter_records(results_dir):
        key = loaded.data.launch.get("job_key")
        if key in wanted:
            found[key] = loaded.data
    return found


class Progress:
    """One bar for the whole sweep: done / running / failed, elapsed and ETA (tqdm)."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="sweep", unit="job", disable=None if enabled else True, dynamic_ncols=True)
        self.running = self.failed = 0

    def start(self, job: Job) -> None:
        self.running += 1
        self._show()

    def done(self, result: JobResult) -> None:
        self.running -= 1
        self.failed += not result.ok
        self.bar.update(1)
        self._show()
        if not result.ok:
            self.bar.write(f"failed: {result.job.label()}: {result.error} (log: {result.log_path})")

    def _show(self) -> None:
        self.bar.set_postfix(running=self.running, failed=self.failed, refresh=True)

    def close(self) -> None:
        self.bar.close()


def launch(registry: Registry, launcher_name: str, jobs: list[Job], options: LaunchOptions) -> list[JobResult]:
    """Run ``jobs`` with the named launcher plugin, with the sweep's progress bar."""
    from .plan import check_loader_available
    from .records import resolve

    spec = registry.get("launchers", launcher_name)
    check_loader_available(spec, "launcher")
    progress = Progress(len(jobs), options.progress)
    started = time.perf_counter()
    try:
        results = resolve(spec.factory)(options).launch(jobs, progress.start, progress.done)
    except (BenchError, KeyboardInterrupt):
        raise
    except Exception as exc:  # launcher plugins are third-party code too
        raise BenchError(f"launcher {launcher_name!r} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        progress.close()
    if not isinstance(results, list) or not all(isinstance(r, JobResult) for r in results):
        raise BenchError(f"launcher {launcher_name!r} returned {type(results).__name__}, not a list of JobResult")
    print(f"{sum(r.ok for r in results)} of {len(jobs)} jobs done in {time.perf_counter() - started:.1f}s")
    return results


def plan_text(jobs: list[Job], done: dict[str, RunRecord], launcher: str, options: LaunchOptions) -> str:
    """What the sweep will do, before it does it."""
    from tabulate import tabulate

    configs = len({(j.model, json.dumps(j.overrides, sort_keys=True)) for j in jobs})
    todo = len(jobs) - len(done)
    head = (f"sweep: {len(jobs)} jobs ({configs} configurations x seeds); {len(done)} already have records, "
            f"{todo} to run with the {launcher} launcher; records -> {options.results_dir}, logs -> {options.log_dir}")
    rows = [[j.key, j.label(), "done" if j.key in done else "to run"] for j in jobs]
    return head + "\n\n" + tabulate(rows, headers=["job", "configuration", "status"]) + "\n"


def board_text(registry: Registry, results_dir: Path, keys: list[str]) -> str:
    """The leaderboard of exactly the sweep's jobs."""
    from . import leaderboard as lb

    records = list(done_records(results_dir, keys).values())
    if not records:
        return "no records"
    sizes = {name: (e.record.train_size, e.record.test_size) for name, e in registry.entries("datasets").items()}
    rows = lb.sort_rows(lb.build_rows(lb.group_records(records), registry.targets(), sizes), "acc",
                        [t.id for t in registry.targets()])
    return "\n" + lb.render(rows, "table")
