"""The targets: the published ones the seed documents set themselves, cnnbench's fast targets,
which bound each run's wall time per hardware class (``Target.max_seconds``), and deployment targets,
which bound the int8 model's accuracy and bytes (``Target.min_int8_acc``, ``max_model_bytes``)."""

from __future__ import annotations

from cnnbench import Target, hookimpl

# The 2-core CPU machine cnnbench is developed on is "cpu-2"; "gpu-h100" is one NVIDIA H100.
FAST_CPU, FAST_H100 = "cpu-2", "gpu-h100"
# A claim rests on several seeds (MLPerf Training scores several runs too): fewer is "provisional".
SEEDS = 3


@hookimpl
def cnnbench_targets() -> list[Target]:
    return [
        Target("mnist-10k", "mnist", 0.994, 10_000, 15, "seed 004", "99.4% with < 10k params in <= 15 epochs",
               min_seeds=SEEDS),
        Target("mnist-20k", "mnist", 0.994, 20_000, 19, "seed 000", "99.4% with < 20k params in < 20 epochs",
               min_seeds=SEEDS),
        Target("mnist-8k-fast", "mnist", 0.994, 8_000, 6, "cnnbench",
               "99.4% with < 8k params in <= 6 epochs, a whole run within 120 s on 2 CPU cores, no TTA",
               max_seconds=((FAST_CPU, 120.0),), allow_tta=False, min_seeds=SEEDS),
        Target("cifar10-200k", "cifar10", 0.85, 200_000, None, "seeds 002 and 003", "85% with < 200k params",
               min_seeds=SEEDS),
        Target("cifar10-200k-fast", "cifar10", 0.85, 200_000, None, "cnnbench",
               "85% with < 200k params, a whole run within 15 min on 2 CPU cores or 10 s on one H100",
               max_seconds=((FAST_CPU, 900.0), (FAST_H100, 10.0)), min_seeds=SEEDS),
        # Deployment targets: measured on the int8 model (bench deploy), not the fp32 one.
        Target("cifar10-tiny-int8", "cifar10", 0.0, 80_000, None, "MLPerf Tiny IC01",
               "MLPerf Tiny's image classification: int8 top-1 >= 85% with < 80k params (its ResNet-8: 78k)",
               min_int8_acc=0.85, min_seeds=SEEDS),
        Target("mnist-int8-10kb", "mnist", 0.0, 10_000, None, "cnnbench",
               "int8 top-1 >= 99.3% in at most 10 KiB of int8 model (weights, biases, scales)",
               min_int8_acc=0.993, max_model_bytes=10_240, min_seeds=SEEDS),
        Target("cifar10-200k-91", "cifar10", 0.91, 200_000, None, "cnnbench",
               "91% with < 200k params: the ceiling of a tiny budget, any epoch count", min_seeds=SEEDS),
    ]
