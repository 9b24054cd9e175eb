"""Seed 003's CIFAR-10 augmentation: per sample with albumentations (``cifar-album``), and a
batched on-device equivalent (``cifar-batch``).

Seed 003 names HorizontalFlip, ShiftScaleRotate, CoarseDropout and ToGray but no settings.
cnnbench uses ShiftScaleRotate's defaults (shift 6.25 %, scale 10 %, rotation 45 deg, p 0.5,
reflect-101 border as in the albumentations 1.x the seed ran), one 16 x 16 hole filled
with the dataset mean (p 0.5) and grey with p 0.1 (our choice; the albumentations default
of 0.5 would grey half of the training set).

albumentations 2.x: ``ShiftScaleRotate`` still exists but warns that it is a special case of
``Affine``, so ``Affine`` is used with the same ranges; ``CoarseDropout`` takes
``num_holes_range`` / ``hole_height_range`` / ``hole_width_range`` / ``fill`` instead of 1.x's
``max_holes`` / ``max_height`` / ``fill_value``.

The batched version does flip + shift (reflect-padded translation up to +-2 px, the same
6.25 %; one gather), cutout and grey as one vectorised step each over the whole batch; it
leaves out rotation and scaling.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from cnnbench import AugmentationSpec, DatasetSpec, hookimpl

FLIP_P = 0.5
SHIFT = 0.0625  # fraction of the side, albumentations' ShiftScaleRotate default
SCALE = 0.1
ROTATE = 45.0
AFFINE_P = 0.5
HOLE = 16  # px
HOLE_P = 0.5
GREY_P = 0.1
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as albumentations' weighted_average


def album_pipeline(dataset: DatasetSpec, seed: int | None = None) -> Callable[[Any], Any]:
    """``fn(image)`` on one H x W x C uint8 numpy image: flip, affine, cutout, grey."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A  # lazy: albumentations
    import cv2  # lazy: cv2
    import numpy as np  # lazy: numpy

    if seed is None:  # the trainer has seeded numpy for the run: derive a reproducible seed
        seed = int(np.random.randint(0, 2**31 - 1))
    fill = tuple(round(m * 255) for m in dataset.mean)
    transform = A.Compose(
        [
            A.HorizontalFlip(p=FLIP_P),
            A.Affine(
                translate_percent=(-SHIFT, SHIFT), scale=(1 - SCALE, 1 + SCALE), rotate=(-ROTATE, ROTATE),
                border_mode=cv2.BORDER_REFLECT_101, p=AFFINE_P,
            ),
            A.CoarseDropout(
                num_holes_range=(1, 1), hole_height_range=(HOLE, HOLE), hole_width_range=(HOLE, HOLE),
                fill=fill, p=HOLE_P,
            ),
            A.ToGray(num_output_channels=3, p=GREY_P),
        ],
        seed=seed,
    )

    def augment(image: np.ndarray) -> np.ndarray:
        return transform(image=image)["image"]

    return augment


def batched_pipeline(dataset: DatasetSpec, cutout: bool = True, grey: bool = True) -> Callable[[Any, Any], Any]:
    """``fn(x, generator)`` on a float [0, 1] N x C x H x W batch, on its own device: flip and shift,
    then (unless switched off) cutout and grey."""
    import torch  # lazy: torch
    from torch.nn import functional as F  # lazy: torch

    mean = torch.tensor(dataset.mean)
    weights = torch.tensor(GREY_WEIGHTS)

    def augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        dev = x.device

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, device=dev)

        def coin(p: float) -> torch.Tensor:
            return (rand(n) < p).view(n, 1, 1, 1)

        # flip + shift in one gather: reflect-pad by s, then read each image's h x w window,
        # its columns mirrored for the images that flip
        s = max(1, round(SHIFT * min(h, w)))
        dy = (rand(n) * (2 * s + 1)).long().clamp_(max=2 * s)
        dx = (rand(n) * (2 * s + 1)).long().clamp_(max=2 * s)
        cols = torch.arange(w, device=dev).expand(n, w)
        cols = torch.where(rand(n)[:, None] < FLIP_P, w - 1 - cols, cols) + dx[:, None]
        rows = torch.arange(h, device=dev) + dy[:, None]
        index = (rows[:, :, None] * (w + 2 * s) + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
        padded = F.pad(x, (s, s, s, s), mode="reflect")
        x = padded.flatten(2).gather(2, index).view(n, c, h, w)
        if cutout:
            x = cut_holes(x, rand, coin)
        if c == 3 and grey:  # grey
            grey_x = (x * weights.to(dev, x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
            x = torch.where(coin(GREY_P), grey_x.expand_as(x), x)
        return x

    def cut_holes(x: torch.Tensor, rand: Callable[..., Any], coin: Callable[..., Any]) -> torch.Tensor:
        n, c, h, w = x.shape
        dev = x.device
        # cutout: one HOLE x HOLE square per image, centre anywhere (clipped at the border)
        cy, cx = (rand(n) * h).long(), (rand(n) * w).long()
        ys, xs = torch.arange(h, device=dev), torch.arange(w, device=dev)
        in_y = (ys >= cy[:, None] - HOLE // 2) & (ys < cy[:, None] + HOLE - HOLE // 2)
        in_x = (xs >= cx[:, None] - HOLE // 2) & (xs < cx[:, None] + HOLE - HOLE // 2)
        hole = (in_y[:, :, None] & in_x[:, None, :]).unsqueeze(1) & coin(HOLE_P)
        return torch.where(hole, mean.to(dev, x.dtype).view(1, c, 1, 1), x)

    return augment


@hookimpl
def cnnbench_augmentations() -> list[AugmentationSpec]:
    return [
        AugmentationSpec(
            "cifar-album", album_pipeline,
            "seed 003: albumentations flip, affine (shift/scale/rotate), 16px cutout, grey; per sample",
            "sample", datasets=("cifar10",),
        ),
        AugmentationSpec(
            "cifar-batch", batched_pipeline,
            "flip, +-2px shift, 16px cutout, grey: whole batch on the device, one op per step",
            "batch", datasets=("cifar10",),
        ),
        AugmentationSpec(
            "cifar-flip-shift", lambda dataset: batched_pipeline(dataset, cutout=False, grey=False),
            "flip and +-2px reflect shift only (short fast recipes): whole batch on the device",
            "batch", datasets=("cifar10",),
        ),
    ]
