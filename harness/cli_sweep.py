"""``bench sweep``: many runs at once, through a launcher plugin (``local`` or ``ray``).

Every option of ``bench run`` that changes what is run takes a comma list here
(``--model mnist_step1,mnist_step2 --normalizer batch,group --seeds 5``); each value is
checked with ``bench run``'s own option type. A TOML file (``--file``) can hold the same
grid and explicit configurations.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from .cli import registry_from, run
from .errors import BenchError, Terminated, on_sigterm

OWN = ("results_dir", "data_dir", "no_progress")  # sweep options of its own, not lists


def _list_options() -> list[click.Option]:
    from .sweep import SWEEP_KEYS

    options = []
    for param in run.params:
        if isinstance(param, click.Option) and param.name in SWEEP_KEYS:
            options.append(click.Option([param.name, *param.opts], type=str, metavar="A[,B...]",
                                        help=f"{param.help} Comma list: one job per value."))
    return options


def convert(ctx: click.Context, name: str, value: Any) -> Any:
    """A sweep value (from a flag or a TOML file) checked by ``bench run``'s option of that name."""
    from .runner import parse_seeds
    from .sweep import SWEEP_KEYS

    if name not in SWEEP_KEYS:
        raise BenchError(f"unknown sweep key {name!r}; valid keys: {', '.join(SWEEP_KEYS)}")
    if name == "seeds":
        if isinstance(value, str):
            return parse_seeds(value)
        return value
    if name == "model":
        return value
    param = next(p for p in run.params if p.name == name)
    try:
        return param.type.convert(str(value) if not isinstance(value, str) else value, param, ctx)
    except click.BadParameter as exc:
        raise BenchError(f"{name} = {value!r}: {exc.format_message()}") from None


def convert_table(ctx: click.Context, table: dict[str, Any]) -> dict[str, Any]:
    """Every value of a grid or configuration table checked; lists stay lists (they are crossed)."""
    from .sweep import as_list

    return {k: convert(ctx, k, v) if k == "seeds" or not isinstance(v, list | tuple)
            else [convert(ctx, k, x) for x in as_list(v)] for k, v in table.items()}


def sweep_command() -> click.Command:
    @click.pass_context
    def sweep(ctx: click.Context, file: str | None, launcher: str, jobs: int | None, jobs_per_gpu: int,
              address: str | None, gpus_per_job: float, cpus_per_job: int | None, max_retries: int,
              dry_run: bool, results_dir: str, data_dir: str | None, log_dir: str | None, no_progress: bool,
              **lists: str | None) -> None:
        """Run a grid of configurations x seeds; jobs whose records exist are skipped."""
        from . import sweep as sw
        from .records import LaunchOptions

        registry = registry_from(ctx)
        grid: dict[str, Any] = {}
        configs: list[dict[str, Any]] = []
        if file:
            grid, configs = sw.read_sweep_file(Path(file))
        for name, text in lists.items():  # flags win over the file, in [grid] and in every [[config]]
            if text is not None:
                grid[name] = text if name == "seeds" else [v.strip() for v in text.split(",") if v.strip()]
                for config in configs:
                    config.pop(name, None)
        grid = convert_table(ctx, grid)
        configs = [convert_table(ctx, c) for c in configs]
        jobs_list = sw.expand(grid, configs, tuple(registry.pm.explicit), registry)
        stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        options = LaunchOptions(
            results_dir=results_dir, log_dir=log_dir or str(Path("bench-out") / "sweeps" / stamp), data_dir=data_dir,
            jobs=jobs, jobs_per_gpu=jobs_per_gpu, address=address, gpus_per_job=gpus_per_job,
            cpus_per_job=cpus_per_job, max_retries=max_retries, progress=not no_progress,
        )
        registry.get("launchers", launcher)
        sw.check_jobs(registry, jobs_list, options, here=launcher != "ray")
        done = sw.done_records(Path(results_dir), [j.key for j in jobs_list])
        todo = [j for j in jobs_list if j.key not in done]
        click.echo(sw.plan_text(jobs_list, done, launcher, options))
        if dry_run:
            return
        signal.signal(signal.SIGTERM, on_sigterm)
        try:
            results = sw.launch(registry, launcher, todo, options) if todo else []
        except KeyboardInterrupt as exc:
            click.echo(f"error: sweep interrupted; finished jobs keep their records and running ones were "
                       f"checkpointed: repeat the command to finish it (logs: {options.log_dir})", err=True)
            sys.exit(143 if isinstance(exc, Terminated) else 130)
        click.echo(sw.board_text(registry, Path(results_dir), [j.key for j in jobs_list]))
        failed = [r for r in results if not r.ok]
        if failed:
            raise BenchError(f"{len(failed)} of {len(todo)} jobs failed; their logs are in {options.log_dir}")

    params = [
        click.Option(["--file"], type=click.Path(dir_okay=False), help="TOML sweep file: [grid] and [[config]]."),
        click.Option(["--launcher"], default="local", show_default=True, help="See `bench list launchers`."),
        click.Option(["--jobs"], type=click.IntRange(min=1),
                     help="local: jobs at once [cores, or GPUs x --jobs-per-gpu]; ray: CPUs of a local instance."),
        click.Option(["--jobs-per-gpu"], type=click.IntRange(min=1), default=1, show_default=True,
                     help="local, GPU machine: jobs sharing each visible GPU."),
        click.Option(["--address"], help="ray: join this cluster (auto, ray://head:10001) instead of a local one."),
        click.Option(["--gpus-per-job"], type=click.FloatRange(0, 1), default=0.0, show_default=True,
                     help="ray: GPUs per job (0.25: four jobs share one)."),
        click.Option(["--cpus-per-job"], type=click.IntRange(min=1),
                     help="ray: CPU cores and torch threads per job [1]."),
        click.Option(["--max-retries"], type=click.IntRange(min=0), default=3, show_default=True,
                     help="ray: retries of a job whose worker or node died."),
        click.Option(["--dry-run"], is_flag=True, help="Print the plan only."),
        click.Option(["--results-dir"], type=click.Path(file_okay=False), default="results", show_default=True),
        click.Option(["--data-dir"], type=click.Path(file_okay=False),
                     help="Dataset folder on every machine that runs jobs [$BENCH_DATA_DIR or ./data there]."),
        click.Option(["--log-dir"], type=click.Path(file_okay=False),
                     help="One log per job [bench-out/sweeps/<time>/]."),
        click.Option(["--no-progress"], is_flag=True, help="No progress bar."),
        *_list_options(),
    ]
    return click.Command("sweep", callback=sweep, params=params, help=sweep.__doc__)


COMMANDS = [sweep_command()]
