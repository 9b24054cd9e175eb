"""``bench speed``: img/s, step time, FLOPs and peak memory of one training and one evaluation step,
how far that is from the machine's limit, what the step spends its time on (``--profile``) and what
each fast-path option gives (``--options``).

Kept light at import time (click only): ``cnnbench.cli`` imports this module for every
``bench`` invocation; torch is imported inside the command.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from cnnbench.choices import COMPILE_MODES, PRECISIONS, CompileMode, Precision
from cnnbench.cli.reports import load_records_quietly
from cnnbench.errors import BenchError
from cnnbench.formatting import TABLEFMT
from cnnbench.registry import Registry, registry_from
from cnnbench.training import speed as timing
from cnnbench.training.plan import Overrides, has_compiler, make_plan
from cnnbench.training.speed import harness_figure, render
from cnnbench.training.speed.options import compare_options, render_options, speed_in_processes
from cnnbench.training.speed.peak import MachinePeak, machine_peak
from cnnbench.training.speed.profile import render_profile

if TYPE_CHECKING:
    from cnnbench.training.plan import RunPlan

T = TypeVar("T")

PATTERN_CHARS = set("*?[")


def model_names(registry: Registry, pattern: str) -> list[str]:
    """The models a ``--model`` value names: one name (checked later by ``make_plan``), or every
    built-in model matching a shell pattern."""
    if not PATTERN_CHARS & set(pattern):
        return [pattern]
    names = registry.list_models(pattern)
    if not names:
        raise BenchError(f"no model matches {pattern!r}; models: {', '.join(registry.list_models())}")
    return names


@click.command()
@click.option("--model", required=True, help="Model name or shell pattern ('mnist*', '*': one row per model).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Batch size [the recipe's].")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 … or auto.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="bf16 autocast.")
@click.option("--channels-last", is_flag=True, help="Model and batches in channels_last (NHWC) memory layout.")
@click.option("--compile", "compile_mode", type=click.Choice(COMPILE_MODES),
              default="none", show_default=True,
              help="torch.compile the model; the compile (or capture) time is reported as warm-up.")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads [all cores].")
@click.option("--warmup", type=click.IntRange(min=1), default=3, show_default=True,
              help="Untimed steps first (timed apart: compilation happens here).")
@click.option("--windows", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed windows; the figures are their median.")
@click.option("--steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="Steps per window (0: as many as take about half a second).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model, one per line.")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown"]), default="table", show_default=True,
              help="Table format (markdown: for docs/benchmarks.md).")
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True,
              help="Run records to compare with (the harness's training img/s for the same settings).")
@click.option("--peak/--no-peak", default=True, show_default=True,
              help="Report achieved GFLOP/s as a % of the machine's matrix-product peak (measured once per machine "
                   "and thread count, then cached).")
@click.option("--refresh-peak", is_flag=True, help="Measure the machine's peak again instead of reading the cache.")
@click.option("--profile", is_flag=True,
              help="Also profile the training step: top operators by own time, the share in convolutions and matrix "
                   "products, and the bytes its unfused operators move.")
@click.option("--options", "compare", is_flag=True,
              help="Time every fast-path option side by side (channels_last, compile modes, bf16, batch x2/x4, "
                   "threads, two processes); one table per model.")
@click.option("--rounds", type=click.IntRange(min=1, max=50), default=1, show_default=True,
              help="--options: go round all options N times; each option's median round is reported.")
@click.pass_context
def speed(ctx: click.Context, model: str, batch_size: int | None, device: str, precision: Precision,
          channels_last: bool, compile_mode: CompileMode, threads: int | None, warmup: int, windows: int, steps: int,
          as_json: bool, fmt: str, results_dir: str, peak: bool, refresh_peak: bool, profile: bool,
          compare: bool, rounds: int) -> None:
    """Steady-state cost of a training step and an evaluation step of MODEL on synthetic batches:
    img/s, step time, FLOPs per image, achieved GFLOP/s and its fraction of the machine's
    matrix-product peak, peak memory, warm-up time, and the harness's own training img/s for the
    same settings (from the run records)."""

    registry = registry_from(ctx)
    names = model_names(registry, model)
    # nothing is written: the plan's results dir (which make_plan checks for writing) is a scratch folder
    overrides = Overrides(batch_size=batch_size, device=device, precision=precision, channels_last=channels_last,
                          compile=compile_mode, threads=threads, results_dir=tempfile.gettempdir())
    plans = [make_plan(registry, name, overrides) for name in names]  # every name checked before any timing
    want_peak = peak or refresh_peak
    if compare:
        if profile:
            raise click.UsageError("--profile and --options are separate measurements: run them one at a time")
        lazy_peak = functools.cache(lambda: measured_peak(plans[0], refresh_peak) if want_peak else None)
        compare_models(ctx, registry, plans, overrides, lazy_peak, (warmup, windows, steps, rounds), as_json, fmt)
        return
    if rounds != 1:
        raise click.UsageError("--rounds goes with --options (it repeats the side-by-side comparison)")

    records = load_records_quietly(results_dir)
    results = []
    for plan in plans:
        result = measured(plan, functools.partial(timing.measure_speed, plan, warmup, windows, steps,
                                                  profile=profile))
        result.harness = harness_figure(records, result)
        results.append(result)
    machine_peak = measured_peak(plans[0], refresh_peak) if want_peak else None  # after: a failure above is one line
    for result in results:
        result.peak = machine_peak
        if as_json:
            click.echo(json.dumps(result.to_json()))
    if not as_json:
        click.echo(render(results, TABLEFMT[fmt]), nl=False)
        for result in results if profile else []:
            assert result.profile is not None
            click.echo()
            click.echo(render_profile(result.model, result.profile, result.train.step_ms,
                                      machine_peak.copy_gb_per_s if machine_peak else None, TABLEFMT[fmt]), nl=False)


def measured(plan: RunPlan, measure: Callable[[], T]) -> T:
    """``measure()``, with torch's failures (out of memory, a compile error) as one line naming the model."""
    try:
        return measure()
    except (BenchError, KeyboardInterrupt, OSError):
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or ["(no message)"])[0]
        raise BenchError(f"bench speed --model {plan.model.name}: {type(exc).__name__}: {first}") from exc


def measured_peak(plan: RunPlan, refresh: bool) -> MachinePeak:
    """The machine's peak for the plan's device and thread count (cached; measured and said so when not)."""
    import torch  # lazy: torch

    device = torch.device(plan.device)
    threads_before = torch.get_num_threads()
    threads = plan.threads or threads_before
    torch.set_num_threads(threads)
    try:
        peak, path, fresh = machine_peak(device, threads, refresh=refresh)
    finally:
        torch.set_num_threads(threads_before)
    if fresh:
        click.echo(f"measured this machine's peak in {peak.seconds:.1f} s (cached in {path})", err=True)
    return peak


def compare_models(ctx: click.Context, registry: Registry, plans: list[RunPlan], overrides: Overrides,
                   machine: Callable[[], MachinePeak | None], counts: tuple[int, int, int, int], as_json: bool,
                   fmt: str) -> None:
    """``--options``: each model's options side by side, one table (or JSON object) per model; the
    machine's peak is measured (if not cached) after the first model, so a bad model is one line."""
    params = ctx.find_root().params or {}
    device_type = plans[0].device.split(":")[0]
    warmup, windows, steps, rounds = counts
    timing_args = ["--warmup", str(warmup), "--windows", str(windows), "--steps", str(steps), "--no-peak"]

    for plan in plans:
        name = plan.model.name

        def measure(o: Overrides, name: str = name) -> timing.SpeedResult:
            option_plan = make_plan(registry, name, o)
            return measured(option_plan, lambda: timing.measure_speed(option_plan, warmup, windows, steps))

        def separate(o: Overrides, processes: int, plan: RunPlan = plan) -> list[dict[str, Any]]:
            plugins = tuple(params.get("plugins", ()))
            return measured(plan, lambda: speed_in_processes(plan.model.name, o, processes, timing_args, plugins))

        rows = compare_options(overrides, name, plan.recipe.batch_size, measure, separate, device_type,
                               compiler=has_compiler(), rounds=rounds)
        peak = machine()
        if as_json:
            click.echo(json.dumps({"model": name, "peak": dataclasses.asdict(peak) if peak else None,
                                   "options": [r.to_json() for r in rows]}))
        else:
            click.echo(render_options(name, rows, peak.gflops if peak else None, TABLEFMT[fmt]))


COMMANDS = [speed]
