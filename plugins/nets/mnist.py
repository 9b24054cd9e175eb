"""MNIST networks of seed 004 (four steps) and seed 000.

Layer widths, kernel sizes and the order of Conv / norm / Dropout / ReLU follow the
documents' model summaries; every conv is bias-free, which is what the published
parameter counts imply (e.g. 90 = 1 x 10 x 3 x 3 for the first layer of step 1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from cnnbench.blocks import Norm, SeedNet, batch_norm, conv_unit


def gap_stack(units: Sequence[Callable[[int, int, int], nn.Module]], widths: Sequence[int]) -> nn.Sequential:
    """The layout of seed 004's steps 3 and 4: 3x3, 3x3, 3x3 (26, 24, 22), max-pool (11),
    3x3, 3x3, 1x1 (9, 7, 7), 3x3, 1x1 (5, 5), GAP (1), a bias-free 1x1 to 10 classes.
    ``units[i](cin, cout, kernel)`` builds conv ``i``; ``widths[i]`` is its output channels."""
    kernels = (3, 3, 3, 3, 3, 1, 3, 1)
    convs = [unit(cin, cout, k) for unit, cin, cout, k in zip(units, (1, *widths[:-1]), widths, kernels, strict=True)]
    return nn.Sequential(
        *convs[:3], nn.MaxPool2d(2), *convs[3:], nn.AvgPool2d(5), nn.Conv2d(widths[-1], 10, 1, bias=False)
    )


class Seed004Step1(SeedNet):
    """Seed 004 step 1: the baseline, Conv-BN-ReLU, a 7x7 conv as classifier (10,970 params)."""

    def __init__(self, norm: Norm = batch_norm, dropout: float = 0.0) -> None:
        super().__init__()
        u = lambda cin, cout, k: conv_unit(cin, cout, k, norm, order="cbr")  # noqa: E731
        self.features = nn.Sequential(
            u(1, 10, 3), u(10, 10, 3), u(10, 20, 3),  # 26, 24, 22
            nn.MaxPool2d(2),  # 11
            u(20, 10, 1), u(10, 10, 3), u(10, 20, 3),  # 11, 9, 7
            u(20, 10, 1),  # 7
            nn.Conv2d(10, 10, 7, bias=False),  # 1
        )


class Seed004Step2(SeedNet):
    """Seed 004 step 2: 8-16 channels, Dropout after layer 3 onwards, a 5x5 conv as classifier
    (6,864 params). The document's dropout is 0.10."""

    def __init__(self, norm: Norm = batch_norm, dropout: float = 0.10) -> None:
        super().__init__()
        plain = lambda cin, cout, k: conv_unit(cin, cout, k, norm, order="cbr")  # noqa: E731
        drop = lambda cin, cout, k: conv_unit(cin, cout, k, norm, dropout, order="cbdr")  # noqa: E731
        self.features = nn.Sequential(
            plain(1, 8, 3), plain(8, 8, 3), drop(8, 8, 3),  # 26, 24, 22
            nn.MaxPool2d(2),  # 11
            drop(8, 16, 3), drop(16, 8, 3), drop(8, 10, 3),  # 9, 7, 5
            nn.Conv2d(10, 10, 5, bias=False),  # 1
        )


class Seed004Step3(SeedNet):
    """Seed 004 step 3: GAP replaces the big last kernel, capacity added at 7x7 and 5x5
    (8,008 params). The document lowers dropout to 0.007."""

    def __init__(self, norm: Norm = batch_norm, dropout: float = 0.007) -> None:
        super().__init__()
        plain = lambda cin, cout, k: conv_unit(cin, cout, k, norm, order="cbr")  # noqa: E731
        drop = lambda cin, cout, k: conv_unit(cin, cout, k, norm, dropout, order="cbdr")  # noqa: E731
        self.features = gap_stack((plain, plain, *[drop] * 6), (8, 8, 8, 16, 16, 8, 32, 16))


class Seed004Step4(SeedNet):
    """Seed 004 step 4 (``mnist_gap``): Conv-BN-Dropout-ReLU everywhere, 13/14/26/50 channels,
    GAP then a 1x1 conv (7,852 params). Dropout 0.007 as in step 3."""

    def __init__(self, norm: Norm = batch_norm, dropout: float = 0.007) -> None:
        super().__init__()
        u = lambda cin, cout, k: conv_unit(cin, cout, k, norm, dropout, order="cbdr")  # noqa: E731
        self.features = gap_stack([u] * 8, (8, 8, 8, 13, 14, 8, 26, 50))


class Seed000Net(SeedNet):
    """Seed 000: two conv blocks joined by a transition (1x1 conv + max-pool), no fully
    connected layer, a 1x1 conv to 10 channels and global average pooling.

    The document does not give the layer order; it says BN and dropout come at every
    layer with dropout after BN, so each conv (transition included) is Conv-ReLU-BN-Dropout
    and only the final 1x1 is bare. The padding-1 layer of block 2 keeps 9x9. 19,728 params.
    """

    def __init__(self, norm: Norm = batch_norm, dropout: float = 0.05) -> None:
        super().__init__()
        u = lambda cin, cout, k, p=0: conv_unit(cin, cout, k, norm, dropout, order="crbd", padding=p)  # noqa: E731
        self.features = nn.Sequential(
            u(1, 16, 3), u(16, 16, 3), u(16, 32, 3),  # 26, 24, 22 (RF 7)
            u(32, 16, 1), nn.MaxPool2d(2),  # transition: 22 -> 11
            u(16, 16, 3), u(16, 16, 3, 1), u(16, 16, 3), u(16, 32, 3),  # 9, 9, 7, 5
            nn.Conv2d(32, 10, 1, bias=False),  # 5 x 5 x 10
            nn.AdaptiveAvgPool2d(1),  # GAP -> 1 x 1 x 10
        )
