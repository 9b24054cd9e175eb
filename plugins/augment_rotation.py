"""Random rotation: batched on the device (one affine grid per batch) and the seeds'
per-sample torchvision ``RandomRotation`` for comparison."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from cnnbench import AugmentationSpec, DatasetSpec, hookimpl

DEGREES = 10.0


def batched_rotation(dataset: DatasetSpec, degrees: float = DEGREES) -> Callable[[Any, Any], Any]:
    """Rotate every image of a batch by its own angle in [-degrees, degrees].

    Nearest-neighbour sampling and zero fill, as torchvision's RandomRotation does by
    default; all angles go into one ``affine_grid`` / ``grid_sample`` call.
    """
    import torch  # lazy: torch
    from torch.nn import functional as F  # lazy: torch

    def rotate(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n = x.shape[0]
        angles = (torch.rand(n, generator=generator, device=x.device) * 2 - 1) * math.radians(degrees)
        cos, sin = torch.cos(angles), torch.sin(angles)
        zeros = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)

    return rotate


def sample_rotation(dataset: DatasetSpec, degrees: float = DEGREES) -> Callable[[Any], Any]:
    """torchvision's per-sample ``RandomRotation`` on a PIL image, as in the seeds."""
    import numpy as np  # lazy: numpy
    from PIL import Image  # lazy: PIL
    from torchvision import transforms  # lazy: torchvision

    transform = transforms.RandomRotation(degrees)

    def rotate(image: np.ndarray) -> np.ndarray:
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        out = np.asarray(transform(pil))
        return out[..., None] if out.ndim == 2 else out

    return rotate


@hookimpl
def cnnbench_augmentations() -> list[AugmentationSpec]:
    return [
        AugmentationSpec("none", lambda dataset: None, "no augmentation", "batch"),
        AugmentationSpec("rotate10", batched_rotation, "random rotation +-10 deg, whole batch on the device", "batch"),
        AugmentationSpec(
            "rotate10-tv", sample_rotation, "torchvision RandomRotation(10), per sample on PIL (seeds' way)", "sample"
        ),
    ]
