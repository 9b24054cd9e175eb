"""The ``ffcv`` loader: batches read from a ``.beton`` file by ffcv's compiled pipeline.

The split is converted once (``plugins.ffcv_convert``; ``bench convert`` does it ahead of
time) and reused while its source files are unchanged. Each batch is decoded by ffcv,
moved to the run's device right after decoding (``ToDevice(non_blocking=True)`` on CUDA),
and finished there exactly as the in-memory loader finishes it (``BatchFinisher``:
uint8 -> float in [0, 1] -> batch augmentation -> normalization), so both loaders feed a
model the same numbers. Order: ffcv's ``RANDOM`` order seeded with the run's seed (the
same seed gives the same batches; every epoch has its own order), ``SEQUENTIAL`` for
evaluation. A limited request (``--limit-train N``) reads the first N samples through
ffcv's ``indices``.

Per-sample augmentations (e.g. ``rotate10-tv``) are applied, not refused: the batch stays
on the CPU, each image goes through the augmentation, and the batch then moves to the
device. That is as slow as it sounds; batched augmentations run on the device.

On CPU it runs the same pipeline without ``ToDevice``. ffcv sets torch's thread count
to its worker count on import, on ``Loader()`` and on every new epoch; all three are
undone so CPU training keeps every core.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from harness import hookimpl
from harness.errors import BenchError
from harness.records import LoaderRequest, LoaderSpec

from .ffcv_convert import INSTALL_HINT


def default_workers() -> int:
    """ffcv decoding threads: half the cores (decoding raw pixels is a copy; training needs the rest)."""
    return max(1, (os.cpu_count() or 2) // 2)


def log(message: str) -> None:
    import click

    click.echo(f"ffcv: {message}", err=True)


class FfcvLoader:
    """``len()`` batches of ``(x float N x C x H x W normalized, y int64 N)`` on the request's device."""

    def __init__(self, request: LoaderRequest) -> None:
        import numpy as np
        import torch

        from .ffcv_convert import ensure_beton, field_kind, keep_torch_threads, require_ffcv
        from .loaders import BatchFinisher, build_augmentation

        require_ffcv()
        with keep_torch_threads():
            from ffcv.fields.decoders import IntDecoder, NDArrayDecoder, SimpleRGBImageDecoder
            from ffcv.loader import Loader, OrderOption
            from ffcv.transforms import ToDevice, ToTensor

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
            raise BenchError(
                f"{converted.path} holds {converted.count:,} {request.split} images; {count:,} were requested"
            )
        self.path = converted.path

        to_device = [ToDevice(self.device, non_blocking=True)] if self.device.type != "cpu" else []
        decoder = SimpleRGBImageDecoder() if field_kind(request.dataset.image_shape) == "rgb" else NDArrayDecoder()
        pipelines = {
            # per-sample augmentations need the images on the CPU; labels can go ahead
            "image": [decoder, ToTensor(), *(to_device if self.sample_aug is None else [])],
            "label": [IntDecoder(), ToTensor(), *to_device],
        }
        with keep_torch_threads():
            self.loader = Loader(
                str(self.path),
                batch_size=request.batch_size,
                num_workers=int(request.options.get("workers") or default_workers()),
                order=OrderOption.RANDOM if request.shuffle else OrderOption.SEQUENTIAL,
                seed=request.seed,
                indices=None if count == converted.count else np.arange(count),
                pipelines=pipelines,
                drop_last=request.drop_last,
                os_cache=True,
            )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        import torch

        from .loaders import apply_per_sample

        threads = torch.get_num_threads()
        batches = iter(self.loader)  # ffcv sets the thread count here and in its worker thread
        try:
            for x, y in batches:
                if torch.get_num_threads() != threads:
                    torch.set_num_threads(threads)
                # NHWC -> NCHW as a contiguous copy: ffcv reuses its buffers for later batches
                x = x.permute(0, 3, 1, 2).contiguous()
                if self.sample_aug is not None:
                    x = apply_per_sample(x, self.sample_aug).to(self.device, non_blocking=True)
                yield self.finish(x), y.reshape(-1).clone()
        finally:
            batches.close()
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)


@hookimpl
def cnnbench_loaders() -> list[LoaderSpec]:
    return [
        LoaderSpec(
            "ffcv", "plugins.ffcv_loader:FfcvLoader",
            "ffcv .beton files (converted on first use), decoded by ffcv, finished on the device",
            requires=("ffcv",), install_hint=INSTALL_HINT,
        )
    ]
