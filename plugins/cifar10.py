"""The CIFAR-10 dataset, read from the official ``cifar-10-batches-py`` folder (the
"python version"), checked against the published md5s and held in memory as uint8 tensors.

The batches are pickles; they are read with ``cnnbench.plugins.cifar_unpickle``, which admits only
what the official files contain, so a crafted batch cannot run code. Each file is read once and
bounded (``MAX_FILE_BYTES``): a FIFO or device named like a batch is refused, never read.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnbench import DatasetSpec, hookimpl
from cnnbench.datadir import resolve_data_dir
from cnnbench.errors import DataError, UsageError
from cnnbench.files import NotARegularFile, read_regular

if TYPE_CHECKING:
    import numpy as np
    import torch

FOLDER = "cifar-10-batches-py"
SPLITS = {
    "train": ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"),
    "test": ("test_batch",),
}
META = "batches.meta"
PER_BATCH = 10_000
MAX_FILE_BYTES = 32 * 2**20  # the official batches are 31,035,704 bytes at most
# md5 of the official files (the values torchvision pins)
OFFICIAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
# The label names batches.meta holds; registered statically so ``bench list`` reads no file,
# and checked against the file on every load.
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Per-channel train statistics of pixels in [0, 1], as seed 003 (and the tests) state them.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def candidate_dirs(root: Path) -> list[Path]:
    """Where the batches may lie: ``<root>/cifar-10-batches-py``, or ``root`` itself when it is that folder."""
    return [root / FOLDER, root] if root.name == FOLDER else [root / FOLDER]


def find_folder(root: Path) -> Path | None:
    """The first candidate holding any of the official files (missing ones are reported later)."""
    for folder in candidate_dirs(root):
        if any(os.path.lexists(folder / name) for name in OFFICIAL_MD5):
            return folder
    return None


def try_download(root: Path) -> None:
    """torchvision's downloader as the last resort; raises ``DataError`` listing what was tried."""
    tried = ", ".join(str(p) for p in candidate_dirs(root))
    try:
        from torchvision.datasets import CIFAR10  # lazy: torchvision

        CIFAR10(root=str(root), train=True, download=True)
    except Exception as exc:
        raise DataError(
            f"CIFAR-10 not found (looked in {tried}) and the torchvision download failed "
            f"({type(exc).__name__}). Put the official python batches ({', '.join(OFFICIAL_MD5)}) "
            f"in {root / FOLDER}, or point --data-dir / BENCH_DATA_DIR at the folder holding {FOLDER}"
        ) from exc


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) turned into one space."""
    return " ".join(str(text).split())


def read_file(path: Path) -> bytes:
    """The bytes of the regular file ``path`` (at most ``MAX_FILE_BYTES``), or a one-line ``DataError``."""
    try:
        return read_regular(path, MAX_FILE_BYTES)
    except NotARegularFile:
        raise DataError(f"{path}: not a regular file (a FIFO, a device or a folder); put the official file there") \
            from None
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise DataError(f"{path}: larger than {MAX_FILE_BYTES:,} bytes; not an official CIFAR-10 batch") from None
        raise DataError(f"{path}: cannot be read ({one_line(exc)})") from exc


def read_batch(path: Path) -> dict[bytes, Any]:
    """Check one file's md5 and unpickle it safely; every failure names the file."""
    from .cifar_unpickle import restricted_loads  # lazy: numpy

    expected = OFFICIAL_MD5[path.name]
    data = read_file(path)  # read once: the bytes checked are the bytes unpickled
    if hashlib.md5(data).hexdigest() != expected:
        raise DataError(f"{path}: md5 differs from the official {expected}; the file is corrupt, truncated or altered")
    try:
        batch = restricted_loads(data)
    except Exception as exc:  # whatever a damaged or crafted pickle makes the unpickler raise
        reason = one_line(f"{type(exc).__name__}: {exc}")[:300]
        raise DataError(f"{path}: cannot be read as a CIFAR-10 batch ({reason})") from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path}: holds a {type(batch).__name__}, expected a dict")
    return batch


def read_class_names(folder: Path) -> tuple[str, ...]:
    path = folder / META
    names = read_batch(path).get(b"label_names")
    if not isinstance(names, list) or not all(isinstance(n, bytes) for n in names):
        raise DataError(f"{path}: no list of label_names")
    try:
        return tuple(n.decode("ascii") for n in names)
    except UnicodeDecodeError:
        raise DataError(f"{path}: label_names are not ASCII") from None


def describe(value: Any) -> str:
    """``a uint8 array of shape (3, 4)``, ``a list``, ``missing``: what a batch entry is, for messages."""
    import numpy as np  # lazy: numpy

    if value is None:
        return "missing"
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    return f"a {type(value).__name__}"


def decode_batch(path: Path, batch: dict[bytes, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 N x 3 x 32 x 32 array, int64 N array)`` from one batch dict, with shape checks."""
    import numpy as np  # lazy: numpy

    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape != (PER_BATCH, 3 * 32 * 32):
        raise DataError(f"{path}: 'data' is {describe(data)}, expected a uint8 array of shape ({PER_BATCH}, 3072)")
    if not isinstance(labels, list) or len(labels) != PER_BATCH:
        what = f"a list of {len(labels)}" if isinstance(labels, list) else describe(labels)
        raise DataError(f"{path}: 'labels' is {what}, expected a list of {PER_BATCH} ints")
    if not all(type(label) is int for label in labels):
        bad = next(label for label in labels if type(label) is not int)
        raise DataError(f"{path}: 'labels' holds a {type(bad).__name__}, expected ints")
    low, high = min(labels), max(labels)
    if low < 0 or high >= len(CLASS_NAMES):
        raise DataError(f"{path}: labels span {low}..{high}, outside 0-{len(CLASS_NAMES) - 1}")
    # rows are R, G, B planes of 32 x 32, i.e. already channel-first
    return data.reshape(PER_BATCH, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def load(data_dir: str | Path | None, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 N x 3 x 32 x 32, labels int64 N)`` for ``split`` ("train" or "test")."""
    import numpy as np  # lazy: numpy
    import torch  # lazy: torch

    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    root = resolve_data_dir(data_dir)
    folder = find_folder(root)
    if folder is None:
        try_download(root)
        folder = find_folder(root)
        if folder is None:
            raise DataError(f"CIFAR-10 download finished but {root / FOLDER} holds none of its files")
    missing = [name for name in OFFICIAL_MD5 if not os.path.lexists(folder / name)]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)}; copy the complete official {FOLDER} folder there")
    names = read_class_names(folder)
    if names != CLASS_NAMES:
        raise DataError(f"{folder / META}: label names {names} differ from the official {CLASS_NAMES}")
    parts = [decode_batch(folder / name, read_batch(folder / name)) for name in SPLITS[split]]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(images), torch.from_numpy(labels)


@hookimpl
def cnnbench_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(name="cifar10", load=load, description="CIFAR-10, 50k train / 10k test, 32x32 RGB, 10 classes",
                    image_shape=(3, 32, 32), num_classes=10, mean=MEAN, std=STD, class_names=CLASS_NAMES,
                    train_size=5 * PER_BATCH, test_size=PER_BATCH,
                    files=tuple(f"{FOLDER}/{name}" for name in (*SPLITS["train"], *SPLITS["test"], META)))
    ]
