"""The MNIST dataset, read from the four official IDX files in torchvision's layout
(``<data-dir>/MNIST/raw``), checked and held in memory as uint8 tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnbench import BenchError, DatasetSpec, hookimpl
from cnnbench.datadir import md5sum, resolve_data_dir

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


def find_file(raw_dir: Path, stem: str) -> Path | None:
    for candidate in (raw_dir / f"{stem}.gz", raw_dir / stem):
        if candidate.is_file():
            return candidate
    return None


def check_md5(path: Path) -> None:
    """The official ``.gz`` files must match torchvision's md5; uncompressed files are checked by ``read_idx`` only."""
    from .idx import one_line

    expected = OFFICIAL_MD5.get(path.name)
    if not expected:
        return
    try:
        actual = md5sum(path)
    except OSError as exc:
        raise BenchError(f"{path}: cannot be read ({one_line(exc)})") from exc
    if actual != expected:
        raise BenchError(f"{path}: md5 does not match the official file; it is corrupt or altered")


def try_download(root: Path) -> None:
    """torchvision's downloader as the last resort; raises BenchError when it fails."""
    try:
        from torchvision.datasets import MNIST

        MNIST(root=str(root), train=True, download=True)
        MNIST(root=str(root), train=False, download=True)
    except Exception as exc:
        raise BenchError(
            f"MNIST files not found in {root / 'MNIST' / 'raw'} and the download failed "
            f"({type(exc).__name__}). Put train/t10k-images-idx3-ubyte[.gz] and "
            "train/t10k-labels-idx1-ubyte[.gz] there, or point --data-dir / BENCH_DATA_DIR "
            "at a folder holding MNIST/raw"
        ) from exc


def load(data_dir: str | Path | None, split: str) -> tuple[Any, Any]:
    """``(images uint8 N x 1 x 28 x 28, labels int64 N)`` for ``split`` ("train" or "test")."""
    import torch

    from .idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx

    root = resolve_data_dir(data_dir)
    raw_dir = root / "MNIST" / "raw"
    images_stem, labels_stem, count = FILES[split]
    paths = [find_file(raw_dir, images_stem), find_file(raw_dir, labels_stem)]
    if None in paths:
        try_download(root)
        paths = [find_file(raw_dir, images_stem), find_file(raw_dir, labels_stem)]
    images_path, labels_path = paths
    assert images_path is not None and labels_path is not None
    for path in (images_path, labels_path):
        check_md5(path)
    images = read_idx(images_path, IMAGES_MAGIC, count)
    labels = read_idx(labels_path, LABELS_MAGIC, count)
    if images.shape[1:] != (28, 28):
        raise BenchError(f"{images_path}: images are {' x '.join(map(str, images.shape[1:]))}, expected 28 x 28")
    if labels.max() > 9:
        raise BenchError(f"{labels_path}: label {labels.max()} out of range 0-9")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype("int64"))


@hookimpl
def cnnbench_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(name="mnist", load=load, description="MNIST handwritten digits, 60k train / 10k test, 28x28 grey",
                    image_shape=(1, 28, 28), num_classes=10, mean=MEAN, std=STD,
                    class_names=tuple(str(d) for d in range(10)), train_size=60_000, test_size=10_000)
    ]
