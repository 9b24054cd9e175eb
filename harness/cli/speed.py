"""``bench speed``: img/s, step time, FLOPs and peak memory of one training and one evaluation step.

Kept light at import time (click only): ``cnnbench.cli`` imports this module for every
``bench`` invocation; torch is imported inside the command.
"""

from __future__ import annotations

import json
import tempfile

import click

from cnnbench.choices import COMPILE_MODES, PRECISIONS, CompileMode, Precision
from cnnbench.cli.reports import load_records_quietly
from cnnbench.errors import BenchError
from cnnbench.formatting import TABLEFMT
from cnnbench.registry import Registry, registry_from
from cnnbench.training import speed as timing
from cnnbench.training.plan import Overrides, make_plan
from cnnbench.training.speed import harness_figure, render

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
@click.pass_context
def speed(ctx: click.Context, model: str, batch_size: int | None, device: str, precision: Precision,
          channels_last: bool, compile_mode: CompileMode, threads: int | None, warmup: int, windows: int, steps: int,
          as_json: bool, fmt: str, results_dir: str) -> None:
    """Steady-state cost of a training step and an evaluation step of MODEL on synthetic batches:
    img/s, step time, FLOPs per image, achieved GFLOP/s, peak memory, warm-up time, and the
    harness's own training img/s for the same settings (from the run records)."""

    registry = registry_from(ctx)
    names = model_names(registry, model)
    # nothing is written: the plan's results dir (which make_plan checks for writing) is a scratch folder
    overrides = Overrides(batch_size=batch_size, device=device, precision=precision, channels_last=channels_last,
                          compile=compile_mode, threads=threads, results_dir=tempfile.gettempdir())
    plans = [make_plan(registry, name, overrides) for name in names]  # every name checked before any timing

    records = load_records_quietly(results_dir)
    results = []
    for plan in plans:
        try:
            result = timing.measure_speed(plan, warmup=warmup, windows=windows, steps=steps)
        except (BenchError, KeyboardInterrupt, OSError):
            raise
        except Exception as exc:  # torch (out of memory, a compile failure): one line naming the model
            first = (str(exc).strip().splitlines() or ["(no message)"])[0]
            raise BenchError(f"bench speed --model {plan.model.name}: {type(exc).__name__}: {first}") from exc
        result.harness = harness_figure(records, result)
        results.append(result)
        if as_json:
            click.echo(json.dumps(result.to_json()))
    if not as_json:
        click.echo(render(results, TABLEFMT[fmt]), nl=False)


COMMANDS = [speed]
