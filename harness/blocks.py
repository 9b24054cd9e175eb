"""Building blocks for plugin networks (public: ``from cnnbench.blocks import ...``).

Imports torch: import it inside a model factory, not at a plugin module's top level.
Every cnnbench model returns log-probabilities (the trainer uses ``F.nll_loss``), which
``LogSoftmaxHead`` / ``SeedNet`` take care of.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

Norm = Callable[[int], nn.Module]


def batch_norm(channels: int) -> nn.Module:
    """The default ``norm``: ``BatchNorm2d``."""
    return nn.BatchNorm2d(channels)


def conv_unit(
    cin: int,
    cout: int,
    kernel: int,
    norm: Norm | None,
    dropout: float = 0.0,
    order: str = "cbr",
    padding: int = 0,
    dilation: int = 1,
    groups: int = 1,
    stride: int = 1,
) -> nn.Sequential:
    """A bias-free conv followed by the layers in ``order`` after the ``c``:
    ``b`` norm, ``r`` ReLU, ``d`` dropout (e.g. ``"cbdr"`` = Conv-BN-Dropout-ReLU)."""
    layers: list[nn.Module] = []
    for step in order:
        if step == "c":
            layers.append(nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                                    bias=False))
        elif step == "b" and norm is not None:
            layers.append(norm(cout))
        elif step == "r":
            layers.append(nn.ReLU())
        elif step == "d" and dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class LogSoftmaxHead(nn.Module):
    """Flatten ``N x classes x 1 x 1`` to ``N x classes`` and return log-probabilities."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(x.flatten(1), dim=-1)


class SeedNet(nn.Module):
    """A network that is one ``features`` stack ending in ``classes x 1 x 1``, then
    ``LogSoftmaxHead``. Subclasses assign ``self.features`` in ``__init__``; the state-dict
    keys are ``features.*``."""

    features: nn.Module

    def __init__(self) -> None:
        super().__init__()
        self.head = LogSoftmaxHead()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
