"""The ``ffcv`` loader: batches read from a ``.beton`` file by ffcv's compiled pipeline.

The split is converted once (``cnnbench.plugins.ffcv_convert``; ``bench convert`` does it ahead of
time) and reused while its source files are unchanged. The file lives in the user's cache
dir, or in the folder the loader option ``ffcv_dir`` names; never in the data dir.

Each batch is decoded by ffcv, moved to the run's device as uint8 right after decoding, and
finished there exactly as the in-memory loader finishes it (``BatchFinisher``: uint8 ->
float in [0, 1] -> batch augmentation -> normalization), so both loaders feed a model the
same numbers.

The move to CUDA is ours, not ffcv's ``ToDevice``. ffcv decodes into host buffers it reuses
a few batches later, and its ``ToDevice`` copies from them asynchronously; nothing stops the
decoder thread from overwriting a buffer whose copy is still queued behind a busy GPU
(ffcv issues #37 and #198). With a trainer that does not synchronize every step, on a
shared GPU, that mixed images and labels of different batches: mnist_gap trained to 16%
train accuracy. Here each batch is copied on a side stream, and the host waits for that
copy alone (not for the training queued before it) before ffcv may reuse the buffer.

Order: ffcv's ``RANDOM`` order seeded with the run's seed (the
same seed gives the same batches; every epoch has its own order), ``SEQUENTIAL`` for
evaluation. A limited request (``--limit-train N``) reads the first N samples through
ffcv's ``indices``.

Per-sample augmentations (e.g. ``rotate10-tv``) are applied, not refused: the batch stays
on the CPU, each image goes through the augmentation, and the batch then moves to the
device. That is as slow as it sounds; batched augmentations run on the device.

On CPU each batch is copied out of ffcv's buffers the same way. ffcv sets torch's thread count
to its worker count on import, on ``Loader()`` and on every new epoch; all three are
undone so CPU training keeps every core.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from cnnbench import LoaderRequest, LoaderSpec, hookimpl
from cnnbench.errors import DataError

from .ffcv_convert import INSTALL_HINT, ensure_beton, field_kind, keep_torch_threads, require_ffcv
from .loaders import Batch, BatchFinisher, apply_per_sample, build_augmentation

if TYPE_CHECKING:
    import torch


def default_workers() -> int:
    """ffcv decoding threads: half the cores (decoding raw pixels is a copy; training needs the rest)."""
    return max(1, (os.cpu_count() or 2) // 2)


def log(message: str) -> None:
    click.echo(f"ffcv: {message}", err=True)


class FfcvLoader:
    """``len()`` batches of ``(x float N x C x H x W normalized, y int64 N)`` on the request's device."""

    def __init__(self, request: LoaderRequest) -> None:
        import numpy as np  # lazy: numpy
        import torch  # lazy: torch

        require_ffcv()
        with keep_torch_threads():
            from ffcv.fields.decoders import IntDecoder, NDArrayDecoder, SimpleRGBImageDecoder  # lazy: ffcv
            from ffcv.loader import Loader, OrderOption  # lazy: ffcv
            from ffcv.transforms import ToTensor  # lazy: ffcv

        self.request = request
        self.device = torch.device(request.device)
        kind, fn = build_augmentation(request)
        self.sample_aug = fn if kind == "sample" else None
        self.finish = BatchFinisher(request, fn if kind == "batch" else None)

        converted = ensure_beton(
            request.dataset, request.split, request.data_dir or None,
            out_dir=request.options.get("ffcv_dir"), log=log,
        )
        count = len(request.labels)
        if count > converted.count:
            raise DataError(
                f"{converted.path} holds {converted.count:,} {request.split} images; {count:,} were requested"
            )
        self.path = converted.path
        # ffcv opens the file by name more than once; read it through a descriptor of our own,
        # so a conversion that replaces the file while this run goes on cannot mix two files
        self.fd = os.open(self.path, os.O_RDONLY)
        pinned = f"/proc/self/fd/{self.fd}"
        source = pinned if os.path.exists(pinned) else str(self.path)

        decoder = SimpleRGBImageDecoder() if field_kind(request.dataset.image_shape) == "rgb" else NDArrayDecoder()
        pipelines = {"image": [decoder, ToTensor()], "label": [IntDecoder(), ToTensor()]}
        self.copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        with keep_torch_threads():
            self.loader = Loader(
                source,
                batch_size=request.batch_size,
                num_workers=int(request.options.get("workers") or default_workers()),
                order=OrderOption.RANDOM if request.shuffle else OrderOption.SEQUENTIAL,
                seed=request.seed,
                indices=None if count == converted.count else np.arange(count),
                pipelines=pipelines,
                drop_last=request.drop_last,
                os_cache=True,
            )

    def state_dict(self) -> dict[str, int | torch.Tensor]:
        """ffcv's epoch counter (it seeds each epoch's order) and the batch-augmentation generator."""
        state: dict[str, int | torch.Tensor] = {"epoch": int(self.loader.next_epoch)}
        if self.finish.generator is not None:
            state["augment"] = self.finish.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:  # a checkpoint's (torch.load) contents
        self.loader.next_epoch = int(state["epoch"])
        if self.finish.generator is not None and "augment" in state:
            self.finish.generator.set_state(state["augment"])

    def __len__(self) -> int:
        return len(self.loader)

    def __del__(self) -> None:
        fd = getattr(self, "fd", None)
        if fd is not None:
            os.close(fd)

    def take(self, cpu: torch.Tensor) -> torch.Tensor:
        """A copy of ``cpu`` on the run's device that no longer reads ffcv's buffer when this returns."""
        import torch  # lazy: torch

        if self.copy_stream is None:
            return cpu.clone(memory_format=torch.contiguous_format)

        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.copy_stream):
            on_device = cpu.to(self.device, non_blocking=True)
        self.copy_stream.synchronize()  # waits for this copy only, not for the queued training
        on_device.record_stream(compute)  # allocated on the copy stream, used on the compute stream
        return on_device

    def __iter__(self) -> Iterator[Batch]:
        import torch  # lazy: torch

        threads = torch.get_num_threads()
        batches = iter(self.loader)  # ffcv sets the thread count here and in its worker thread
        try:
            for x, y in batches:
                if torch.get_num_threads() != threads:
                    torch.set_num_threads(threads)
                x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW
                if self.sample_aug is not None:
                    x = apply_per_sample(x, self.sample_aug)
                # our own copies of ffcv's buffers, which it reuses for later batches
                x, y = self.take(x), self.take(y.reshape(-1))
                yield self.finish(x.contiguous()), y
        finally:
            batches.close()
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)


@hookimpl
def cnnbench_loaders() -> list[LoaderSpec]:
    return [
        LoaderSpec(
            "ffcv", "cnnbench.plugins.ffcv_loader:FfcvLoader",
            "ffcv .beton files (converted on first use), decoded by ffcv, finished on the device",
            requires=("ffcv",), install_hint=INSTALL_HINT,
        )
    ]
