"""The MNIST dataset, read from the four official IDX files in torchvision's layout
(``<data-dir>/MNIST/raw``), checked and held in memory as uint8 tensors.

Each file is read once, bounded by the size its split's images take (``cnnbench.plugins.idx``):
the md5 is checked on the bytes that are then decoded, and a FIFO or device named like a data
file is refused instead of read."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cnnbench import DatasetSpec, hookimpl
from cnnbench.datadir import resolve_data_dir
from cnnbench.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import torch

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
# md5 of the official gzip files (the values torchvision pins)
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MEAN, STD = (0.1307,), (0.3081,)
# the largest official file (train images, decompressed) and 1 MiB more, so a padded file says it is padded
MAX_FILE_BYTES = 16 + 60_000 * 28 * 28 + 2**20


def find_file(raw_dir: Path, stem: str) -> Path | None:
    """``<stem>.gz`` or ``<stem>``, whatever it is (a FIFO named so is found, and refused when read)."""
    for candidate in (raw_dir / f"{stem}.gz", raw_dir / stem):
        if os.path.lexists(candidate):
            return candidate
    return None


def check_md5(path: Path, data: bytes) -> None:
    """The official ``.gz`` files must match torchvision's md5; uncompressed files are checked by decoding only."""
    expected = OFFICIAL_MD5.get(path.name)
    if expected and hashlib.md5(data).hexdigest() != expected:
        raise DataError(f"{path}: md5 does not match the official file; it is corrupt or altered")


def read_split_file(path: Path, magic: int, count: int) -> np.ndarray:
    """One IDX file of ``count`` items: read once and never past ``MAX_FILE_BYTES``, md5-checked when it
    is an official ``.gz``, gunzipped, decoded (which checks its size exactly)."""
    from .idx import decode_idx, gunzip, gzip_bound, read_file  # lazy: numpy

    size = MAX_FILE_BYTES
    data = read_file(path, gzip_bound(size) if path.suffix == ".gz" else size)
    check_md5(path, data)
    raw = gunzip(path, data, size) if path.suffix == ".gz" else data
    return decode_idx(path, raw, magic, count)


def try_download(root: Path) -> None:
    """torchvision's downloader as the last resort; raises ``DataError`` when it fails."""
    try:
        from torchvision.datasets import MNIST  # lazy: torchvision

        MNIST(root=str(root), train=True, download=True)
        MNIST(root=str(root), train=False, download=True)
    except Exception as exc:
        raise DataError(
            f"MNIST files not found in {root / 'MNIST' / 'raw'} and the download failed "
            f"({type(exc).__name__}). Put train/t10k-images-idx3-ubyte[.gz] and "
            "train/t10k-labels-idx1-ubyte[.gz] there, or point --data-dir / BENCH_DATA_DIR "
            "at a folder holding MNIST/raw"
        ) from exc


def load(data_dir: str | Path | None, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 N x 1 x 28 x 28, labels int64 N)`` for ``split`` ("train" or "test")."""
    import torch  # lazy: torch

    from .idx import IMAGES_MAGIC, LABELS_MAGIC  # lazy: numpy

    if split not in FILES:
        raise DataError(f"MNIST has no split {split!r}; its splits: {', '.join(FILES)}")
    root = resolve_data_dir(data_dir)
    raw_dir = root / "MNIST" / "raw"
    images_stem, labels_stem, count = FILES[split]
    paths = [find_file(raw_dir, images_stem), find_file(raw_dir, labels_stem)]
    if None in paths:
        try_download(root)
        paths = [find_file(raw_dir, images_stem), find_file(raw_dir, labels_stem)]
    images_path, labels_path = paths
    if images_path is None or labels_path is None:
        raise DataError(f"the MNIST download finished but {raw_dir} still lacks the {split} files")
    images = read_split_file(images_path, IMAGES_MAGIC, count)
    labels = read_split_file(labels_path, LABELS_MAGIC, count)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: images are {' x '.join(map(str, images.shape[1:]))}, expected 28 x 28")
    if labels.max() > 9:
        raise DataError(f"{labels_path}: label {labels.max()} out of range 0-9")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype("int64"))


@hookimpl
def cnnbench_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(name="mnist", load=load, description="MNIST handwritten digits, 60k train / 10k test, 28x28 grey",
                    image_shape=(1, 28, 28), num_classes=10, mean=MEAN, std=STD,
                    class_names=tuple(str(d) for d in range(10)), train_size=60_000, test_size=10_000,
                    # whichever of each is there: the official .gz, or the file unpacked
                    files=tuple(f"MNIST/raw/{name}{gz}" for name in (*FILES["train"][:2], *FILES["test"][:2])
                                for gz in (".gz", "")))
    ]
