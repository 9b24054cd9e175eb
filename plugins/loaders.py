"""Loaders: cnnbench's in-memory batch loader and the seeds' per-sample DataLoader.

``memory`` keeps the whole split on the run's device as uint8 and builds each batch
with one index, one conversion and (for batch augmentations) one augmentation call.
``torchvision`` is the seeds' pipeline: a Dataset that converts and augments one
sample at a time, batched by ``torch.utils.data.DataLoader``. It exists to measure
what the in-memory path buys, and to run per-sample augmentations (albumentations).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from cnnbench import LoaderRequest, LoaderSpec, hookimpl, resolve

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset

# what augmentation factories return (cnnbench.records.AugmentationSpec): one signature per kind
BatchAugment = Callable[["torch.Tensor", "torch.Generator | None"], "torch.Tensor"]
SampleAugment = Callable[["np.ndarray"], "np.ndarray"]
Batch = tuple["torch.Tensor", "torch.Tensor"]


def build_augmentation(request: LoaderRequest) -> tuple[str, Any]:
    """``(kind, fn)`` of the request's augmentation, or ``("batch", None)`` for none (``fn`` is a
    ``BatchAugment`` or a ``SampleAugment``, as ``kind`` says: a plugin's callable)."""
    aug = request.augmentation
    if aug is None:
        return "batch", None
    return aug.kind, resolve(aug.factory)(request.dataset)


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    import torch  # lazy: torch

    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def generator_states(**generators: torch.Generator | None) -> dict[str, torch.Tensor]:
    return {name: g.get_state() for name, g in generators.items() if g is not None}


def set_generator_states(state: dict[str, torch.Tensor], **generators: torch.Generator | None) -> None:
    for name, g in generators.items():
        if g is not None and name in state:
            g.set_state(state[name])


class BatchFinisher:
    """uint8 batch -> float in [0, 1] -> batch augmentation -> normalized, on the device."""

    def __init__(self, request: LoaderRequest, batch_aug: BatchAugment | None) -> None:
        import torch  # lazy: torch

        device = request.device
        channels = request.dataset.image_shape[0]
        self.mean = torch.tensor(request.dataset.mean, device=device).view(1, channels, 1, 1)
        self.std = torch.tensor(request.dataset.std, device=device).view(1, channels, 1, 1)
        self.batch_aug = batch_aug
        self.generator = make_generator(request.seed + 1, device) if batch_aug else None

    def __call__(self, x_uint8: torch.Tensor) -> torch.Tensor:
        x = x_uint8.float().div_(255)
        if self.batch_aug is not None:
            x = self.batch_aug(x, self.generator)
        return x.sub_(self.mean).div_(self.std)


def apply_per_sample(images: torch.Tensor, fn: SampleAugment) -> torch.Tensor:
    """Run a per-sample (numpy HWC uint8) augmentation over a uint8 NCHW CPU batch."""
    import numpy as np  # lazy: numpy
    import torch  # lazy: torch

    hwc = images.permute(0, 2, 3, 1).numpy()
    out = np.stack([fn(image) for image in hwc])
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


class MemoryLoader:
    def __init__(self, request: LoaderRequest) -> None:
        self.request = request
        kind, fn = build_augmentation(request)
        self.sample_aug = fn if kind == "sample" else None
        # per-sample augmentations run on CPU numpy arrays, so keep the data there for them
        data_device = "cpu" if self.sample_aug else request.device
        self.images = request.images.to(data_device)
        self.labels = request.labels.to(data_device)
        self.finish = BatchFinisher(request, fn if kind == "batch" else None)
        self.order_generator = make_generator(request.seed, "cpu")

    def __len__(self) -> int:
        n, bs = len(self.labels), self.request.batch_size
        return n // bs if self.request.drop_last else -(-n // bs)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The random state that decides the next epochs (order and augmentation), for resuming."""
        return generator_states(order=self.order_generator, augment=self.finish.generator)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        set_generator_states(state, order=self.order_generator, augment=self.finish.generator)

    def __iter__(self) -> Iterator[Batch]:
        import torch  # lazy: torch

        n, bs, device = len(self.labels), self.request.batch_size, self.request.device
        order = torch.randperm(n, generator=self.order_generator) if self.request.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for i in range(len(self)):
            idx = order[i * bs : (i + 1) * bs]
            x, y = self.images[idx], self.labels[idx]
            if self.sample_aug is not None:
                x = apply_per_sample(x, self.sample_aug)
            yield self.finish(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)


class SampleDataset:
    """One sample at a time: uint8 HWC -> augmentation -> float CHW normalized (as ToTensor + Normalize)."""

    def __init__(self, request: LoaderRequest, sample_aug: SampleAugment | None) -> None:
        import torch  # lazy: torch

        self.images = request.images.permute(0, 2, 3, 1).numpy()  # N x H x W x C
        self.labels = request.labels.numpy()
        self.sample_aug = sample_aug
        c = request.dataset.image_shape[0]
        self.mean = torch.tensor(request.dataset.mean).view(c, 1, 1)
        self.std = torch.tensor(request.dataset.std).view(c, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        import torch  # lazy: torch

        image = self.images[i]
        if self.sample_aug is not None:
            image = self.sample_aug(image)
        x = torch.from_numpy(image.copy()).permute(2, 0, 1).float().div_(255)
        return (x - self.mean) / self.std, int(self.labels[i])


class TorchvisionLoader:
    def __init__(self, request: LoaderRequest) -> None:
        import torch  # lazy: torch
        from torch.utils.data import DataLoader  # lazy: torch

        self.request = request
        kind, fn = build_augmentation(request)
        self.batch_aug = fn if kind == "batch" else None
        self.generator = make_generator(request.seed + 1, request.device) if self.batch_aug else None
        workers = int(request.options.get("workers", 0))
        self.samples = SampleDataset(request, fn if kind == "sample" else None)
        # DataLoader takes any map-style dataset (__getitem__ and __len__), not only Dataset subclasses
        self.loader: DataLoader[tuple[torch.Tensor, int]] = DataLoader(
            cast("Dataset[tuple[torch.Tensor, int]]", self.samples),
            batch_size=request.batch_size,
            shuffle=request.shuffle,
            drop_last=request.drop_last,
            num_workers=workers,
            generator=make_generator(request.seed, "cpu"),
            pin_memory=torch.device(request.device).type == "cuda",
        )

    def __len__(self) -> int:
        return len(self.loader)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Order and batch-augmentation generators; per-sample augmentations draw from the
        global generators, which the trainer saves itself (exact with ``workers=0`` only)."""
        return generator_states(order=self.loader.generator, augment=self.generator)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        set_generator_states(state, order=self.loader.generator, augment=self.generator)

    def __iter__(self) -> Iterator[Batch]:
        device = self.request.device
        for x, y in self.loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if self.batch_aug is not None:
                # batch augmentations expect [0, 1] pixels: undo, augment, redo the normalization
                mean, std = (t.to(device) for t in (self.samples.mean, self.samples.std))
                x = (self.batch_aug(x * std + mean, self.generator) - mean) / std
            yield x, y


@hookimpl
def cnnbench_loaders() -> list[LoaderSpec]:
    return [
        LoaderSpec("memory", MemoryLoader, "whole split on the device as uint8; batched convert + augment"),
        LoaderSpec("torchvision", TorchvisionLoader, "per-sample Dataset + torch DataLoader (the seeds' pipeline)"),
    ]
