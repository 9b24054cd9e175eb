"""One plan, several seeds: train each (or all at once, ``--fused``) and tell the plugins when all are done."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .errors import BenchError, RunInterrupted
from .plan import RunPlan
from .runrecord import RunRecord

Result = TypeVar("Result")


def parse_seeds(text: str, max_seed: int = 2**63 - 1) -> list[int]:
    """``"5"`` -> ``[0, 1, 2, 3, 4]``; ``"1,2,7"`` -> ``[1, 2, 7]``; seeds lie in ``[0, max_seed]``."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise BenchError(f"--seeds {text!r}: give a count (5) or a comma-separated list (1,2,3)") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise BenchError(f"--seeds {text!r}: need at least one seed and no repeats")
    if "," not in text and len(seeds) > 1000:
        raise BenchError(f"--seeds {text!r}: at most 1000 seeds in one command")
    if any(s < 0 or s > max_seed for s in seeds):
        raise BenchError(f"--seeds {text!r}: seeds must lie in 0..{max_seed}")
    return seeds


def run_seeds(plan: RunPlan, seeds: list[int], hooks: Any) -> list[RunRecord]:
    """Train ``plan`` once per seed, or all seeds as one batched computation when ``plan.fused``;
    returns the records (each already written)."""
    from .train import train  # torch is imported only from here on

    if plan.fused:
        from .fused import train_fused

        where = f"fused seeds {', '.join(map(str, seeds))}"
        records = [record for record, _ in blame_plugins(lambda: train_fused(plan, seeds, hooks), hooks, where)]
    else:
        records = [blame_plugins(lambda s=seed: train(plan, s, hooks)[0], hooks, f"seed {seed}") for seed in seeds]
    hooks.cnnbench_runs_finished(records=records)
    return records


def blame_plugins(call: Callable[[], Result], hooks: Any, where: str) -> Result:
    """``call()``; an exception from plugin code the loop calls directly (a dataset, loader, model,
    augmentation) becomes a one-line ``BenchError`` naming the plugin."""
    try:
        return call()
    except (BenchError, KeyboardInterrupt, OSError, RunInterrupted):
        raise
    except Exception as exc:
        culprit = hooks.culprit(exc) if hasattr(hooks, "culprit") else "unknown"
        if culprit == "unknown":
            raise  # a bug in cnnbench itself: the traceback is the useful report
        message = " ".join(str(exc).split())[:300]
        raise BenchError(f"plugin {culprit!r} failed in {where}: {type(exc).__name__}: {message}") from exc
