"""MNIST networks of seed 004 (four steps) and seed 000.

Layer widths, kernel sizes and the order of Conv / norm / Dropout / ReLU follow the
documents' model summaries; every conv is bias-free, which is what the published
parameter counts imply (e.g. 90 = 1 x 10 x 3 x 3 for the first layer of step 1).
"""

from __future__ import annotations

from torch import nn

from .blocks import LogSoftmaxHead, Norm, conv_unit


def _batch_norm(c: int) -> nn.Module:
    return nn.BatchNorm2d(c)


class Seed004Step1(nn.Module):
    """Seed 004 step 1: the baseline, Conv-BN-ReLU, a 7x7 conv as classifier (10,970 params)."""

    def __init__(self, norm: Norm = _batch_norm, dropout: float = 0.0) -> None:
        super().__init__()
        u = lambda cin, cout, k: conv_unit(cin, cout, k, norm, order="cbr")  # noqa: E731
        self.features = nn.Sequential(
            u(1, 10, 3),
            u(10, 10, 3),
            u(10, 20, 3),  # 26, 24, 22
            nn.MaxPool2d(2),  # 11
            u(20, 10, 1),
            u(10, 10, 3),
            u(10, 20, 3),  # 11, 9, 7
            u(20, 10, 1),  # 7
            nn.Conv2d(10, 10, 7, bias=False),  # 1
        )
        self.head = LogSoftmaxHead()

    def forward(self, x):
        return self.head(self.features(x))


class Seed004Step2(nn.Module):
    """Seed 004 step 2: 8-16 channels, Dropout after layer 3 onwards, a 5x5 conv as classifier
    (6,864 params). The document's dropout is 0.10."""

    def __init__(self, norm: Norm = _batch_norm, dropout: float = 0.10) -> None:
        super().__init__()
        plain = lambda cin, cout, k: conv_unit(cin, cout, k, norm, order="cbr")  # noqa: E731
        drop = lambda cin, cout, k: conv_unit(cin, cout, k, norm, dropout, order="cbdr")  # noqa: E731
        self.features = nn.Sequential(
            plain(1, 8, 3),
            plain(8, 8, 3),
            drop(8, 8, 3),  # 26, 24, 22
            nn.MaxPool2d(2),  # 11
            drop(8, 16, 3),
            drop(16, 8, 3),
            drop(8, 10, 3),  # 9, 7, 5
            nn.Conv2d(10, 10, 5, bias=False),  # 1
        )
        self.head = LogSoftmaxHead()

    def forward(self, x):
        return self.head(self.features(x))


class Seed004Step3(nn.Module):
    """Seed 004 step 3: GAP replaces the big last kernel, capacity added at 7x7 and 5x5
    (8,008 params). The document lowers dropout to 0.007."""

    def __init__(self, norm: Norm = _batch_norm, dropout: float = 0.007) -> None:
        super().__init__()
        plain = lambda cin, cout, k: conv_unit(cin, cout, k, norm, order="cbr")  # noqa: E731
        drop = lambda cin, cout, k: conv_unit(cin, cout, k, norm, dropout, order="cbdr")  # noqa: E731
        self.features = nn.Sequential(
            plain(1, 8, 3),
            plain(8, 8, 3),
            drop(8, 8, 3),  # 26, 24, 22
            nn.MaxPool2d(2),  # 11
            drop(8, 16, 3),
            drop(16, 16, 3),
            drop(16, 8, 1),  # 9, 7, 7
            drop(8, 32, 3),
            drop(32, 16, 1),  # 5, 5
            nn.AvgPool2d(5),  # GAP -> 1
            nn.Conv2d(16, 10, 1, bias=False),
        )
        self.head = LogSoftmaxHead()

    def forward(self, x):
        return self.head(self.features(x))


class Seed004Step4(nn.Module):
    """Seed 004 step 4 (``mnist_gap``): Conv-BN-Dropout-ReLU everywhere, 13/14/26/50 channels,
    GAP then a 1x1 conv (7,852 params). Dropout 0.007 as in step 3."""

    def __init__(self, norm: Norm = _batch_norm, dropout: float = 0.007) -> None:
        super().__init__()
        u = lambda cin, cout, k: conv_unit(cin, cout, k, norm, dropout, order="cbdr")  # noqa: E731
        self.features = nn.Sequential(
            u(1, 8, 3),
            u(8, 8, 3),
            u(8, 8, 3),  # 26, 24, 22
            nn.MaxPool2d(2),  # 11
            u(8, 13, 3),
            u(13, 14, 3),
            u(14, 8, 1),  # 9, 7, 7
            u(8, 26, 3),
            u(26, 50, 1),  # 5, 5
            nn.AvgPool2d(5),  # GAP -> 1
            nn.Conv2d(50, 10, 1, bias=False),
        )
        self.head = LogSoftmaxHead()

    def forward(self, x):
        return self.head(self.features(x))


class Seed000Net(nn.Module):
    """Seed 000: two conv blocks joined by a transition (1x1 conv + max-pool), no fully
    connected layer, a 1x1 conv to 10 channels and global average pooling.

    The document does not give the layer order; it says BN and dropout come at every
    layer with dropout after BN, so each conv (transition included) is Conv-ReLU-BN-Dropout
    and only the final 1x1 is bare. The padding-1 layer of block 2 keeps 9x9. 19,724 params.
    """

    def __init__(self, norm: Norm = _batch_norm, dropout: float = 0.05) -> None:
        super().__init__()
        u = lambda cin, cout, k, p=0: conv_unit(cin, cout, k, norm, dropout, order="crbd", padding=p)  # noqa: E731
        self.features = nn.Sequential(
            u(1, 16, 3),
            u(16, 16, 3),
            u(16, 32, 3),  # 26, 24, 22 (RF 7)
            u(32, 16, 1),
            nn.MaxPool2d(2),  # transition: 22 -> 11
            u(16, 16, 3),
            u(16, 16, 3, 1),
            u(16, 16, 3),
            u(16, 32, 3),  # 9, 9, 7, 5
            nn.Conv2d(32, 10, 1, bias=False),  # 5 x 5 x 10
            nn.AdaptiveAvgPool2d(1),  # GAP -> 1 x 1 x 10
        )
        self.head = LogSoftmaxHead()

    def forward(self, x):
        return self.head(self.features(x))
