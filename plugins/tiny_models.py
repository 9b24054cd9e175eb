"""Registers deployment references: MLPerf Tiny's IC01 ResNet-8 (CIFAR-10, int8 target 85%).

The reference trains for 500 epochs (Adam, batch 32); cnnbench's recipe is sized for 15 minutes of
a 2-core CPU, tuned on ``--val-split 5000`` only. ``bench deploy`` measures what it is worth as int8.
"""

from __future__ import annotations

from cnnbench import ModelSpec, Recipe, hookimpl

NETS = "cnnbench.plugins.nets.tiny"


@hookimpl
def cnnbench_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            "resnet8", "cifar10", f"{NETS}:ResNet8",
            "MLPerf Tiny IC01 reference: 3x3 stem (16), three residual stages (16, 32, 64; 1x1 stride-2 "
            "shortcuts), 8x8 average pool, dense 10; convs with biases",
            "MLPerf Tiny IC01 (85% int8 target; 87.0% published on an STM32 board after 500 epochs)", 78_186,
            Recipe(epochs=8, batch_size=256, optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True,
                   weight_decay=5e-4, scheduler="onecycle", augmentation="cifar-flip-shift", label_smoothing=0.1),
        ),
    ]
