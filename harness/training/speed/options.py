"""Every fast-path option of a model timed side by side (``bench speed --options``).

One process times the model's training step under each option in turn (each an ordinary
``measure_speed`` of a plan with that option), then the default again: the two default rows
bracket the others, and their difference is the drift of the machine during the comparison.
``--rounds N`` goes round all options N times and reports each option's median round, so that a
machine whose speed drifts (a shared VM) does not favour the options measured first.
"Two processes x 1 thread" starts two ``bench speed --threads 1`` at once and adds up their
throughput: what two runs side by side (``bench sweep --workers 2 --threads 1``) get from the
same cores.

Each option says what it does to the numbers a run computes: ``same`` (the arithmetic is the
same, up to the order of float additions: the equality tests' tolerance,
tests/test_recipe_options.py), ``changes numbers`` (bf16) or ``changes the recipe`` (batch size).
Only a ``same`` option may become a default.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from cnnbench.training.plan import Overrides
    from cnnbench.training.speed.timing import SpeedResult

Effect = Literal["same", "changes numbers", "changes the recipe", "-"]


@dataclass(frozen=True)
class Option:
    label: str
    effect: Effect
    changes: dict[str, Any]  # Overrides fields
    batch_factor: int = 1
    processes: int = 1  # > 1: that many ``bench speed --threads 1`` at once, their throughput added


CPU_OPTIONS = (
    Option("default (eager)", "-", {}),
    Option("channels_last", "same", {"channels_last": True}),
    Option("compile default", "same", {"compile": "default"}),
    Option("compile max-autotune", "same", {"compile": "max-autotune"}),
    Option("compile default + channels_last", "same", {"compile": "default", "channels_last": True}),
    Option("bf16 autocast", "changes numbers", {"precision": "bf16"}),
    Option("batch x2", "changes the recipe", {}, batch_factor=2),
    Option("batch x4", "changes the recipe", {}, batch_factor=4),
    Option("1 thread", "same", {"threads": 1}),
    Option("2 processes x 1 thread", "same", {"threads": 1}, processes=2),
    Option("default (again)", "-", {}),
)
GPU_OPTIONS = (
    Option("default (eager)", "-", {}),
    Option("channels_last", "same", {"channels_last": True}),
    Option("compile default", "same", {"compile": "default"}),
    Option("compile reduce-overhead", "same", {"compile": "reduce-overhead"}),
    Option("compile max-autotune", "same", {"compile": "max-autotune"}),
    Option("bf16 autocast", "changes numbers", {"precision": "bf16"}),
    Option("batch x2", "changes the recipe", {}, batch_factor=2),
    Option("batch x4", "changes the recipe", {}, batch_factor=4),
    Option("default (again)", "-", {}),
)


@dataclass
class OptionResult:
    option: Option
    batch_size: int
    train_images_per_s: float
    eval_images_per_s: float
    train_gflops_per_s: float
    warmup_s: float
    result: SpeedResult | None  # None for several processes (their results are in ``parts``)
    parts: list[dict[str, Any]]
    rounds: list[float] = field(default_factory=list)  # training img/s of every round, in order

    def to_json(self) -> dict[str, Any]:
        return {
            "option": self.option.label, "effect": self.option.effect, "changes": self.option.changes,
            "batch_size": self.batch_size, "processes": self.option.processes,
            "train_images_per_s": self.train_images_per_s, "eval_images_per_s": self.eval_images_per_s,
            "train_gflops_per_s": self.train_gflops_per_s, "warmup_s": self.warmup_s,
            "rounds": self.rounds, "result": self.result.to_json() if self.result else None, "parts": self.parts,
        }


def options_for(device_type: str) -> tuple[Option, ...]:
    return GPU_OPTIONS if device_type == "cuda" else CPU_OPTIONS


def compare_options(base: Overrides, model: str, recipe_batch: int, measure: Callable[[Overrides], SpeedResult],
                    separate: Callable[[Overrides, int], list[dict[str, Any]]], device_type: str,
                    compiler: bool = True, rounds: int = 1) -> list[OptionResult]:
    """Time ``model`` under every option for ``device_type``, ``rounds`` times round-robin (each
    option's figures are the median round's: drift spreads over all options instead of the last
    ones); ``measure`` times one plan in this process, ``separate`` starts that many processes
    (``speed_in_processes``). Options needing a C++ compiler are left out without one."""
    chosen = [o for o in options_for(device_type) if compiler or o.changes.get("compile", "none") == "none"]
    taken: list[list[OptionResult]] = [[] for _ in chosen]
    for _ in range(rounds):
        for option, results in zip(chosen, taken, strict=True):
            results.append(measure_option(option, base, recipe_batch, measure, separate))
    return [median_round(results) for results in taken]


def measure_option(option: Option, base: Overrides, recipe_batch: int, measure: Callable[[Overrides], SpeedResult],
                   separate: Callable[[Overrides, int], list[dict[str, Any]]]) -> OptionResult:
    batch = (base.batch_size or recipe_batch) * option.batch_factor
    overrides = replace(base, **option.changes, batch_size=batch)
    if option.processes > 1:
        parts = separate(overrides, option.processes)
        return OptionResult(
            option, batch, sum(p["train"]["images_per_s"] for p in parts),
            sum(p["eval"]["images_per_s"] for p in parts), sum(p["train_gflops_per_s"] for p in parts),
            max((p["train"]["warmup_s"] + p["eval"]["warmup_s"] for p in parts), default=0.0), None, parts,
        )
    r = measure(overrides)
    return OptionResult(option, batch, r.train.images_per_s, r.eval.images_per_s, r.train_gflops_per_s,
                        r.train.warmup_s + r.eval.warmup_s, r, [])


def median_round(results: list[OptionResult]) -> OptionResult:
    """The round with the median training img/s (the lower middle one of an even count), with every
    round's figure kept in ``rounds``; the warm-up is the first round's (compilation happens there)."""
    ranked = sorted(results, key=lambda r: r.train_images_per_s)
    middle = ranked[(len(ranked) - 1) // 2]
    return replace(middle, warmup_s=results[0].warmup_s, rounds=[r.train_images_per_s for r in results])


def speed_in_processes(model: str, overrides: Overrides, processes: int, timing_args: list[str],
                       plugins: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """``processes`` × ``bench speed --json`` started together; their JSON objects."""
    command = [sys.executable, "-c", "from cnnbench.cli import main; main()"]
    for module in plugins:
        command += ["--plugin", module]
    command += ["speed", "--model", model, "--json", "--device", overrides.device, "--precision", overrides.precision,
                "--compile", overrides.compile, *timing_args]
    if overrides.batch_size:
        command += ["--batch-size", str(overrides.batch_size)]
    if overrides.threads:
        command += ["--threads", str(overrides.threads)]
    if overrides.channels_last:
        command.append("--channels-last")
    env = {**os.environ, "OMP_NUM_THREADS": str(overrides.threads or 1)}
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                for _ in range(processes)]
    parts = []
    for child in children:
        out, err = child.communicate()
        if child.returncode != 0:
            last = (err.strip().splitlines() or ["(no message)"])[-1]
            raise RuntimeError(f"a separate bench speed process failed: {last}")
        parts.append(json.loads(out.strip().splitlines()[-1]))
    return parts


HEADERS = ["option", "numbers", "batch", "train img/s", "x default", "eval img/s", "train GFLOP/s", "% of peak",
           "warm-up s"]


def render_options(model: str, results: list[OptionResult], peak_gflops: Callable[[str], float] | None,
                   tablefmt: str = "simple") -> str:
    """One model's options: img/s and the ratio to the first default row, GFLOP/s and the peak fraction."""
    from tabulate import tabulate  # lazy: tabulate

    base = results[0].train_images_per_s
    several = any(len(r.rounds) > 1 for r in results)
    headers = HEADERS[:4] + ["(rounds)"] * several + HEADERS[4:]
    rows = []
    for r in results:
        precision = r.option.changes.get("precision", "fp32")
        peak = f"{100 * r.train_gflops_per_s / p:.1f}%" if peak_gflops and (p := peak_gflops(precision)) else "-"
        spread = [f"{min(r.rounds):,.0f}-{max(r.rounds):,.0f}" if r.rounds else "-"] * several
        rows.append([r.option.label, r.option.effect, str(r.batch_size), f"{r.train_images_per_s:,.0f}", *spread,
                     f"{r.train_images_per_s / base:.2f}", f"{r.eval_images_per_s:,.0f}",
                     f"{r.train_gflops_per_s:,.1f}", peak, f"{r.warmup_s:.1f}"])
    table = tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True,
                     colalign=("left", "left", *["right"] * (len(headers) - 2)))
    if len(results) < 2 or not results[-1].option.label.startswith("default"):
        return table + "\n"
    drift = results[-1].train_images_per_s / base - 1
    return table + f"\n{model}: the two default rows differ by {100 * drift:+.0f}% (the machine's drift meanwhile)\n"
