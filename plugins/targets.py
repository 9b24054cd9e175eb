"""The published targets the seed documents set themselves."""

from __future__ import annotations

from cnnbench import Target, hookimpl


@hookimpl
def cnnbench_targets() -> list[Target]:
    return [
        Target("mnist-10k", "mnist", 0.994, 10_000, 15, "seed 004", "99.4% with < 10k params in <= 15 epochs"),
        Target("mnist-20k", "mnist", 0.994, 20_000, 19, "seed 000", "99.4% with < 20k params in < 20 epochs"),
        Target("cifar10-200k", "cifar10", 0.85, 200_000, None, "seeds 002 and 003", "85% with < 200k params"),
    ]
