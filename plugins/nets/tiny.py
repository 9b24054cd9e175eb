"""MLPerf Tiny's image-classification reference (IC01): a ResNet-8 for CIFAR-10.

Built from the published definition: a 3x3 conv to 16 channels, three residual stages of two
3x3 convs (16, 32, 64 channels; the second and third start with stride 2 and have a 1x1 stride-2
conv on the shortcut), 8x8 average pooling and a 10-way dense layer. Convolutions have biases, as in
the reference (77,706 weights and biases plus 480 batch-norm parameters: 78,186). Batch norm follows
every 3x3 conv; ReLU after the first conv of a stage and after the addition.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnbench.blocks import LogSoftmaxHead, Norm, batch_norm


class ResidualStage(nn.Module):
    """conv-norm-ReLU-conv-norm, plus the input (through a 1x1 conv when the shape changes), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, norm: Norm) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1), norm(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1), norm(cout),
        )
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride) if stride != 1 or cin != cout else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet8(nn.Module):
    """32x32x3 -> 16 (32x32) -> 16 (32x32) -> 32 (16x16) -> 64 (8x8) -> 8x8 average pool -> 10."""

    def __init__(self, norm: Norm = batch_norm, dropout: float = 0.0, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        a, b, c = widths
        self.stem = nn.Sequential(nn.Conv2d(3, a, 3, padding=1), norm(a), nn.ReLU())
        self.stages = nn.Sequential(
            ResidualStage(a, a, 1, norm), ResidualStage(a, b, 2, norm), ResidualStage(b, c, 2, norm),
        )
        self.pool = nn.AvgPool2d(8)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(c, 10)
        self.head = LogSoftmaxHead()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.stages(self.stem(x))).flatten(1)
        return self.head(self.classifier(self.dropout(features)))
