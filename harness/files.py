"""Atomic file writes: a file cnnbench writes appears whole or not at all.

Both writers go through a temporary file in the target's folder (flushed and fsynced),
so a crash, a full disk or a kill leaves the previous file intact and no temporary
file behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def _temporary(path: Path) -> Iterator[tuple[int, str]]:
    """A temporary file beside ``path``, always removed; an ``OSError`` names ``path``, not the temp file."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        yield fd, tmp
    except FileExistsError as exc:
        raise FileExistsError(errno.EEXIST, "File exists (never overwritten)", str(path)) from exc
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _fill(fd: int, tmp: str, data: bytes) -> None:
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)


def write_exclusive(path: Path, data: bytes) -> None:
    """Write a new file; an existing one is never replaced (``FileExistsError``)."""
    path = Path(path)
    with _temporary(path) as (fd, tmp):
        _fill(fd, tmp, data)
        os.link(tmp, path)  # fails with FileExistsError instead of overwriting


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write or replace a file in one step (``os.replace``)."""
    path = Path(path)
    with _temporary(path) as (fd, tmp):
        _fill(fd, tmp, data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)


class NotARegularFile(OSError):
    """A path that is a FIFO, a device, a folder or a dangling link, where a file was expected."""


def read_regular(path: Path | str, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    Never blocks on a FIFO or a device (the file is opened non-blocking and checked with ``fstat``
    before any read) and never reads without bound (a link to an endless file or a file over
    ``limit`` raises ``OSError(EFBIG)``). A link is followed only to a regular file.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFile(errno.EINVAL, "not a regular file", str(path))
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise OSError(errno.EFBIG, f"larger than {limit:,} bytes", str(path))
        return b"".join(chunks)
    finally:
        os.close(fd)


def is_regular_file(path: Path | str) -> bool:
    """True for a regular file (or a link to one); False for FIFOs, devices, folders, dangling links."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
