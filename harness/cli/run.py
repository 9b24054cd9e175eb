"""The commands that train and inspect: ``list``, ``run``, ``resume``, ``runs``, ``summary``.

Light at import time (click only): torch is imported inside the commands that train.
"""

from __future__ import annotations

import signal
from typing import Any

import click

from cnnbench.choices import COMPILE_MODES, OPTIMIZERS, PRECISIONS, SCHEDULERS, TTAS
from cnnbench.cli.options import FiniteFloat, warnings_as_lines
from cnnbench.errors import BenchError, on_sigterm
from cnnbench.registry import KINDS, Registry, registry_from
from cnnbench.runrecord import RunRecord
from cnnbench.seeds import MAX_SEED, parse_seeds
from cnnbench.training.plan import Overrides, make_plan
from cnnbench.training.runner import run_seeds

LIST_KINDS = [*KINDS, "plugins"]


def _rows_for(registry: Registry, kind: str) -> tuple[list[str], list[list[Any]]]:
    if kind == "plugins":
        sources = registry.pm.sources
        return ["plugin", "module", "distribution"], [
            [name, module, f"{s.distribution} {s.version or ''}".strip() if (s := sources.get(name)) else "-"]
            for name, module in registry.plugins()
        ]
    entries = registry.entries(kind)
    if kind == "models":
        return ["model", "dataset", "params", "epochs", "source", "plugin"], [
            [n, e.record.dataset, f"{e.record.params:,}", e.record.recipe.epochs, e.record.source, e.plugin]
            for n, e in entries.items()
        ]
    if kind == "targets":
        return ["target", "dataset", "rule", "source", "plugin"], [
            [n, e.record.dataset, e.record.rule(), e.record.source, e.plugin] for n, e in entries.items()
        ]
    if kind == "datasets":
        return ["dataset", "shape", "classes", "train", "test", "plugin"], [
            [
                n,
                "x".join(map(str, e.record.image_shape)),
                e.record.num_classes,
                e.record.train_size,
                e.record.test_size,
                e.plugin,
            ]
            for n, e in entries.items()
        ]
    if kind == "augmentations":
        return ["augmentation", "kind", "description", "plugin"], [
            [n, e.record.kind, e.record.description, e.plugin] for n, e in entries.items()
        ]
    return [kind[:-1], "description", "plugin"], [[n, e.record.description, e.plugin] for n, e in entries.items()]


@click.command("list")
@click.argument("kind", required=False, type=click.Choice(LIST_KINDS))
@click.option("--pattern", default="*", help="Shell pattern on model names, e.g. 'mnist*'.")
@click.pass_context
def list_cmd(ctx: click.Context, kind: str | None, pattern: str) -> None:
    """List what the plugins registered (everything, or one KIND)."""
    from tabulate import tabulate  # lazy: tabulate

    registry = registry_from(ctx)
    keep = set(registry.list_models(pattern))
    if pattern != "*" and not keep:
        raise BenchError(f"no model matches {pattern!r}; models: {', '.join(registry.list_models())}")
    for k in [kind] if kind else LIST_KINDS:
        headers, rows = _rows_for(registry, k)
        if k == "models":
            rows = [r for r in rows if r[0] in keep]
        if not kind:
            click.echo(f"\n{k}:")
        click.echo(tabulate(rows, headers=headers))


@click.command()
@click.option("--model", required=True, help="Model name (see `bench list models`).")
@click.option("--epochs", type=click.IntRange(min=1), help="Override the recipe's epochs.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True,
              help="Random seed (CPU runs repeat exactly).")
@click.option("--seeds", help="Run several seeds: a count N (0..N-1) or a list like 1,2,3.")
@click.option("--fused", is_flag=True,
              help="Train the seeds together as one batched computation (torch.func vmap); one record each.")
@click.option(
    "--data-dir", type=click.Path(file_okay=False), help="Folder holding MNIST/raw etc. [$BENCH_DATA_DIR or ./data]"
)
@click.option("--batch-size", type=click.IntRange(min=1), help="Override the recipe's batch size.")
@click.option("--lr", type=FiniteFloat(0, low_open=True), help="Override the recipe's learning rate.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), help="Override the recipe's optimizer.")
@click.option("--scheduler", type=click.Choice(SCHEDULERS), help="Override the recipe's schedule.")
@click.option("--dropout", type=FiniteFloat(0, 1), help="Override the model's dropout.")
@click.option("--nesterov/--no-nesterov", default=None, help="SGD with Nesterov momentum [the recipe's].")
@click.option("--label-smoothing", type=FiniteFloat(0, 1), help="Label smoothing of the training loss [the recipe's].")
@click.option("--warmup-epochs", type=FiniteFloat(0, low_open=True),
              help="Rising phase of the onecycle schedule, in epochs [torch's 30%].")
@click.option("--ema", type=FiniteFloat(0, 1, low_open=True),
              help="Evaluate and save an exponential moving average of the weights with this decay per step.")
@click.option("--tta", type=click.Choice(TTAS), help="Test-time augmentation [the recipe's].")
@click.option("--val-split", type=click.IntRange(min=1),
              help="Hold out N training images (a fixed slice) and evaluate them every epoch, for tuning.")
@click.option("--normalizer", help="Normalization layers (see `bench list normalizers`) [the model's].")
@click.option("--augment", "augmentation", help="Augmentation (see `bench list augmentations`) [the recipe's].")
@click.option("--loader", default="memory", show_default=True, help="Data loader (see `bench list loaders`).")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="DataLoader workers (torchvision loader); decoding threads (ffcv; 0: half the cores).",
)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 … or auto.")
@click.option(
    "--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True, help="bf16 autocast."
)
@click.option("--channels-last", is_flag=True, help="Model and batches in channels_last (NHWC) memory layout.")
@click.option("--compile", "compile", type=click.Choice(COMPILE_MODES),
              default="none", show_default=True,
              help="torch.compile the model (reduce-overhead: CUDA graphs on a GPU); compile time is in the record.")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads [all cores].")
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True)
@click.option("--limit-train", type=click.IntRange(min=1), help="Train on the first N images only (smoke runs).")
@click.option("--limit-test", type=click.IntRange(min=1), help="Test on the first N images only (smoke runs).")
@click.option("--no-weights", is_flag=True, help="Do not save the final weights beside the record.")
@click.option("--no-progress", is_flag=True, help="No progress bars (per-epoch lines are still printed).")
@click.pass_context
def run(ctx: click.Context, model: str, seed: int, seeds: str | None, no_weights: bool, no_progress: bool,
        **opts: Any) -> None:
    """Train MODEL with its recipe (overridable) and write a run record per seed."""

    registry = registry_from(ctx)
    seed_list = parse_seeds(seeds, MAX_SEED) if seeds is not None else [seed]
    plan = make_plan(registry, model, Overrides(**opts, save_weights=not no_weights, progress=not no_progress))
    signal.signal(signal.SIGTERM, on_sigterm)
    report_divergence(run_seeds(plan, seed_list, registry.hook))


def report_divergence(records: list[RunRecord]) -> None:
    diverged = [r for r in records if r.status == "diverged"]
    if diverged:
        where = ", ".join(f"seed {r.seed} in epoch {r.n_epochs} ({r.run_id})" for r in diverged)
        raise BenchError(f"{diverged[0].model} diverged: {where}; the records are marked diverged")


@click.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Dataset folder [the one the run used].")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def resume(run_ref: str, results_dir: str, data_dir: str | None, no_progress: bool) -> None:
    """Continue the interrupted RUN (id or unique prefix) from its last checkpoint."""
    from cnnbench.training.resume import resume_run  # lazy: torch, numpy

    signal.signal(signal.SIGTERM, on_sigterm)
    report_divergence([resume_run(run_ref, results_dir, data_dir, not no_progress)])


@click.command()
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True)
@click.option("--incomplete", is_flag=True, help="Only runs that were interrupted (with the command to resume each).")
def runs(results_dir: str, incomplete: bool) -> None:
    """Runs in the results folder: finished ones, and interrupted ones that `bench resume` continues."""
    from cnnbench.training.resume import runs_table  # lazy: torch, numpy

    with warnings_as_lines():
        table = runs_table(results_dir, incomplete)
    click.echo(table)


@click.command()
@click.option("--model", required=True, help="Model name (see `bench list models`).")
@click.option("--normalizer", help="Normalization layers to build the model with.")
@click.pass_context
def summary(ctx: click.Context, model: str, normalizer: str | None) -> None:
    """Layer table of MODEL: output shapes, parameters and receptive field."""
    from cnnbench.training.summary import render_summary  # lazy: torch

    click.echo(render_summary(registry_from(ctx), model, normalizer))


COMMANDS = [list_cmd, run, resume, runs, summary]
