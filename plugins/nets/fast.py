"""Networks for the fast targets (cnnbench's own designs, not from the seed documents).

Both spend their arithmetic late: the MNIST net pools after its first conv and the CIFAR net
pools inside every block, so most convolutions run on small maps. That is what makes a
6-epoch MNIST run fit in two minutes of two CPU cores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnbench.blocks import LogSoftmaxHead, Norm, SeedNet, batch_norm, conv_unit


class MnistFast(SeedNet):
    """A 3x3 conv at 26x26, a 2x2 max-pool to 13x13, four 3x3 convs (11, 9, 7, 5), GAP and a 1x1 conv
    to 10 classes; Conv-BN-ReLU, receptive field 20 before the GAP. 7,966 parameters with batch norm
    and about 0.55 M multiply-adds per image (``mnist_gap``: 7,852 and 0.9 M)."""

    def __init__(self, norm: Norm = batch_norm, dropout: float = 0.0, widths: Sequence[int] = (10, 14, 16, 16, 14)):
        super().__init__()
        u = lambda cin, cout: conv_unit(cin, cout, 3, norm, dropout, order="cbdr")  # noqa: E731
        a, b, c, d, e = widths
        self.features = nn.Sequential(
            u(1, a), nn.MaxPool2d(2),  # 26 -> 13
            u(a, b), u(b, c), u(c, d), u(d, e),  # 11, 9, 7, 5
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(e, 10, 1, bias=False),
        )


class MnistFastStride(SeedNet):
    """``MnistFast`` with its first conv at stride 2 instead of a conv and a 2x2 max-pool: 28 -> 13
    directly, so the norm and ReLU of the first layer run on a quarter of the pixels and there is
    no pool. On a CPU that first layer was half of ``MnistFast``'s step (its norm, ReLU and pool are
    passes over memory at 26x26). The same 7,966 parameters; 0.49 M multiply-adds per image."""

    def __init__(self, norm: Norm = batch_norm, dropout: float = 0.0, widths: Sequence[int] = (10, 14, 16, 16, 14)):
        super().__init__()
        u = lambda cin, cout: conv_unit(cin, cout, 3, norm, dropout, order="cbdr")  # noqa: E731
        a, b, c, d, e = widths
        self.features = nn.Sequential(
            conv_unit(1, a, 3, norm, dropout, order="cbdr", stride=2),  # 28 -> 13
            u(a, b), u(b, c), u(c, d), u(d, e),  # 11, 9, 7, 5
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(e, 10, 1, bias=False),
        )


class CifarFastBlock(nn.Module):
    """conv 3x3 -> max-pool 2 -> norm -> ReLU -> conv 3x3 -> norm -> ReLU (the pool halves the map
    before the second conv, so it costs a quarter of the first)."""

    def __init__(self, cin: int, cout: int, norm: Norm) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2), norm(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class CifarFast(nn.Module):
    """A 2x2 stem conv (32 -> 31), three pooling blocks (16, 8, 4), global max-pool and a linear
    classifier whose logits are scaled down (a fixed temperature, as fast CIFAR recipes use)."""

    def __init__(self, norm: Norm = batch_norm, dropout: float = 0.0, widths: Sequence[int] = (24, 32, 64, 88),
                 temperature: float = 0.125) -> None:
        super().__init__()
        stem, *blocks = widths
        layers: list[nn.Module] = [nn.Conv2d(3, stem, 2, bias=False), norm(stem), nn.ReLU()]
        for cin, cout in zip((stem, *blocks[:-1]), blocks, strict=True):
            layers.append(CifarFastBlock(cin, cout, norm))
        self.features = nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(blocks[-1], 10, bias=False)
        self.temperature = temperature
        self.head = LogSoftmaxHead()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.classifier(self.dropout(self.features(x))) * self.temperature)
