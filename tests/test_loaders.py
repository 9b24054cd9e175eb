"""Loaders and augmentations: parity, seeding, batched vs per-sample rotation."""

from __future__ import annotations

import math

import pytest
import torch

from cnnbench.records import LoaderRequest, resolve


@pytest.fixture(scope="module")
def mnist_test(data_dir, registry):
    return resolve(registry.dataset("mnist").load)(data_dir, "test")


def request(registry, images, labels, **kw) -> LoaderRequest:
    args = dict(
        dataset=registry.dataset("mnist"),
        split="test",
        images=images,
        labels=labels,
        batch_size=500,
        shuffle=False,
        seed=0,
        device=torch.device("cpu"),
    )
    return LoaderRequest(**{**args, **kw})


def batches(registry, loader: str, req: LoaderRequest) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*resolve(registry.loader(loader).factory)(req), strict=False)
    return torch.cat(xs), torch.cat(ys)


def test_memory_loader_full_epoch_is_the_normalized_dataset(registry, mnist_test):
    images, labels = mnist_test
    x, y = batches(registry, "memory", request(registry, images, labels))
    expected = (images.float() / 255 - 0.1307) / 0.3081
    assert torch.equal(y, labels)
    assert torch.allclose(x, expected, atol=1e-6)


def test_torchvision_loader_matches_memory_loader(registry, mnist_test):
    images, labels = mnist_test
    req = request(registry, images[:2000], labels[:2000])
    xm, ym = batches(registry, "memory", req)
    xt, yt = batches(registry, "torchvision", req)
    assert torch.equal(ym, yt)
    assert torch.allclose(xm, xt, atol=1e-6)


def test_shuffle_is_seeded_and_changes_each_epoch(registry, mnist_test):
    images, labels = mnist_test
    req = request(registry, images[:1000], labels[:1000], shuffle=True, batch_size=100, seed=3)
    a = resolve(registry.loader("memory").factory)(req)
    b = resolve(registry.loader("memory").factory)(req)
    first_a = torch.cat([y for _, y in a])
    assert torch.equal(first_a, torch.cat([y for _, y in b]))  # same seed, same order
    assert not torch.equal(first_a, labels[:1000])  # shuffled
    assert not torch.equal(first_a, torch.cat([y for _, y in a]))  # next epoch differs
    assert sorted(first_a.tolist()) == sorted(labels[:1000].tolist())  # a permutation


def test_drop_last_and_len(registry, mnist_test):
    images, labels = mnist_test
    loader = resolve(registry.loader("memory").factory)(
        request(registry, images[:1050], labels[:1050], batch_size=100, drop_last=True)
    )
    assert len(loader) == 10 and sum(len(y) for _, y in loader) == 1000


def test_batched_rotation(registry):
    from cnnbench.plugins.augment_rotation import batched_rotation

    dataset = registry.dataset("mnist")
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 4:24, 13:15] = 1.0  # a vertical bar
    assert torch.equal(batched_rotation(dataset, degrees=0)(x), x)
    gen = torch.Generator().manual_seed(0)
    out = batched_rotation(dataset)(x, gen)
    assert out.shape == x.shape
    assert not torch.equal(out, x)
    # rotation moves pixels but keeps roughly the same ink, and each image gets its own angle
    assert out.sum().item() == pytest.approx(x.sum().item(), rel=0.1)
    assert len({tuple(o.flatten().nonzero().flatten().tolist()) for o in out}) > 8
    # a rotation of at most 10 degrees moves the bar's end by at most 10 * sin(10 deg) ~ 1.7 px plus rounding
    cols = out[:, 0, 4, :].nonzero()[:, 1].float()
    assert (cols - 13.5).abs().max() <= 10 * math.sin(math.radians(10)) + 1.5


def test_per_sample_rotation_keeps_shape(registry):
    import numpy as np

    from cnnbench.plugins.augment_rotation import sample_rotation

    image = np.zeros((28, 28, 1), dtype=np.uint8)
    image[4:24, 13:15] = 255
    out = sample_rotation(registry.dataset("mnist"))(image)
    assert out.shape == (28, 28, 1) and out.dtype == np.uint8


def test_memory_loader_runs_per_sample_augmentation(registry, mnist_test):
    images, labels = mnist_test
    req = request(
        registry, images[:256], labels[:256], batch_size=128, augmentation=registry.augmentation("rotate10-tv")
    )
    x, y = batches(registry, "memory", req)
    assert x.shape == (256, 1, 28, 28) and torch.equal(y, labels[:256])
