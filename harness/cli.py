"""The ``bench`` command line.

Only ``run``, ``summary`` and the report commands that rebuild models import torch, and
they do it inside the command, so ``bench --help`` and ``bench list`` start in a fraction
of a second. Plugins add subcommands through ``cnnbench_commands``.
"""

from __future__ import annotations

import math
import signal
import sys
from typing import Any

import click

from . import __version__
from .errors import BenchError, RunInterrupted, Terminated, on_sigterm
from .registry import KINDS, Registry, get_registry

MAX_SEED = 2**63 - 1  # torch.manual_seed takes a 64-bit integer


class FiniteFloat(click.ParamType):
    """A float that is finite and within ``[low, high)`` (NaN and infinity are refused)."""

    name = "float"

    def __init__(self, low: float, high: float | None = None, low_open: bool = False) -> None:
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        too_low = number <= self.low if self.low_open else number < self.low
        if not math.isfinite(number) or too_low or (self.high is not None and number >= self.high):
            upper = f" and below {self.high}" if self.high is not None else ""
            bound = "above" if self.low_open else "at least"
            self.fail(f"{value!r} is not a finite number {bound} {self.low}{upper}", param, ctx)
        return number


LIST_KINDS = [*KINDS, "plugins"]


def registry_from(ctx: click.Context) -> Registry:
    """The registry for this invocation (``--plugin`` / ``--no-plugin`` applied); for plugin commands too."""
    root = ctx.find_root()
    params = root.params or {}
    return get_registry(params.get("plugins", ()), params.get("blocked", ()))


class BenchGroup(click.Group):
    """Turns ``BenchError``, click's usage errors and Ctrl-C into one line and a non-zero exit,
    and adds the commands plugins return from ``cnnbench_commands``."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        extra.pop("standalone_mode", None)
        try:
            result = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.ClickException as exc:
            command = f"{exc.ctx.command_path} --help" if getattr(exc, "ctx", None) else "bench --help"
            click.echo(f"error: {exc.format_message()} (see '{command}')", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        except BenchError as exc:  # raised while resolving a plugin command
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BenchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except RunInterrupted as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            click.echo("error: interrupted; finished runs keep their records (`bench runs` lists them and any "
                       "checkpoint to resume)", err=True)
            sys.exit(143 if isinstance(exc, Terminated) else 130)
        except OSError as exc:  # a full disk, a vanished folder, a permission: one line, never a traceback
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            sys.exit(1)

    def plugin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        found: dict[str, click.Command] = {}
        hook = registry_from(ctx).pm.hook.cnnbench_commands
        for impl in hook.get_hookimpls():
            try:
                commands = list(impl.function() or [])
            except Exception as exc:
                raise BenchError(f"plugin {impl.plugin_name!r} raised in cnnbench_commands: {exc}") from exc
            for command in commands:
                if not isinstance(command, click.Command) or not command.name:
                    raise BenchError(f"plugin {impl.plugin_name!r} returned {command!r}; expected a click.Command")
                if command.name in self.commands or command.name in found:
                    raise BenchError(f"plugin {impl.plugin_name!r} adds command {command.name!r}, which exists")
                found[command.name] = command
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        try:
            extra = self.plugin_commands(ctx)
        except BenchError as exc:  # `bench --help` still helps
            click.echo(f"warning: {exc}", err=True)
            extra = {}
        return sorted([*self.commands, *extra])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        extra = self.plugin_commands(ctx)  # a plugin shadowing a built-in command is an error, always
        return self.commands.get(cmd_name) or extra.get(cmd_name)


@click.group(cls=BenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cnnbench")
@click.option(
    "--plugin",
    "plugins",
    multiple=True,
    is_eager=True,  # before an eager --help, which lists plugin commands
    metavar="MODULE",
    help="Import MODULE as a plugin (repeatable; the current folder is importable); BENCH_PLUGINS=mod1,mod2 too.",
)
@click.option(
    "--no-plugin",
    "blocked",
    multiple=True,
    is_eager=True,
    metavar="NAME",
    help="Do not load plugin NAME (repeatable), e.g. --no-plugin console for no console output.",
)
def main(plugins: tuple[str, ...], blocked: tuple[str, ...]) -> None:
    """cnnbench: train small CNNs on MNIST and CIFAR-10 and check them against published targets."""


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


@main.command("list")
@click.argument("kind", required=False, type=click.Choice(LIST_KINDS))
@click.option("--pattern", default="*", help="Shell pattern on model names, e.g. 'mnist*'.")
@click.pass_context
def list_cmd(ctx: click.Context, kind: str | None, pattern: str) -> None:
    """List what the plugins registered (everything, or one KIND)."""
    from tabulate import tabulate

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


@main.command()
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
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), help="Override the recipe's optimizer.")
@click.option("--scheduler", type=click.Choice(["none", "step", "onecycle"]), help="Override the recipe's schedule.")
@click.option("--dropout", type=FiniteFloat(0, 1), help="Override the model's dropout.")
@click.option("--nesterov/--no-nesterov", default=None, help="SGD with Nesterov momentum [the recipe's].")
@click.option("--label-smoothing", type=FiniteFloat(0, 1), help="Label smoothing of the training loss [the recipe's].")
@click.option("--warmup-epochs", type=FiniteFloat(0, low_open=True),
              help="Rising phase of the onecycle schedule, in epochs [torch's 30%].")
@click.option("--ema", type=FiniteFloat(0, 1, low_open=True),
              help="Evaluate and save an exponential moving average of the weights with this decay per step.")
@click.option("--tta", type=click.Choice(["none", "flip"]), help="Test-time augmentation [the recipe's].")
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
    "--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True, help="bf16 autocast."
)
@click.option("--channels-last", is_flag=True, help="Model and batches in channels_last (NHWC) memory layout.")
@click.option("--compile", "compile", type=click.Choice(["none", "default", "reduce-overhead", "max-autotune"]),
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
    from .plan import Overrides, make_plan
    from .runner import parse_seeds, run_seeds

    registry = registry_from(ctx)
    seed_list = parse_seeds(seeds, MAX_SEED) if seeds is not None else [seed]
    plan = make_plan(registry, model, Overrides(**opts, save_weights=not no_weights, progress=not no_progress))
    signal.signal(signal.SIGTERM, on_sigterm)
    report_divergence(run_seeds(plan, seed_list, registry.hook))


def report_divergence(records: list[Any]) -> None:
    diverged = [r for r in records if r.status == "diverged"]
    if diverged:
        where = ", ".join(f"seed {r.seed} in epoch {r.n_epochs} ({r.run_id})" for r in diverged)
        raise BenchError(f"{diverged[0].model} diverged: {where}; the records are marked diverged")


@main.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Dataset folder [the one the run used].")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def resume(run_ref: str, results_dir: str, data_dir: str | None, no_progress: bool) -> None:
    """Continue the interrupted RUN (id or unique prefix) from its last checkpoint."""
    from .resume import resume_run

    signal.signal(signal.SIGTERM, on_sigterm)
    report_divergence([resume_run(run_ref, results_dir, data_dir, not no_progress)])


@main.command()
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True)
@click.option("--incomplete", is_flag=True, help="Only runs that were interrupted (with the command to resume each).")
def runs(results_dir: str, incomplete: bool) -> None:
    """Runs in the results folder: finished ones, and interrupted ones that `bench resume` continues."""
    from .resume import runs_table

    click.echo(runs_table(results_dir, incomplete))


@main.command()
@click.option("--model", required=True, help="Model name (see `bench list models`).")
@click.option("--normalizer", help="Normalization layers to build the model with.")
@click.pass_context
def summary(ctx: click.Context, model: str, normalizer: str | None) -> None:
    """Layer table of MODEL: output shapes, parameters and receptive field."""
    from .summary import render_summary

    click.echo(render_summary(registry_from(ctx), model, normalizer))


def _add_commands() -> None:
    """The report and sweep commands live in their own modules."""
    from . import cli_reports, cli_speed, cli_sweep

    for command in [*cli_reports.COMMANDS, *cli_sweep.COMMANDS, *cli_speed.COMMANDS]:
        main.add_command(command)


_add_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
