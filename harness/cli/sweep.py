"""``bench sweep``: many runs at once, through a launcher plugin (``local``, ``ray`` or a third party's).

Every option of ``bench run`` that changes what is run takes a comma list here
(``--model mnist_step1,mnist_step2 --normalizer batch,group --seeds 5``); each value is
checked with ``bench run``'s own option type. A TOML file (``--file``) can hold the same
grid and explicit configurations. Each registered launcher adds its own options, named after it
(``--ray-address``, ``--local-jobs-per-gpu``): they are read from the plugins of this invocation
when the command parses or prints its help, and an option of a launcher not chosen is refused.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from cnnbench import deprecated
from cnnbench.cli.run import run
from cnnbench.errors import BenchError, PluginError, Terminated, UsageError, on_sigterm
from cnnbench.launcher import Launcher, LauncherOptions, OptionField, launcher_class, option_fields
from cnnbench.records import LaunchOptions
from cnnbench.registry import Registry, registry_from
from cnnbench.seeds import parse_seeds, seeds_from_value
from cnnbench.sweep import grid as sw
from cnnbench.training.plan import check_loader_available

MAX_INT = 2**63 - 1  # a TOML integer can have any size; every count and size here fits 64 bits
GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


# --- launcher options: declared by each launcher's Options dataclass ----------------------------


class LauncherValue(click.ParamType):
    """A launcher option's value, parsed and bounded as its ``OptionField`` says (NaN never passes)."""

    def __init__(self, spec: OptionField) -> None:
        self.spec = spec
        self.name = spec.kind.__name__

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self.spec.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class LauncherOption(click.Option):
    """``--NAME-FIELD``: an option launcher ``NAME`` declares; the value goes to its ``Options``."""

    def __init__(self, launcher: str, spec: OptionField) -> None:
        self.launcher, self.spec = launcher, spec
        shown = "" if spec.default is None or spec.kind is bool else f"  [default: {spec.default}]"
        help_text = f"{launcher} launcher: {spec.help}{shown}"
        if spec.kind is bool:
            super().__init__([spec.flag(launcher)], is_flag=True, default=False, help=help_text)
        else:
            super().__init__([spec.flag(launcher)], type=LauncherValue(spec), default=None, help=help_text,
                             metavar=spec.metavar or spec.kind.__name__.upper())


def launcher_options(ctx: click.Context, own: list[click.Parameter]) -> list[LauncherOption]:
    """Every registered launcher's options (cached for this invocation); a clash is a ``PluginError``."""
    key = "cnnbench.sweep.launcher_options"
    if key not in ctx.meta:
        registry = registry_from(ctx)
        found: list[LauncherOption] = []
        for name, entry in registry.entries("launchers").items():
            try:
                cls = launcher_class(name, entry.record.factory)
                found += [LauncherOption(name, spec) for spec in option_fields(cls.Options)]
            except PluginError as exc:
                raise PluginError(f"plugin {entry.plugin!r}: {exc}") from None
        check_clashes(registry, own, found)
        ctx.meta[key] = found
    return ctx.meta[key]


def check_clashes(registry: Registry, own: list[click.Parameter], added: list[LauncherOption]) -> None:
    """Two options with one name (``--no-progress`` from a launcher called ``no``) are refused."""
    taken = {opt: "bench sweep" for param in own for opt in [*param.opts, *param.secondary_opts, param.name or ""]}
    for option in added:
        for name in (*option.opts, option.name or ""):
            if name in taken:
                plugin = registry.entries("launchers")[option.launcher].plugin
                raise PluginError(f"plugin {plugin!r}: launcher {option.launcher!r} adds option {name}, which "
                                  f"{taken[name]} has already")
            taken[name] = f"launcher {option.launcher!r}"


class SweepCommand(click.Command):
    """A command whose options include those of every registered launcher."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, deprecated.rename_old_sweep_options(args))

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        help_option = self.get_help_option(ctx)
        own = [*self.params, *([help_option] if help_option else [])]
        return [*self.params, *launcher_options(ctx, own), *([help_option] if help_option else [])]


def chosen_options(ctx: click.Context, launcher: str, values: dict[str, Any]) -> dict[str, Any]:
    """The options given for ``launcher`` (as its ``Options`` fields), taken out of ``values``; an
    option of another launcher is a ``UsageError``."""
    given: dict[str, Any] = {}
    for param in ctx.command.get_params(ctx):
        if not isinstance(param, LauncherOption) or param.name is None:
            continue
        value = values.pop(param.name, None)
        if ctx.get_parameter_source(param.name) not in GIVEN:
            continue
        if param.launcher != launcher:
            raise UsageError(f"{param.spec.flag(param.launcher)} is an option of the {param.launcher} launcher; "
                             f"this sweep uses --launcher {launcher}")
        given[param.spec.name] = value
    return given


def make_launcher(registry: Registry, name: str, settings: LaunchOptions, given: dict[str, Any]) -> Launcher[Any]:
    """The chosen launcher, with its options; its ``requires`` checked first."""
    spec = registry.get("launchers", name)
    check_loader_available(spec, "launcher")
    cls = launcher_class(name, spec.factory)
    options: LauncherOptions = sw.plugin_call(name, cls.Options, **given)
    return sw.plugin_call(name, cls, settings, options)


# --- sweep values: from the flags and the TOML file ------------------------------------------------


def _list_options() -> list[click.Option]:
    options = []
    for param in run.params:
        if isinstance(param, click.Option) and param.name in sw.SWEEP_KEYS:
            options.append(click.Option([param.name, *param.opts], type=str, metavar="A[,B...]",
                                        help=f"{param.help} Comma list: one job per value."))
    return options


def convert(ctx: click.Context, name: str, value: Any) -> Any:
    """A sweep value (from a flag or a TOML file) checked by ``bench run``'s option of that name."""
    if name not in sw.SWEEP_KEYS:
        raise UsageError(f"unknown sweep key {name!r}; valid keys: {', '.join(sw.SWEEP_KEYS)}")
    if name == "seeds":
        return seeds_from_value(value)
    if isinstance(value, dict | list | tuple):
        raise UsageError(f"{name} = {_short(value)}: give a value or a list of values")
    if isinstance(value, int) and not isinstance(value, bool) and not -MAX_INT <= value <= MAX_INT:
        raise UsageError(f"{name} = {_short(value)}: beyond a 64-bit integer")
    if name == "model":
        if not isinstance(value, str):
            raise UsageError(f"model = {_short(value)}: a model is named by a string (see `bench list models`)")
        return value
    param = next(p for p in run.params if p.name == name)
    try:
        return param.type.convert(str(value) if not isinstance(value, str) else value, param, ctx)
    except click.BadParameter as exc:
        raise UsageError(f"{name} = {_short(value)}: {exc.format_message()}") from None


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def convert_table(ctx: click.Context, table: dict[str, Any]) -> dict[str, Any]:
    """Every value of a grid or configuration table checked; lists stay lists (they are crossed)."""
    return {k: convert(ctx, k, v) if k == "seeds" or not isinstance(v, list | tuple)
            else [convert(ctx, k, x) for x in v] for k, v in table.items()}


def sweep_tables(ctx: click.Context, file: str | None,
                 lists: dict[str, str | None]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The grid and configurations of the file, the flags winning; counted before any value is converted."""
    grid, configs = sw.read_sweep_file(Path(file)) if file else ({}, [])
    for name, text in lists.items():  # flags win over the file, in [grid] and in every [[config]]
        if text is not None:
            grid[name] = parse_seeds(text) if name == "seeds" else [v.strip() for v in text.split(",") if v.strip()]
            for config in configs:
                config.pop(name, None)
    sw.count_jobs(grid, configs)
    return convert_table(ctx, grid), [convert_table(ctx, c) for c in configs]


# --- the command ----------------------------------------------------------------------------------


@click.pass_context
def sweep(ctx: click.Context, file: str | None, launcher: str, jobs: int | None, dry_run: bool, results_dir: str,
          data_dir: str | None, log_dir: str | None, no_progress: bool, **values: Any) -> None:
    """Run a grid of configurations x seeds; jobs whose records exist, or that another sweep is running,
    are skipped."""
    registry = registry_from(ctx)
    registry.get("launchers", launcher)  # an unknown name first, before any value is read
    given = chosen_options(ctx, launcher, values)
    grid, configs = sweep_tables(ctx, file, values)
    jobs_list = sw.expand(grid, configs, tuple(registry.pm.explicit), registry)
    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    settings = LaunchOptions(results_dir=results_dir, log_dir=log_dir or str(Path("bench-out") / "sweeps" / stamp),
                             data_dir=data_dir, jobs=jobs, progress=not no_progress)
    chosen = make_launcher(registry, launcher, settings, given)
    sw.plugin_call(launcher, chosen.check, jobs_list)
    sw.check_jobs(registry, jobs_list, settings, here=chosen.jobs_run_here)
    done = sw.done_records(Path(results_dir), [j.key for j in jobs_list])
    todo = [j for j in jobs_list if j.key not in done]
    click.echo(sw.plan_text(jobs_list, done, launcher, settings))
    if dry_run:
        return
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        outcome = sw.run_sweep(chosen, launcher, todo, settings) if todo else None
    except KeyboardInterrupt as exc:
        click.echo(f"error: sweep interrupted; finished jobs keep their records and running ones were stopped: "
                   f"repeat the command to finish it (logs: {settings.log_dir})", err=True)
        sys.exit(143 if isinstance(exc, Terminated) else 130)
    click.echo(sw.board_text(registry, Path(results_dir), [j.key for j in jobs_list]))
    if outcome is not None and outcome.failed:
        raise BenchError(f"{len(outcome.failed)} of {len(outcome.results)} jobs failed; "
                         f"their logs are in {settings.log_dir}")


def sweep_command() -> click.Command:
    params: list[click.Parameter] = [
        click.Option(["--file"], type=click.Path(dir_okay=False), help="TOML sweep file: [grid] and [[config]]."),
        click.Option(["--launcher"], default="local", show_default=True,
                     help="See `bench list launchers`; each launcher's own options follow, named after it."),
        click.Option(["--jobs"], type=click.IntRange(1, 4096), help="At most N jobs at once [the launcher's default]."),
        click.Option(["--dry-run"], is_flag=True, help="Print the plan only."),
        click.Option(["--results-dir"], type=click.Path(file_okay=False), default="results", show_default=True),
        click.Option(["--data-dir"], type=click.Path(file_okay=False),
                     help="Dataset folder on every machine that runs jobs [$BENCH_DATA_DIR or ./data there]."),
        click.Option(["--log-dir"], type=click.Path(file_okay=False),
                     help="One log per job [bench-out/sweeps/<time>/]."),
        click.Option(["--no-progress"], is_flag=True, help="No progress bar."),
        *_list_options(),
    ]
    return SweepCommand("sweep", callback=sweep, params=params, help=sweep.__doc__)


COMMANDS = [sweep_command()]
