"""CIFAR-10 networks of seeds 001, 002 and 003.

Widths, kernels, paddings and layer order follow each document's summary; where a
document leaves something open, the class docstring says which reading was chosen and
why (the unit tests pin every parameter count and output shape).
"""

from __future__ import annotations

from torch import nn

from cnnbench.blocks import Norm, SeedNet, batch_norm, conv_unit


def biased_unit(cin: int, cout: int, kernel: int, norm: Norm, dropout: float, padding: int = 0) -> nn.Sequential:
    """Conv (with bias) -> ReLU -> norm -> Dropout, the order of seed 001's summary."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, padding=padding), nn.ReLU(), norm(cout)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class Seed001Net(SeedNet):
    """Seed 001 (``cifar_3block``): three conv blocks joined by 1x1 + max-pool transitions,
    GAP and a 1x1 conv to 10 classes; 46,202 parameters.

    Every conv has a bias (the summary's first layer is 448 = 3 x 16 x 9 + 16) and is followed
    by ReLU -> norm -> Dropout, except the two 1x1 transitions and the last 3x3 conv, which the
    summary shows bare. Blocks 1-2 pad by 1; the last two 3x3 convs do not (8 -> 6 -> 4).

    The document publishes three variants, batch / group / layer norm (80.93 / 79.64 / 79.88 %
    test): they are this one network built with ``--normalizer batch|group|layer``; all three
    norms have 2 x C parameters, so the count is the same for each.
    """

    def __init__(self, norm: Norm = batch_norm, dropout: float = 0.05) -> None:
        super().__init__()
        u = lambda cin, cout, k, p=1: biased_unit(cin, cout, k, norm, dropout, p)  # noqa: E731
        self.features = nn.Sequential(
            u(3, 16, 3), u(16, 32, 3),  # 32, 32
            nn.Conv2d(32, 16, 1), nn.MaxPool2d(2),  # transition: 32 -> 16
            u(16, 16, 3), u(16, 32, 3), u(32, 32, 3),  # 16, 16, 16
            nn.Conv2d(32, 16, 1), nn.MaxPool2d(2),  # transition: 16 -> 8
            u(16, 32, 3), u(32, 32, 3, 0),  # 8, 6
            nn.Conv2d(32, 32, 3),  # 4
            nn.AdaptiveAvgPool2d(1),  # GAP -> 1
            nn.Conv2d(32, 10, 1),
        )


class SeparableBlock(nn.Module):
    """Grouped 3x3 (``cin -> 2 cin``, 32 groups, optionally dilated) then a 1x1 back to ``cin``,
    each Conv -> ReLU -> norm -> Dropout; added to its input when ``residual``."""

    def __init__(self, cin: int, norm: Norm, dropout: float, dilation: int, padding: int, residual: bool) -> None:
        super().__init__()
        self.residual = residual
        self.body = nn.Sequential(
            conv_unit(cin, 2 * cin, 3, norm, dropout, "crbd", padding=padding, dilation=dilation, groups=32),
            conv_unit(2 * cin, cin, 1, norm, dropout, "crbd"),
        )

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class Seed002Net(SeedNet):
    """Seed 002 (``cifar_dilated_res``): a regular 3x3 stem, nine separable blocks (grouped 3x3
    64 -> 128 then 1x1 128 -> 64), the last seven dilated and residual, GAP then a 1x1 conv to
    10 classes; 100,416 parameters, all convs bias-free, Conv -> ReLU -> norm -> Dropout.

    Reading of the summary: each 3x3 in a block has 2,304 parameters with 64 inputs and 128
    outputs. A true depthwise conv (groups = 64) would have 128 x 1 x 9 = 1,152, and a depthwise
    3x3 "on 128 channels" would need 128 inputs; 2,304 = 128 x 2 x 9 is a grouped conv with 32
    groups (two input channels per group), which is what is built. The 1x1 (8,192 = 128 x 64)
    is the pointwise half. Blocks 1-2 are unpadded (30 -> 28 -> 26); blocks 3-9 keep 26 x 26
    with padding = dilation, so they can be residual ("the output of each block is added to the
    output of the previous block"). The summary does not show dilations; 1, 2, 4, 8, 12, 16, 20
    for blocks 3-9 follow the growing dilations of the seed author's published model code.
    """

    DILATIONS = (1, 2, 4, 8, 12, 16, 20)

    def __init__(self, norm: Norm = batch_norm, dropout: float = 0.1) -> None:
        super().__init__()
        block = lambda d, p, res: SeparableBlock(64, norm, dropout, d, p, res)  # noqa: E731
        self.features = nn.Sequential(
            conv_unit(3, 64, 3, norm, dropout, "crbd"),  # 30
            block(1, 0, False), block(1, 0, False),  # 28, 26
            *[block(d, d, True) for d in self.DILATIONS],  # 26 (dilated, residual)
            nn.AvgPool2d(26),  # GAP -> 1 (an AvgPool2d, as in the summary)
            nn.Conv2d(64, 10, 1, bias=False),
        )


class Seed003Net(SeedNet):
    """Seed 003 (``cifar_c13``): C1-C13 as the document lists them, about 104k parameters
    (104,656 here), every conv bias-free and followed by ReLU -> norm -> Dropout except the last.

    Reading chosen (the one that lands on "104K" and on the listed sizes and RFs):
    - 3x3 convs pad 1 ("padding is 1 for all layers"), 1x1 convs pad 0 (padding a 1x1 would
      grow the map, 32 -> 34, against the listed sizes);
    - POOL1/POOL2 "(16,16,3, stride=2)" / "(32,32,3, stride=2)" are strided 3x3 convs with
      those channels (max-pools would give 93k parameters); they give RF 11 and 27 as listed;
    - C10 and C11 are depthwise-separable: a grouped 3x3 with groups = 32 (as listed) followed
      by a 1x1 64 -> 64 each (the header's "C10 and C11 are depthwise separable");
    - the dilated conv (the header's "C13"; it is listed as "C12(64,64,3, dilation=2)" because
      the header counts the pointwise 1x1 as a layer) uses padding 2 to keep 8 x 8 for GAP(8);
    - the output block is a 1x1 conv to 10 channels, then GAP, then log-softmax.
    """

    def __init__(self, norm: Norm = batch_norm, dropout: float = 0.05) -> None:
        super().__init__()

        def u(cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1, groups: int = 1) -> nn.Sequential:
            conv = nn.Conv2d(cin, cout, k, stride, padding=dilation * (k // 2), dilation=dilation, groups=groups,
                             bias=False)
            return nn.Sequential(conv, nn.ReLU(), norm(cout), *([nn.Dropout(dropout)] if dropout > 0 else []))

        self.features = nn.Sequential(
            u(3, 16, 3),  # C1: 32, RF 3
            u(16, 16, 3), u(16, 32, 3), u(32, 32, 3),  # C2-C4: 32, RF 9
            u(32, 16, 1), u(16, 16, 3, stride=2),  # C5 + POOL1: 16, RF 11
            u(16, 16, 3), u(16, 32, 3), u(32, 64, 3),  # C6-C8: 16, RF 23
            u(64, 32, 1), u(32, 32, 3, stride=2),  # C9 + POOL2: 8, RF 27
            u(32, 64, 3, groups=32), u(64, 64, 1),  # C10 depthwise-separable: 8
            u(64, 64, 3, groups=32), u(64, 64, 1),  # C11 depthwise-separable: 8
            u(64, 64, 3, dilation=2),  # dilated: 8
            nn.Conv2d(64, 10, 1, bias=False),  # output 1x1
            nn.AdaptiveAvgPool2d(1),  # GAP(8) -> 1
        )
