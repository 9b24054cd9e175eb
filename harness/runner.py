"""One plan, several seeds: train each and tell the plugins when all are done."""

from __future__ import annotations

from typing import Any

from .errors import BenchError
from .plan import RunPlan
from .runrecord import RunRecord


def parse_seeds(text: str) -> list[int]:
    """``"5"`` -> ``[0, 1, 2, 3, 4]``; ``"1,2,7"`` -> ``[1, 2, 7]``."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise BenchError(f"--seeds {text!r}: give a count (5) or a comma-separated list (1,2,3)") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise BenchError(f"--seeds {text!r}: need at least one seed and no repeats")
    return seeds


def run_seeds(plan: RunPlan, seeds: list[int], hooks: Any) -> list[RunRecord]:
    """Train ``plan`` once per seed; returns the records (each already written)."""
    from .train import train  # torch is imported only from here on

    records = [train(plan, seed, hooks)[0] for seed in seeds]
    hooks.cnnbench_runs_finished(records=records)
    return records
