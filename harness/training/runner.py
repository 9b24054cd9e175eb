"""One plan, several seeds: train each (or all at once, ``--fused``) and tell the plugins when all are done."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TypeVar

from cnnbench.errors import BenchError, PluginError, RunInterrupted
from cnnbench.registry import SafeHooks
from cnnbench.runrecord import RunRecord
from cnnbench.training.plan import RunPlan

Result = TypeVar("Result")


def run_seeds(plan: RunPlan, seeds: list[int], hooks: SafeHooks) -> list[RunRecord]:
    """Train ``plan`` once per seed, or all seeds as one batched computation when ``plan.fused``;
    returns the records (each already written)."""
    from cnnbench.training.fused import train_fused  # lazy: torch (bench --help imports this module)
    from cnnbench.training.train import train  # lazy: torch

    if plan.fused:
        where = f"fused seeds {', '.join(map(str, seeds))}"
        records = [record for record, _ in blame_plugins(partial(train_fused, plan, seeds, hooks), hooks, where)]
    else:
        records = [blame_plugins(partial(train, plan, seed, hooks), hooks, f"seed {seed}")[0] for seed in seeds]
    hooks.cnnbench_runs_finished(records=records)
    return records


def blame_plugins(call: Callable[[], Result], hooks: SafeHooks, where: str) -> Result:
    """``call()``; an exception from plugin code the loop calls directly (a dataset, loader, model,
    augmentation) becomes a one-line ``PluginError`` naming the plugin."""
    try:
        return call()
    except (BenchError, KeyboardInterrupt, OSError, RunInterrupted):
        raise
    except Exception as exc:
        culprit = hooks.culprit(exc)
        if culprit == "unknown":
            raise  # a bug in cnnbench itself: the traceback is the useful report
        message = " ".join(str(exc).split())[:300]
        raise PluginError(f"plugin {culprit!r} failed in {where}: {type(exc).__name__}: {message}") from exc
