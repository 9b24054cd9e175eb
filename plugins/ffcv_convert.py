"""Conversion of a dataset split to an ffcv ``.beton`` file, redone only when its sources change.

One file per split, ``<dataset>-<split>.beton``, with a stamp ``<dataset>-<split>.beton.json``
beside it that records what it was made from: the md5 of the source files (for the
datasets whose files we know) or the sha256 of the pixels and labels (for any other
dataset plugin). A file whose stamp matches is reused; anything else is rewritten.

Fields: 1-channel images (MNIST) are ``NDArrayField`` uint8 ``H x W x 1`` (ffcv's image
field takes RGB only), 3-channel images (CIFAR-10) a raw (lossless) ``RGBImageField``,
labels an ``IntField``. ffcv's writer waits forever when one of its worker processes dies
(a field that raises, a full disk), so: the whole split is checked before anything is written;
the free space is checked against an upper bound of the file's size (``beton_size_bound``);
and the writer runs in a process of its own (``run_writer``) that ends, with the worker's
error, as soon as a worker fails, its workers with it. The file is written under a temporary
name and renamed, so a crash never leaves a half-written file that looks finished.
Conversions of one file are serialized by a lock file beside it, so runs started together
convert once (two writers' files differ in layout: a reader that took the header of one and
the pages of the other read garbage images); whoever holds the lock removes it when done.

Files are written to the user's cache dir (``cache_dir()``) or to the folder the caller
names (``bench convert --out DIR``, the loader option ``ffcv_dir``), never into the data
dir: datasets may be shared or read-only, and a run must leave them as it found them. An
up-to-date file in ``<data-dir>/ffcv`` (where earlier versions wrote) is still read.

ffcv is imported only inside functions (it pulls numba and sets torch's thread count).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import multiprocessing
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from multiprocessing import shared_memory
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from cnnbench import DatasetSpec, resolve
from cnnbench.datadir import md5sum, resolve_data_dir
from cnnbench.errors import DataError, UsageError
from cnnbench.files import read_regular, write_atomic

if TYPE_CHECKING:
    import numpy as np

FORMAT_VERSION = 1
INSTALL_HINT = "pip install 'cnnbench[ffcv]' (needs apt: pkg-config libturbojpeg0-dev libopencv-dev)"
SPLITS = ("train", "test")
PAGE_SIZE = 1 << 23  # ffcv's default page (8 MiB), given explicitly: beton_size_bound counts in pages
MAX_STAMP_BYTES = 2**20

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
    import torch  # lazy: torch

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
    """``import ffcv`` (the module) with torch's thread count kept, or a one-line ``UsageError`` saying
    how to install it."""
    with keep_torch_threads():
        try:
            import ffcv  # lazy: ffcv
        except ImportError as exc:
            raise UsageError(f"ffcv is not installed ({one_line(exc)}); {INSTALL_HINT}") from None
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
    """The fingerprint of a split a plugin loaded (tensors or arrays: what ``DatasetSpec.load`` returned)."""
    digest = hashlib.sha256()
    for array in (images, labels):
        digest.update(str((tuple(array.shape), str(array.dtype))).encode())
        digest.update(as_numpy(array).data.cast("B"))
    return digest.hexdigest()


def as_numpy(array: Any) -> np.ndarray:
    """A contiguous numpy array of a tensor or array a dataset plugin returned."""
    import numpy as np  # lazy: numpy

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
    """The stamp beside ``beton`` (bounded and never blocking: a FIFO in its place is no stamp), or None."""
    try:
        stamp = json.loads(read_regular(stamp_path(beton), MAX_STAMP_BYTES))
    except (OSError, ValueError, RecursionError):
        return None
    return stamp if isinstance(stamp, dict) else None


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


def validate(spec: DatasetSpec, images: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check every sample before ffcv sees it; returns ``(images N x H x W x C uint8, labels int64)``."""
    import numpy as np  # lazy: numpy

    imgs, labs = check_samples(spec, images, labels)
    return np.ascontiguousarray(imgs.transpose(0, 2, 3, 1)), labs.astype(np.int64)


def check_samples(spec: DatasetSpec, images: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` (what the dataset plugin returned) as numpy arrays, or a one-line ``DataError``
    on the first problem.

    All samples are slices of one array, so checking the array's dtype and shape checks the
    shape and dtype of every sample.
    """
    import numpy as np  # lazy: numpy

    imgs, labs = as_numpy(images), as_numpy(labels)
    expected = tuple(spec.image_shape)
    if imgs.ndim != 4 or tuple(imgs.shape[1:]) != expected:
        raise DataError(f"{spec.name}: images are {tuple(imgs.shape)}, expected N x {' x '.join(map(str, expected))}")
    if imgs.dtype != np.uint8:
        raise DataError(f"{spec.name}: images are {imgs.dtype}, expected uint8")
    if labs.ndim != 1 or len(labs) != len(imgs):
        raise DataError(f"{spec.name}: {tuple(labs.shape)} labels for {len(imgs)} images")
    if not np.issubdtype(labs.dtype, np.integer):
        raise DataError(f"{spec.name}: labels are {labs.dtype}, expected integers")
    if len(labs) == 0:
        raise DataError(f"{spec.name}: the split is empty")
    if labs.min() < 0 or labs.max() >= spec.num_classes:
        raise DataError(f"{spec.name}: labels span {labs.min()}..{labs.max()}, expected 0..{spec.num_classes - 1}")
    return imgs, labs


class _Samples:
    """What ffcv's writer indexes: ``(H x W x C uint8 array, int label)`` per sample."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images_hwc, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.images[i], int(self.labels[i])


def make_fields(kind: str, image_hwc_shape: tuple[int, ...]) -> dict[str, Any]:
    """ffcv's field objects for the image and the label (ffcv is untyped: ``Any``)."""
    import numpy as np  # lazy: numpy
    from ffcv.fields import IntField, NDArrayField, RGBImageField  # lazy: ffcv

    image = RGBImageField(write_mode="raw") if kind == "rgb" else NDArrayField(np.dtype("uint8"), image_hwc_shape)
    return {"image": image, "label": IntField()}


def beton_size_bound(fields: dict[str, Any], count: int, sample_bytes: int, workers: int) -> int:
    """The most bytes ffcv's writer can make of ``count`` samples of ``sample_bytes`` image bytes each.

    The header and every sample's metadata, padded to a page; the image data in whole pages, where
    no sample spans two pages and each worker may leave its last page part-filled; then the table
    of every allocation."""
    from ffcv.types import ALLOC_TABLE_TYPE, FieldDescType, HeaderType, get_metadata_type  # lazy: ffcv

    header = HeaderType.itemsize + len(fields) * FieldDescType.itemsize
    metadata = count * get_metadata_type(list(fields.values())).itemsize
    per_page = PAGE_SIZE // sample_bytes
    pages = -(-(header + metadata) // PAGE_SIZE) + -(-count // per_page) + workers
    return pages * PAGE_SIZE + count * ALLOC_TABLE_TYPE.itemsize


def check_free_space(path: Path, need: int, hint: str) -> None:
    """Refuse to start a write of up to ``need`` bytes into ``path``'s folder when less is free."""
    free = shutil.disk_usage(path.parent).free
    if free < need:
        raise DataError(f"{path}: needs up to {need / 1e6:,.1f} MB, but {path.parent} has {free / 1e6:,.1f} MB free; "
                        f"free some space or {hint}")


def default_writer_workers() -> int:
    """Writer processes: every core, at most 8 (more only add part-filled pages)."""
    return min(os.cpu_count() or 1, 8)


def check_room(path: Path, kind: str, images_hwc: np.ndarray, workers: int, hint: str) -> None:
    """Refuse, before anything is written, a conversion whose file may not fit on ``path``'s disk."""
    require_ffcv()
    with keep_torch_threads():
        fields = make_fields(kind, tuple(images_hwc.shape[1:]))
        check_free_space(path, beton_size_bound(fields, len(images_hwc), images_hwc[0].nbytes, workers), hint)


def write_beton(path: Path, kind: str, images_hwc: np.ndarray, labels: np.ndarray, workers: int | None = None) -> None:
    """Write the (already validated) samples to ``path`` through a temporary file."""
    require_ffcv()
    workers = workers or default_writer_workers()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with keep_torch_threads():
        fields = make_fields(kind, tuple(images_hwc.shape[1:]))
        try:
            failure = run_writer(tmp, fields, _Samples(images_hwc, labels), workers)
            if failure:
                raise DataError(f"{path}: cannot be written ({failure})")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


# --- ffcv's writer, in a process that ends when a worker fails -----------------------------------


class WriterFailed(Exception):
    """A writer worker process exited with an error (raised in the writer process by ``_on_worker_exit``)."""


def run_writer(tmp: Path, fields: dict[str, Any], samples: _Samples, workers: int) -> str | None:
    """ffcv's ``DatasetWriter`` in a child process that leads a process group of its own (its workers);
    returns None when it wrote ``tmp``, else why it failed, in one line.

    The child turns a worker's death into its own failure (``_on_worker_exit``); this process waits
    for the child, then ends the whole group, so no worker outlives the write, whatever ends the wait
    (Ctrl-C included). What the workers print (tracebacks, ffcv's progress bar) goes to a log in
    memory, from which the failure's reason is taken."""
    context = multiprocessing.get_context("fork")  # the samples are inherited, not pickled
    log_fd = memory_file()
    try:
        child = context.Process(target=_writer_main, args=(tmp, fields, samples, workers, log_fd))
        try:
            child.start()
            child.join()
        finally:
            end_group(child)
        return None if child.exitcode == 0 else writer_failure(child, log_fd)
    finally:
        os.close(log_fd)


def memory_file() -> int:
    """A file descriptor of an anonymous file in memory (the disk may be the full one), else in ``/tmp``."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("cnnbench-ffcv-writer")
    handle, name = tempfile.mkstemp(prefix="cnnbench-ffcv-writer-")
    os.unlink(name)
    return handle


def end_group(child: multiprocessing.process.BaseProcess) -> None:
    """Kill the writer process and every worker in its group (a no-op for those already gone)."""
    pid = child.pid
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if child.is_alive():  # not yet its own group leader
        child.kill()
    child.join()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # workers it started meanwhile


def writer_failure(child: multiprocessing.process.BaseProcess, log_fd: int) -> str:
    """Why the writer process failed: the first error line the workers or ffcv printed, else its exit."""
    os.lseek(log_fd, 0, os.SEEK_SET)
    text = os.read(log_fd, 1 << 20).decode(errors="replace")
    errors = [line.strip() for line in re.split(r"[\r\n]+", text) if ERROR_LINE.match(line.strip())]
    if errors:
        return f"ffcv's writer failed: {one_line(errors[0])[:300]}"
    code = child.exitcode or 0
    if code < 0:
        return f"ffcv's writer was killed by {signal.Signals(-code).name}"
    return f"ffcv's writer exited with status {code}"


ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Failed): ")


def _writer_main(tmp: Path, fields: dict[str, Any], samples: _Samples, workers: int, log_fd: int) -> None:
    """The writer process: its own process group, its output to the log, a worker's death its own.

    It leaves through ``os._exit``: multiprocessing's exit handlers would wait for ffcv's work queue
    to be drained, which the dead workers never do."""
    os.setpgid(0, 0)
    os.dup2(log_fd, 2)
    os.dup2(log_fd, 1)
    sys.stdout = sys.stderr = open(log_fd, "w", buffering=1, closefd=False)  # also where Python wrote elsewhere
    code, writer = 0, None
    try:
        from ffcv.writer import DatasetWriter  # lazy: ffcv

        signal.signal(signal.SIGCHLD, _on_worker_exit)
        writer = DatasetWriter(str(tmp), fields, page_size=PAGE_SIZE, num_workers=workers)
        writer.from_indexed_dataset(samples, chunksize=1000)
    except BaseException as exc:  # whatever it is, it is reported through the log and the exit status
        os.write(2, f"\n{type(exc).__name__}: {one_line(exc)}\n".encode())
        code = 1
    finally:
        release_shared_memory(writer)
        os._exit(code)


def _on_worker_exit(signum: int, frame: FrameType | None) -> None:
    """SIGCHLD in the writer process: reap the workers that ended; one that failed fails the write."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise WriterFailed(f"writer worker {pid} ended with {'status' if code > 0 else 'signal'} {abs(code)}")


def release_shared_memory(writer: Any) -> None:
    """Unlink the metadata segment ffcv's writer made in ``/dev/shm`` (ffcv does it only when all went well)."""
    segment = getattr(writer, "metadata_sm", None)
    if isinstance(segment, shared_memory.SharedMemory):
        with contextlib.suppress(OSError):
            segment.close()
            segment.unlink()


def write_stamp(beton: Path, stamp: dict[str, Any]) -> None:
    write_atomic(stamp_path(beton), json.dumps(stamp, indent=1) + "\n")


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
        raise UsageError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if importlib.util.find_spec("ffcv") is None:  # fail before any work; importing waits for a write
        raise UsageError(f"ffcv is not installed; {INSTALL_HINT}")
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
    hint = "pass another --out DIR" if out_dir else "set BENCH_CACHE_DIR or pass --out DIR"
    if not writable(target):
        raise DataError(f"cannot write ffcv files to {target} (read-only or cannot be created); {hint}")
    path = beton_path(target, spec.name, split)
    with conversion_lock(path):
        # runs started together all find the file missing; the first converts, the rest reuse it
        stamp = None if force else up_to_date(path, key)
        if stamp:
            return Converted(path, int(stamp["count"]), False)
        return convert(spec, split, data_dir, path, key, sources, loaded, log, workers, hint)


@contextlib.contextmanager
def conversion_lock(beton: Path) -> Iterator[None]:
    """An exclusive lock on ``beton``'s conversion, held across processes by a lock file beside it,
    which the holder removes on every way out.

    A waiter may wake holding a lock on a file the holder has just removed (or that a third process
    has since created again), so the lock counts only when the file it is on is still the one at the
    path; otherwise the waiter locks the current file."""
    lock = beton.with_name(f".{beton.name}.lock")
    while True:
        try:
            handle = open(lock, "a")  # closed below, after the unlink
        except OSError as exc:
            raise DataError(f"{lock}: the conversion lock cannot be made ({one_line(exc)})") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except BaseException:
            handle.close()
            raise
        if same_file(handle.fileno(), lock):
            break
        handle.close()
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # before letting go: a waiter then finds its file gone and retries
        handle.close()


def same_file(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is the file at ``path`` now."""
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)


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
    hint: str = "pass --out DIR",
) -> Converted:
    """Load and check the split, write its file and then its stamp; a failure is one ``DataError``."""
    started = time.perf_counter()
    images, labels = loaded if loaded is not None else resolve(spec.load)(data_dir, split)
    images_hwc, labs = validate(spec, images, labels)
    kind, workers = field_kind(spec.image_shape), workers or default_writer_workers()
    check_room(path, kind, images_hwc, workers, hint)
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
        stamp_path(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)  # a file without its stamp is never reused: do not leave it taking space
        raise DataError(f"{path}: cannot be written ({one_line(exc)})") from exc
    return Converted(path, len(labs), True, seconds)
