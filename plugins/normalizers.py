"""Normalization layers models are built with (``--normalizer batch|group|layer``).

Group norm uses up to ``GROUPS`` (4) groups: the largest divisor of the channel count
that is not above 4, because GroupNorm needs groups to divide channels (seed 004 has a
13-channel layer, which therefore gets one group). "Layer norm" for conv feature maps
is ``GroupNorm(1, C)``: it normalizes each sample over all of C x H x W with a
per-channel affine, which is what layer norm means for an image and, unlike
``nn.LayerNorm``, does not tie the layer to one spatial size. All three have 2 x C
parameters, so a model's parameter count does not change with the normalizer.
"""

from __future__ import annotations

from typing import Any

from cnnbench import NormalizerSpec, hookimpl

GROUPS = 4


def group_count(channels: int, target: int = GROUPS) -> int:
    """The largest divisor of ``channels`` that is at most ``target``."""
    return max(g for g in range(1, min(target, channels) + 1) if channels % g == 0)


def batch_norm(channels: int) -> Any:
    from torch import nn  # lazy: torch

    return nn.BatchNorm2d(channels)


def group_norm(channels: int) -> Any:
    from torch import nn  # lazy: torch

    return nn.GroupNorm(group_count(channels), channels)


def layer_norm(channels: int) -> Any:
    from torch import nn  # lazy: torch

    return nn.GroupNorm(1, channels)


@hookimpl
def cnnbench_normalizers() -> list[NormalizerSpec]:
    return [
        NormalizerSpec("batch", batch_norm, "BatchNorm2d: statistics over the batch, per channel"),
        NormalizerSpec("group", group_norm, f"GroupNorm with up to {GROUPS} groups (largest divisor of C)"),
        NormalizerSpec("layer", layer_norm, "GroupNorm(1, C): per sample over C x H x W, per-channel affine"),
    ]
