"""Registers the CIFAR-10 networks of seeds 001, 002 and 003 with their default recipes.

Names describe the architecture, as the MNIST ones do: ``cifar_3block`` (seed 001: three
conv blocks with 1x1 + max-pool transitions), ``cifar_dilated_res`` (seed 002: residual
dilated separable blocks) and ``cifar_c13`` (seed 003: the C1-C13 listing).
"""

from __future__ import annotations

from cnnbench import ModelSpec, Recipe, hookimpl

NETS = "cnnbench.plugins.nets.cifar"


@hookimpl
def cnnbench_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            "cifar_3block", "cifar10", f"{NETS}:Seed001Net",
            "Seed 001: 3 conv blocks, 1x1 + max-pool transitions, Conv-ReLU-norm-Dropout, GAP; "
            "batch/group/layer norm variants via --normalizer",
            "seed 001 (test 80.93% BN / 79.64% GN / 79.88% LN)", 46_202,
            # Seed 001 gives no recipe, epochs or augmentation: SGD + one-cycle, 20 epochs, dropout 0.05
            # and no augmentation are cnnbench's choice.
            Recipe(epochs=20, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9, scheduler="onecycle",
                   dropout=0.05),
        ),
        ModelSpec(
            "cifar_dilated_res", "cifar10", f"{NETS}:Seed002Net",
            "Seed 002: stem + 9 grouped-3x3/1x1 separable blocks, 7 dilated and residual, GAP, 1x1",
            "seed 002 (best test 85.84%, target 85% < 200k params)", 100_416,
            # Seed 002 states no recipe. Adam lr 0.01, weight decay 1e-5 and 20 epochs are what the
            # author's public notebook used (with ReduceLROnPlateau, which cnnbench lacks: one-cycle
            # instead). Its albumentations flip/shift-scale-rotate/cutout pipeline is not in the
            # document; the batched on-device equivalent keeps CPU runs fast. Dropout 0.1 as the
            # author's model default.
            Recipe(epochs=20, batch_size=128, optimizer="adam", lr=0.01, weight_decay=1e-5, scheduler="onecycle",
                   augmentation="cifar-batch", dropout=0.1),
        ),
        ModelSpec(
            "cifar_c13", "cifar10", f"{NETS}:Seed003Net",
            "Seed 003: C1-C13, strided-conv pools, depthwise-separable C10/C11, dilated conv, GAP",
            "seed 003 (85% mean test acc over the last 5 of 50 epochs)", 104_656,
            # Seed 003 gives 50 epochs and the albumentations pipeline; optimizer, schedule, batch
            # size and dropout are not stated: SGD + one-cycle at lr 0.05, batch 128, dropout 0.05.
            Recipe(epochs=50, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9, scheduler="onecycle",
                   augmentation="cifar-album", dropout=0.05),
        ),
    ]
