"""Seed 003's augmentation, per sample (albumentations) and batched (torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnbench.errors import BenchError
from cnnbench.plugins import augment_cifar as aug


@pytest.fixture(scope="module")
def spec(registry):
    return registry.dataset("cifar10")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Smooth random uint8 images (N x 3 x 32 x 32) with distinct colour channels."""
    gen = torch.Generator().manual_seed(0)
    coarse = torch.rand(400, 3, 8, 8, generator=gen)
    return (torch.nn.functional.interpolate(coarse, size=32, mode="bilinear") * 255).round().to(torch.uint8)


def is_grey(x: np.ndarray, channel_axis: int) -> np.ndarray:
    c = np.moveaxis(x.astype(np.int16), channel_axis, 1)
    return (np.abs(c[:, 0] - c[:, 1]).reshape(len(c), -1).max(1) <= 1) & (
        np.abs(c[:, 1] - c[:, 2]).reshape(len(c), -1).max(1) <= 1
    )


def test_registered_for_cifar10_only(registry) -> None:
    album, batch = registry.augmentation("cifar-album"), registry.augmentation("cifar-batch")
    assert (album.kind, batch.kind) == ("sample", "batch")
    assert album.datasets == batch.datasets == ("cifar10",)


def test_album_pipeline_on_one_image(spec, images) -> None:
    hwc = images.permute(0, 2, 3, 1).numpy()
    fn = aug.album_pipeline(spec, seed=3)
    out = np.stack([fn(image) for image in hwc])
    assert out.shape == hwc.shape and out.dtype == np.uint8
    changed = (out != hwc).reshape(len(out), -1).any(1).mean()
    assert 0.6 < changed < 1.0  # flip 0.5, affine 0.5, hole 0.5, grey 0.1: ~1 - 0.5**3 * 0.9
    assert 0.03 < is_grey(out, 3).mean() < 0.2  # ToGray p = 0.1
    again = aug.album_pipeline(spec, seed=3)
    assert np.array_equal(np.stack([again(image) for image in hwc[:20]]), out[:20])  # seeded


def test_batch_pipeline_shape_range_and_seeding(spec, images) -> None:
    x = images.float() / 255
    fn = aug.batched_pipeline(spec)
    out = fn(x.clone(), torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert 0.0 <= out.min() and out.max() <= 1.0
    same = fn(x.clone(), torch.Generator().manual_seed(1))
    other = fn(x.clone(), torch.Generator().manual_seed(2))
    assert torch.equal(out, same) and not torch.equal(out, other)
    assert 0.03 < is_grey((out * 255).round().numpy(), 1).mean() < 0.2  # grey p = 0.1


def test_batch_shift_and_flip_are_exact_windows(spec, images, monkeypatch) -> None:
    """Without cutout and grey, every output is a (possibly mirrored) window of the
    reflect-padded input, shifted by at most 2 px, and about half are mirrored."""
    monkeypatch.setattr(aug, "HOLE_P", 0.0)
    monkeypatch.setattr(aug, "GREY_P", 0.0)
    x = images[:200].float() / 255
    out = aug.batched_pipeline(spec)(x.clone(), torch.Generator().manual_seed(5))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    flips, shifts = 0, set()
    for i in range(len(x)):
        matches = [
            (flip, dy, dx)
            for flip in (False, True)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(out[i], (lambda w: w.flip(2) if flip else w)(padded[i, :, dy : dy + 32, dx : dx + 32]))
        ]
        assert matches, f"image {i} is not a shifted window of its input"
        flips += matches[0][0]
        shifts.add(matches[0][1:])
    assert 60 < flips < 140 and len(shifts) == 25


def test_batch_cutout_fills_a_square_with_the_mean(spec, images, monkeypatch) -> None:
    monkeypatch.setattr(aug, "HOLE_P", 1.0)
    monkeypatch.setattr(aug, "GREY_P", 0.0)
    monkeypatch.setattr(aug, "FLIP_P", 0.0)
    monkeypatch.setattr(aug, "SHIFT", 0.0)  # still 1 px: the minimum shift
    x = images[:50].float() / 255
    out = aug.batched_pipeline(spec)(x.clone(), torch.Generator().manual_seed(0))
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    for image in out:
        hole = (image == mean).all(0)
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        assert 8 <= len(rows) <= aug.HOLE and 8 <= len(cols) <= aug.HOLE  # clipped at borders
        assert hole[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()  # a filled rectangle


def test_batch_pipeline_runs_on_the_trainers_loader(registry, spec, images) -> None:
    from cnnbench.plugins.loaders import MemoryLoader
    from cnnbench.records import LoaderRequest

    for name in ("cifar-batch", "cifar-album"):
        request = LoaderRequest(
            dataset=spec, split="train", images=images, labels=torch.zeros(len(images), dtype=torch.int64),
            batch_size=64, shuffle=True, seed=0, device=torch.device("cpu"),
            augmentation=registry.augmentation(name),
        )
        batches = list(MemoryLoader(request))
        assert len(batches) == 7 and batches[0][0].shape == (64, 3, 32, 32)


def test_refused_for_mnist_models(registry, tmp_path) -> None:
    from cnnbench.training.plan import Overrides, make_plan

    overrides = Overrides(augmentation="cifar-batch", epochs=1, results_dir=tmp_path)
    with pytest.raises(BenchError, match="'cifar-batch' is for cifar10, not mnist"):
        make_plan(registry, "mnist_gap", overrides)
