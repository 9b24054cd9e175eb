"""An example cnnbench plugin, installed as its own distribution.

It registers one model and watches runs through the lifecycle hooks; set
``EXAMPLE_STOP_AT=0.98`` to stop a run once its test accuracy reaches 98%.
"""

import os

from cnnbench import ModelSpec, Recipe, hookimpl


def tiny_net(norm, dropout=0.0):
    from torch import nn

    from cnnbench.blocks import LogSoftmaxHead, conv_unit

    return nn.Sequential(
        conv_unit(1, 8, 3, norm),
        nn.MaxPool2d(2),  # 13
        conv_unit(8, 16, 3, norm),
        nn.MaxPool2d(2),  # 5
        conv_unit(16, 10, 1, None, order="c"),
        nn.AdaptiveAvgPool2d(1),
        LogSoftmaxHead(),
    )


@hookimpl
def cnnbench_models():
    return [
        ModelSpec(
            "example_tiny",
            "mnist",
            tiny_net,
            "A 1.4k-parameter demo network",
            "examples/",
            1_432,
            Recipe(epochs=3, lr=0.05),
        )
    ]


@hookimpl
def cnnbench_epoch_end(run, epoch):
    stop_at = float(os.environ.get("EXAMPLE_STOP_AT", "2"))
    return epoch.test_acc >= stop_at
