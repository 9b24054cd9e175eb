"""Building blocks shared by the seed networks."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

Norm = Callable[[int], nn.Module]


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
) -> nn.Sequential:
    """A bias-free conv followed by the layers in ``order`` after the ``c``:
    ``b`` norm, ``r`` ReLU, ``d`` dropout (e.g. ``"cbdr"`` = Conv-BN-Dropout-ReLU)."""
    layers: list[nn.Module] = []
    for step in order:
        if step == "c":
            layers.append(nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, groups=groups, bias=False))
        elif step == "b" and norm is not None:
            layers.append(norm(cout))
        elif step == "r":
            layers.append(nn.ReLU())
        elif step == "d" and dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class LogSoftmaxHead(nn.Module):
    """Flatten ``N x classes x 1 x 1`` to ``N x classes`` and return log-probabilities
    (the seeds train with ``F.nll_loss`` on ``log_softmax`` outputs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(x.flatten(1), dim=-1)
