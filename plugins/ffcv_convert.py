"""Conversion of a dataset split to an ffcv ``.beton`` file, redone only when its sources change.

One file per split, ``<dataset>-<split>.beton``, with a stamp ``<dataset>-<split>.beton.json``
beside it that records what it was made from: the md5 of the source files (for the
datasets whose files we know) or the sha256 of the pixels and labels (for any other
dataset plugin). A file whose stamp matches is reused; anything else is rewritten.

Fields: 1-channel images (MNIST) are ``NDArrayField`` uint8 ``H x W x 1`` (ffcv's image
field takes RGB only), 3-channel images (CIFAR-10) a raw (lossless) ``RGBImageField``,
labels an ``IntField``. ffcv's writer hangs forever when a field raises inside one of its
worker processes, so the whole split is checked before anything is written; the file is
written under a temporary name and renamed, so a crash never leaves a half-written file
that looks finished. Conversions of one file are serialized by a lock file beside it, so
runs started together convert once (two writers' files differ in layout: a reader that
took the header of one and the pages of the other read garbage images).

Files are written to the user's cache dir (``cache_dir()``) or to the folder the caller
names (``bench convert --out DIR``, the loader option ``ffcv_dir``), never into the data
dir: datasets may be shared or read-only, and a run must leave them as it found them. An
up-to-date file in ``<data-dir>/ffcv`` (where earlier versions wrote) is still read.

ffcv is imported only inside functions (it pulls numba and sets torch's thread count).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from cnnbench import BenchError, DatasetSpec, resolve
from cnnbench.datadir import md5sum, resolve_data_dir

FORMAT_VERSION = 1
INSTALL_HINT = "pip install 'cnnbench[ffcv]' (needs apt: pkg-config libturbojpeg0-dev libopencv-dev)"
SPLITS = ("train", "test")

# source files of the datasets we know, relative to the data dir (".gz" is tried first)
SOURCE_FILES: dict[tuple[str, str], tuple[str, ...]] = {
    ("mnist", "train"): ("MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/train-labels-idx1-ubyte"),
    ("mnist", "test"): ("MNIST/raw/t10k-images-idx3-ubyte", "MNIST/raw/t10k-labels-idx1-ubyte"),
    ("cifar10", "train"): tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
    ("cifar10", "test"): ("cifar-10-batches-py/test_batch",),
}


# --- importing ffcv ----------------------------------------------------------------------


@contextlib.contextmanager
def keep_torch_threads() -> Iterator[None]:
    """Undo ffcv's ``torch.set_num_threads`` calls (on import, on ``Loader()`` and on every
    ``iter(loader)``): CPU training would otherwise run on one core."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) turned into one space."""
    return " ".join(str(text).split())


def require_ffcv() -> Any:
    """``import ffcv`` with torch's thread count kept, or a one-line ``BenchError`` saying how to install it."""
    with keep_torch_threads():
        try:
            import ffcv
        except ImportError as exc:
            raise BenchError(f"ffcv is not installed ({one_line(exc)}); {INSTALL_HINT}") from None
    return ffcv


# --- where files go ----------------------------------------------------------------------


def cache_dir() -> Path:
    """``$BENCH_CACHE_DIR/ffcv``, else ``$XDG_CACHE_HOME/cnnbench/ffcv``, else ``~/.cache/cnnbench/ffcv``.

    A relative ``XDG_CACHE_HOME`` is ignored, as the XDG spec says.
    """
    if os.environ.get("BENCH_CACHE_DIR"):
        return Path(os.environ["BENCH_CACHE_DIR"]) / "ffcv"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "cnnbench" / "ffcv"


def legacy_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """``<data-dir>/ffcv``, where earlier versions wrote: read when up to date, never written."""
    return resolve_data_dir(data_dir) / "ffcv"


def default_dirs(data_dir: str | os.PathLike[str] | None) -> list[Path]:
    """Where converted files are looked for without ``out_dir``, in order: the cache dir (the
    only one written), then ``<data-dir>/ffcv`` (read only)."""
    return [cache_dir(), legacy_dir(data_dir)]


def writable(directory: Path) -> bool:
    """Whether ``directory`` exists or can be made, and may be written.

    A folder whose permission bits allow no writing counts as read-only even for root
    (who could write anyway): read-only dataset folders are meant to stay untouched.
    """
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        mode = existing.stat().st_mode
    except OSError:
        return False
    if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(existing, os.W_OK | os.X_OK):
        return False
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return True


def beton_path(directory: Path, dataset: str, split: str) -> Path:
    return Path(directory) / f"{dataset}-{split}.beton"


def stamp_path(beton: Path) -> Path:
    return beton.with_name(beton.name + ".json")


# --- what a file was made from -----------------------------------------------------------


def field_kind(image_shape: tuple[int, ...]) -> str:
    """``"rgb"`` (raw RGBImageField) for 3 channels, ``"ndarray"`` (NDArrayField uint8) otherwise."""
    return "rgb" if image_shape[0] == 3 else "ndarray"


def source_checksums(dataset: str, data_dir: str | os.PathLike[str] | None, split: str) -> dict[str, str] | None:
    """md5 of each known source file of the split, or None (unknown dataset or missing file)."""
    stems = SOURCE_FILES.get((dataset, split))
    if not stems:
        return None
    root = resolve_data_dir(data_dir)
    sums = {}
    for stem in stems:
        found = next((p for p in (root / f"{stem}.gz", root / stem) if p.is_file()), None)
        if found is None:
            return None
        sums[found.relative_to(root).as_posix()] = md5sum(found)
    return sums


def content_sha256(images: Any, labels: Any) -> str:
    digest = hashlib.sha256()
    for array in (images, labels):
        digest.update(str((tuple(array.shape), str(array.dtype))).encode())
        digest.update(memoryview(as_numpy(array)).cast("B"))
    return digest.hexdigest()


def as_numpy(array: Any) -> Any:
    import numpy as np

    if hasattr(array, "numpy"):
        array = array.detach().cpu().numpy()
    return np.ascontiguousarray(array)


def conversion_key(spec: DatasetSpec, split: str, sources: dict[str, Any]) -> dict[str, Any]:
    """Everything that decides a file's content; a stamp with another key is out of date."""
    return {
        "format": FORMAT_VERSION,
        "dataset": spec.name,
        "split": split,
        "field": field_kind(spec.image_shape),
        "image_shape": list(spec.image_shape),
        "sources": sources,
    }


def read_stamp(beton: Path) -> dict[str, Any] | None:
    try:
        return json.loads(stamp_path(beton).read_text())
    except (OSError, ValueError):
        return None


def up_to_date(beton: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The stamp when ``beton`` exists, is complete and was made from ``key``; else None."""
    stamp = read_stamp(beton)
    if not stamp or stamp.get("key") != key:
        return None
    try:
        size = beton.stat().st_size
    except OSError:
        return None
    return stamp if size == stamp.get("bytes") else None


# --- checking and writing ----------------------------------------------------------------


def validate(spec: DatasetSpec, images: Any, labels: Any) -> tuple[Any, Any]:
    """Check every sample before ffcv sees it; returns ``(images N x H x W x C uint8, labels int64)``."""
    import numpy as np

    imgs, labs = check_samples(spec, images, labels)
    return np.ascontiguousarray(imgs.transpose(0, 2, 3, 1)), labs.astype(np.int64)


def check_samples(spec: DatasetSpec, images: Any, labels: Any) -> tuple[Any, Any]:
    """``(images, labels)`` as numpy arrays, or a one-line ``BenchError`` on the first problem.

    All samples are slices of one array, so checking the array's dtype and shape checks the
    shape and dtype of every sample.
    """
    import numpy as np

    imgs, labs = as_numpy(images), as_numpy(labels)
    expected = tuple(spec.image_shape)
    if imgs.ndim != 4 or tuple(imgs.shape[1:]) != expected:
        raise BenchError(f"{spec.name}: images are {tuple(imgs.shape)}, expected N x {' x '.join(map(str, expected))}")
    if imgs.dtype != np.uint8:
        raise BenchError(f"{spec.name}: images are {imgs.dtype}, expected uint8")
    if labs.ndim != 1 or len(labs) != len(imgs):
        raise BenchError(f"{spec.name}: {tuple(labs.shape)} labels for {len(imgs)} images")
    if not np.issubdtype(labs.dtype, np.integer):
        raise BenchError(f"{spec.name}: labels are {labs.dtype}, expected integers")
    if len(labs) == 0:
        raise BenchError(f"{spec.name}: the split is empty")
    if labs.min() < 0 or labs.max() >= spec.num_classes:
        raise BenchError(f"{spec.name}: labels span {labs.min()}..{labs.max()}, expected 0..{spec.num_classes - 1}")
    return imgs, labs


class _Samples:
    """What ffcv's writer indexes: ``(H x W x C uint8 array, int label)`` per sample."""

    def __init__(self, images_hwc: Any, labels: Any) -> None:
        self.images, self.labels = images_hwc, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.images[i], int(self.labels[i])


def make_fields(kind: str, image_hwc_shape: tuple[int, ...]) -> dict[str, Any]:
    import numpy as np
    from ffcv.fields import IntField, NDArrayField, RGBImageField

    image = RGBImageField(write_mode="raw") if kind == "rgb" else NDArrayField(np.dtype("uint8"), image_hwc_shape)
    return {"image": image, "label": IntField()}


def write_beton(path: Path, kind: str, images_hwc: Any, labels: Any, workers: int | None = None) -> None:
    """Write the (already validated) samples to ``path`` through a temporary file."""
    require_ffcv()
    with keep_torch_threads():
        from ffcv.writer import DatasetWriter

        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        workers = workers or min(os.cpu_count() or 1, 8)
        try:
            writer = DatasetWriter(str(tmp), make_fields(kind, tuple(images_hwc.shape[1:])), num_workers=workers)
            writer.from_indexed_dataset(_Samples(images_hwc, labels), chunksize=1000)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def write_stamp(beton: Path, stamp: dict[str, Any]) -> None:
    target = stamp_path(beton)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(stamp, indent=1) + "\n")
    os.replace(tmp, target)


# --- the one entry point -----------------------------------------------------------------


@dataclass(frozen=True)
class Converted:
    path: Path
    count: int
    written: bool  # False: an up-to-date file was reused
    seconds: float = 0.0


def ensure_beton(
    spec: DatasetSpec,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
    workers: int | None = None,
) -> Converted:
    """The ``.beton`` of one split: reused when its stamp matches the sources, else (re)written.

    With ``out_dir`` the file is looked for and written there. Without it an up-to-date file
    is looked for in the cache dir and then in ``<data-dir>/ffcv``, and a new one is written
    to the cache dir: nothing is ever written into the data dir unless ``out_dir`` names it.
    """
    if split not in SPLITS:
        raise BenchError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if importlib.util.find_spec("ffcv") is None:  # fail before any work; importing waits for a write
        raise BenchError(f"ffcv is not installed; {INSTALL_HINT}")
    loaded: tuple[Any, Any] | None = None
    sums = source_checksums(spec.name, data_dir, split)
    if sums is None:  # files unknown: the content itself is the fingerprint
        loaded = resolve(spec.load)(data_dir, split)
        check_samples(spec, *loaded)  # before hashing: an empty or odd array cannot be hashed
        sources: dict[str, Any] = {"content_sha256": content_sha256(*loaded)}
    else:
        sources = {"files_md5": sums}
    key = conversion_key(spec, split, sources)

    candidates = [Path(out_dir)] if out_dir else default_dirs(data_dir)
    if not force:
        for directory in candidates:  # reading only: nothing is created here
            stamp = up_to_date(beton_path(directory, spec.name, split), key)
            if stamp:
                return Converted(beton_path(directory, spec.name, split), int(stamp["count"]), False)

    target = candidates[0]  # out_dir, else the cache dir; never <data-dir>/ffcv
    if not writable(target):
        hint = "pass another --out DIR" if out_dir else "set BENCH_CACHE_DIR or pass --out DIR"
        raise BenchError(f"cannot write ffcv files to {target} (read-only or cannot be created); {hint}")
    path = beton_path(target, spec.name, split)
    with conversion_lock(path):
        # runs started together all find the file missing; the first converts, the rest reuse it
        stamp = None if force else up_to_date(path, key)
        if stamp:
            return Converted(path, int(stamp["count"]), False)
        return convert(spec, split, data_dir, path, key, sources, loaded, log, workers)


@contextlib.contextmanager
def conversion_lock(beton: Path) -> Iterator[None]:
    """An exclusive lock on ``beton``'s conversion, held across processes (a lock file beside it)."""
    import fcntl

    with open(beton.with_name(f".{beton.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def convert(
    spec: DatasetSpec,
    split: str,
    data_dir: str | os.PathLike[str] | None,
    path: Path,
    key: dict[str, Any],
    sources: dict[str, Any],
    loaded: tuple[Any, Any] | None,
    log: Callable[[str], None],
    workers: int | None,
) -> Converted:
    started = time.perf_counter()
    images, labels = loaded if loaded is not None else resolve(spec.load)(data_dir, split)
    images_hwc, labs = validate(spec, images, labels)
    kind = field_kind(spec.image_shape)
    log(f"converting {spec.name} {split} ({len(labs):,} images, {kind} field) to {path}")
    try:
        write_beton(path, kind, images_hwc, labs, workers)
        seconds = round(time.perf_counter() - started, 2)
        write_stamp(path, {
            "key": key, "count": len(labs), "bytes": path.stat().st_size,
            "content_sha256": sources.get("content_sha256") or content_sha256(images, labels),
            "ffcv_version": metadata.version("ffcv"), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "seconds": seconds,
        })
    except OSError as exc:  # a full disk, a folder made read-only meanwhile
        raise BenchError(f"{path}: cannot be written ({one_line(exc)})") from exc
    return Converted(path, len(labs), True, seconds)
