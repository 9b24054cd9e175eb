"""Sweeps: a grid of runs (from flags or a TOML file) handed to a launcher plugin.

A sweep expands to jobs: model x every option's values x seeds; with ``[[config]]`` tables,
each configuration (taking the grid's values for what it does not set) instead of the bare
grid. A value equal to the model's own default does not change a job. Every job has a key made of
its configuration and seed, which its record stores (``launch.job_key``): running the same sweep
again skips the jobs whose records exist, so an interrupted sweep is finished by repeating its
command. A key names the configuration as asked: after a model's recipe changes, use a new
results folder. Everything is checked (names, values, each job's plan) before the first job starts,
and the number of jobs is counted (and capped at ``MAX_JOBS``) before anything is expanded.

Each job is claimed before it starts (``cnnbench.launcher.claim_jobs``: a lock on ``KEY.claim`` in
the results folder) and checked again for a record once claimed, so a sweep repeated while another
still runs, or started twice at once, skips the jobs the other one runs or has just finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import itertools
import json
import math
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from cnnbench.errors import BenchError, PluginError, UsageError
from cnnbench.files import NotARegularFile, read_regular
from cnnbench.launcher import Launcher, claim_jobs
from cnnbench.records import Job, JobResult, LaunchOptions
from cnnbench.registry import Registry, first_line
from cnnbench.reports import leaderboard as lb
from cnnbench.runrecord import RunRecord, iter_records
from cnnbench.seeds import seeds_from_value
from cnnbench.training.plan import DEFAULT_LOADER, Overrides, make_plan

# Overrides that say where output goes or how fast it runs, not what is run: not part of a job's key.
# Not sweep keys: output-only settings, and --fused (a sweep job is one seed; fusing is bench run's)
NOT_IN_KEY = {"results_dir", "data_dir", "threads", "progress", "save_weights", "launch", "fused"}
# what a sweep may vary: the model, the seeds and every Overrides field that is part of a key
SWEEP_KEYS = ("model", "seeds", *sorted(f.name for f in dataclasses.fields(Overrides) if f.name not in NOT_IN_KEY))
DEFAULTS = Overrides()
MAX_JOBS = 10_000  # jobs one sweep expands to, counted before anything is expanded
MAX_SWEEP_FILE = 2**20  # bytes: a sweep file is a few lines
T = TypeVar("T")


def job_key(model: str, seed: int, overrides: dict[str, Any]) -> str:
    """``model-sSEED-hash``: the same configuration and seed give the same key in every sweep."""
    relevant = {k: v for k, v in sorted(overrides.items())
                if k not in NOT_IN_KEY and v is not None and v != getattr(DEFAULTS, k)}
    digest = hashlib.sha1(json.dumps([model, seed, relevant], sort_keys=True).encode()).hexdigest()[:10]
    return f"{model}-s{seed}-{digest}"


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def tables_of(grid: dict[str, Any], configs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tables a sweep expands: each configuration over the grid's values, or the bare grid."""
    explicit = list(configs)
    for where, table in [("grid", grid), *((f"config {i + 1}", c) for i, c in enumerate(explicit))]:
        unknown = sorted(set(table) - set(SWEEP_KEYS))
        if unknown:
            raise UsageError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(SWEEP_KEYS)}")
    return [{**grid, **c} for c in explicit] if explicit else [grid]


def count_jobs(grid: dict[str, Any], configs: Iterable[dict[str, Any]] = ()) -> int:
    """How many jobs the sweep asks for (before equal ones merge), as a product of list lengths:
    nothing is expanded. More than ``MAX_JOBS`` is a ``UsageError``."""
    total = 0
    for table in tables_of(grid, configs):
        seeds = len(seeds_from_value(table.get("seeds", 1)))
        total += seeds * math.prod(len(as_list(v)) for k, v in table.items() if k != "seeds")
    if total > MAX_JOBS:
        raise UsageError(f"the sweep asks for {total:,} jobs; at most {MAX_JOBS:,} in one sweep "
                         "(split it into several sweeps sharing a results folder)")
    return total


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
    taking the grid's values for what it does not set), times their seeds; counted first."""
    explicit = list(configs)
    count_jobs(grid, explicit)
    jobs: dict[str, Job] = {}
    for table in tables_of(grid, explicit):
        if "model" not in table:
            raise UsageError("a sweep needs at least one model (--model or model = [...])")
        seeds = seeds_from_value(table.get("seeds", 1))
        axes = {k: as_list(v) for k, v in table.items() if k != "seeds"}
        empty = next((k for k, values in axes.items() if not values), None)
        if empty is not None:
            raise UsageError(f"{empty} has no values: the grid is empty")
        for combo in itertools.product(*axes.values()):
            values = dict(zip(axes, combo, strict=True))
            model = values.pop("model")
            if not isinstance(model, str):
                raise UsageError(f"model = {model!r}: a model is named by a string (see `bench list models`)")
            values = canonical(registry, model, values)
            for seed in seeds:
                key = job_key(model, seed, values)
                jobs.setdefault(key, Job(key, model, seed, values, plugin_modules))
    if not jobs:
        raise UsageError("the sweep is empty")
    return list(jobs.values())


def read_sweep_file(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``[grid]`` (lists are crossed) and ``[[config]]`` tables of a TOML sweep file (a regular
    file of at most ``MAX_SWEEP_FILE`` bytes: a FIFO or an endless file is refused, not read)."""
    try:
        data = tomllib.loads(read_regular(path, MAX_SWEEP_FILE).decode())
    except NotARegularFile:
        raise UsageError(f"sweep file {path} is not a regular file") from None
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise UsageError(f"sweep file {path} is larger than {MAX_SWEEP_FILE:,} bytes; "
                             "a sweep file holds a few tables") from None
        raise UsageError(f"cannot read sweep file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not valid TOML (not UTF-8 text)") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from None
    unknown = sorted(set(data) - {"grid", "config"})
    if unknown:
        raise UsageError(f"{path}: unknown table {unknown[0]!r}; a sweep file has [grid] and [[config]] tables")
    grid, configs = data.get("grid", {}), data.get("config", [])
    if not isinstance(grid, dict) or not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise UsageError(f"{path}: [grid] must be a table and [[config]] an array of tables")
    return grid, configs


def check_jobs(registry: Registry, jobs: list[Job], settings: LaunchOptions, here: bool = True) -> None:
    """Make every job's plan now, so a bad name or value fails before anything trains (``here``:
    the jobs run on this machine, so its devices count; Ray jobs run on the cluster's)."""
    for job in jobs:
        try:
            make_plan(registry, job.model, Overrides(**job.overrides, results_dir=settings.results_dir,
                                                     data_dir=settings.data_dir), check_device_here=here)
        except (TypeError, BenchError) as exc:
            raise UsageError(f"{job.label()}: {exc}") from None


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
        from tqdm.auto import tqdm  # lazy: tqdm (bench sweep --help stays fast)

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


@dataclasses.dataclass(frozen=True)
class SweepOutcome:
    """What one ``bench sweep`` did: its launcher's results, and the jobs it left to others."""

    results: list[JobResult]
    elsewhere: dict[str, str]  # job key -> who runs it (another sweep holds its claim)
    finished_elsewhere: list[str]  # job keys another sweep finished between the plan and the claim

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if not r.ok]


def plugin_call(launcher: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)``, launcher plugin code: anything but a ``BenchError`` or an
    interruption it raises becomes one ``PluginError`` line."""
    try:
        return call(*args, **kwargs)
    except (BenchError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise PluginError(f"launcher {launcher!r} failed: {type(exc).__name__}: {first_line(exc)}") from exc


@contextlib.contextmanager
def started(launcher: Launcher[Any], name: str) -> Iterator[None]:
    """The launcher's ``start`` and, on every way out, its ``stop``."""
    plugin_call(name, launcher.start)
    try:
        yield
    finally:
        plugin_call(name, launcher.stop)


def run_sweep(launcher: Launcher[Any], name: str, jobs: list[Job], settings: LaunchOptions) -> SweepOutcome:
    """Start the launcher, claim ``jobs`` and run those no other process runs or has just finished."""
    clock = time.perf_counter()
    with started(launcher, name), claim_jobs(settings.results_dir, [j.key for j in jobs]) as (claims, elsewhere):
        finished = done_records(Path(settings.results_dir), claims)  # by another sweep, after our plan
        todo = [j for j in jobs if j.key in claims and j.key not in finished]
        launcher.claims = {j.key: claims[j.key] for j in todo}
        results = launch_claimed(launcher, name, todo, settings.progress) if todo else []
    labels = {j.key: j.label() for j in jobs}
    for key, holder in elsewhere.items():
        print(f"skipped: {labels[key]}: running in another process ({holder}); repeat the sweep once it ends")
    for key in finished:
        print(f"skipped: {labels[key]}: another sweep has just finished it")
    skipped = len(elsewhere) + len(finished)
    print(f"{sum(r.ok for r in results)} of {len(todo)} jobs done in {time.perf_counter() - clock:.1f}s"
          + (f"; {skipped} skipped" if skipped else ""))
    return SweepOutcome(results, elsewhere, list(finished))


def launch_claimed(launcher: Launcher[Any], name: str, jobs: list[Job], show_progress: bool) -> list[JobResult]:
    """``launcher.launch`` with the sweep's progress bar, its answer checked."""
    progress = Progress(len(jobs), show_progress)
    try:
        results = plugin_call(name, launcher.launch, jobs, progress.start, progress.done)
    finally:
        progress.close()
    if not isinstance(results, list) or not all(isinstance(r, JobResult) for r in results):
        raise PluginError(f"launcher {name!r} returned {type(results).__name__}, not a list of JobResult")
    return results


def plan_text(jobs: list[Job], done: dict[str, RunRecord], launcher: str, settings: LaunchOptions) -> str:
    """What the sweep will do, before it does it."""
    configs = len({(j.model, json.dumps(j.overrides, sort_keys=True)) for j in jobs})
    todo = len(jobs) - len(done)
    head = (f"sweep: {len(jobs)} jobs ({configs} configurations x seeds); {len(done)} already have records, "
            f"{todo} to run with the {launcher} launcher; records -> {settings.results_dir}, "
            f"logs -> {settings.log_dir}")
    rows = [[j.key, j.label(), "done" if j.key in done else "to run"] for j in jobs]
    from tabulate import tabulate  # lazy: tabulate (bench sweep --help stays fast)

    return head + "\n\n" + tabulate(rows, headers=["job", "configuration", "status"]) + "\n"


def board_text(registry: Registry, results_dir: Path, keys: list[str]) -> str:
    """The leaderboard of exactly the sweep's jobs."""
    from cnnbench.reports import render  # lazy: jinja2

    records = list(done_records(results_dir, keys).values())
    if not records:
        return "no records"
    sizes = {name: (e.record.train_size, e.record.test_size) for name, e in registry.entries("datasets").items()}
    rows = lb.sort_rows(lb.build_rows(lb.group_records(records), registry.targets(), sizes), "acc",
                        [t.id for t in registry.targets()])
    return "\n" + render.render(rows, "table")
