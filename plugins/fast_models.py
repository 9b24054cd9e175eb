"""Registers cnnbench's own fast models: the shortest honest route to the fast targets.

Their recipes were tuned on a held-out slice of the training set (``--val-split 5000``),
never on the test set; docs/recipes.md ("Fastest known recipes") lists what was tried.
"""

from __future__ import annotations

from cnnbench import ModelSpec, Recipe, hookimpl

NETS = "cnnbench.plugins.nets.fast"
# both MNIST fast models: mnist_fast_s2 was checked on --val-split with mnist_fast's recipe and kept it
MNIST_RECIPE = Recipe(epochs=6, batch_size=128, optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True,
                      scheduler="onecycle", augmentation="rotate10", ema=0.999)


@hookimpl
def cnnbench_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            "mnist_fast", "mnist", f"{NETS}:MnistFast",
            "cnnbench: pool after the first conv, four 3x3 convs on 11-5 px maps, GAP; 0.55 M MACs/image",
            "cnnbench (target mnist-8k-fast)", 7_966, MNIST_RECIPE,
        ),
        ModelSpec(
            "mnist_fast_s2", "mnist", f"{NETS}:MnistFastStride",
            "cnnbench: mnist_fast with a stride-2 first conv instead of conv + pool (no 26x26 maps); 0.49 M MACs/image",
            "cnnbench (target mnist-8k-fast, CPU time)", 7_966, MNIST_RECIPE,
        ),
        ModelSpec(
            "cifar_fast", "cifar10", f"{NETS}:CifarFast",
            "cnnbench: 2x2 stem, three conv-pool-conv blocks (32, 64, 88 channels), global max-pool, linear",
            "cnnbench (target cifar10-200k-fast)", 193_760,
            Recipe(epochs=8, batch_size=256, optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True,
                   weight_decay=5e-4, scheduler="onecycle", augmentation="cifar-flip-shift", label_smoothing=0.2,
                   tta="flip"),
        ),
    ]
