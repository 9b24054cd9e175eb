"""Reader for the IDX files MNIST ships in (gzip or plain), with integrity checks.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values. MNIST's are unsigned
bytes (type code 0x08): images have 3 dimensions, labels 1. Every check failure is a
one-line ``DataError`` that names the file.

Reads are bounded: a file is read only when it is a regular file (a FIFO or a device named
like a data file never blocks the run), never past a size limit, and a gzip file is
decompressed only up to that limit (a small file that inflates to gigabytes is refused).
"""

from __future__ import annotations

import errno
import gzip
import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from cnnbench.errors import DataError
from cnnbench.files import NotARegularFile, read_regular

IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension
UBYTE = 0x08
MAX_IDX_BYTES = 256 * 2**20  # of a decoded IDX file whose size the caller does not know (MNIST's largest: 45 MiB)
SLACK = 2**20  # read this much past the expected size, so a padded file is reported as padded


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) turned into one space."""
    return " ".join(str(text).split())


def read_file(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit``), or a one-line ``DataError`` naming it."""
    try:
        return read_regular(path, limit)
    except NotARegularFile:
        raise DataError(f"{path}: not a regular file (a FIFO, a device or a folder); put the data file there") from None
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise DataError(f"{path}: larger than {limit:,} bytes; not the data file it is named after") from None
        raise DataError(f"{path}: cannot be read ({one_line(exc)})") from exc


def gunzip(path: Path, data: bytes, limit: int) -> bytes:
    """``data`` (the gzip file ``path``) decompressed, refusing more than ``limit`` bytes of output."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            raw = stream.read(limit + 1)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        kind = "zlib.error" if isinstance(exc, zlib.error) else type(exc).__name__
        reason = one_line(f"{kind}: {exc}")
        raise DataError(f"{path}: cannot be gunzipped ({reason}); the file is truncated, corrupt or not gzip") from exc
    if len(raw) > limit:
        raise DataError(f"{path}: decompresses to more than {limit:,} bytes; not the data file it is named after")
    return raw


def gzip_bound(limit: int) -> int:
    """The most bytes a gzip file of at most ``limit`` decompressed bytes takes (incompressible data grows by
    5 bytes per 64 kB block, plus the header and trailer)."""
    return limit + limit // 1000 + 1024


def read_bytes(path: Path, limit: int = MAX_IDX_BYTES) -> bytes:
    """The file's bytes, gunzipped when its name ends in ``.gz``; at most ``limit`` bytes either way."""
    if path.suffix != ".gz":
        return read_file(path, limit)
    return gunzip(path, read_file(path, gzip_bound(limit)), limit)


def decode_idx(path: Path, raw: bytes, expected_magic: int, expected_count: int | None = None) -> np.ndarray:
    """Decode the bytes of one IDX file into a uint8 array, checking magic number, dimensions and size."""
    if len(raw) < 4:
        raise DataError(f"{path}: only {len(raw)} bytes; not an IDX file")
    zeros, type_code, ndim = struct.unpack(">HBB", raw[:4])
    expected_ndim = expected_magic & 0xFF
    magic = f"magic number 0x{int.from_bytes(raw[:4], 'big'):08x}"
    if zeros != 0 or type_code != UBYTE:
        raise DataError(f"{path}: {magic}, expected 0x{expected_magic:08x}; not an unsigned-byte IDX file")
    if ndim != expected_ndim:
        plural = "" if ndim == 1 else "s"
        raise DataError(f"{path}: {magic} gives {ndim} dimension{plural}, expected {expected_ndim} "
                        f"(0x{expected_magic:08x})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: header cut short ({len(raw)} bytes, {ndim} dimensions need {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if expected_count is not None and dims[0] != expected_count:
        raise DataError(f"{path}: holds {dims[0]} items, expected {expected_count}")
    size = math.prod(dims)
    if len(raw) - header != size:
        shape = " x ".join(map(str, dims))
        raise DataError(
            f"{path}: {len(raw) - header} data bytes, header says {shape} = {size}; the file is truncated or padded"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: Path, expected_magic: int, expected_count: int | None = None,
             limit: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read (at most ``limit`` decoded bytes) and decode one IDX file."""
    return decode_idx(path, read_bytes(path, limit), expected_magic, expected_count)
