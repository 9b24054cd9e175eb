"""Reader for the IDX files MNIST ships in (gzip or plain), with integrity checks.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values. MNIST's are unsigned
bytes (type code 0x08): images have 3 dimensions, labels 1. Every check failure is a
one-line ``BenchError`` that names the file.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from cnnbench import BenchError

IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension
UBYTE = 0x08


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) turned into one space."""
    return " ".join(str(text).split())


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when its name ends in ``.gz``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BenchError(f"{path}: cannot be read ({one_line(exc)})") from exc
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        kind = "zlib.error" if isinstance(exc, zlib.error) else type(exc).__name__
        reason = one_line(f"{kind}: {exc}")
        raise BenchError(f"{path}: cannot be gunzipped ({reason}); the file is truncated, corrupt or not gzip") from exc


def read_idx(path: Path, expected_magic: int, expected_count: int | None = None) -> np.ndarray:
    """Decode one IDX file into a uint8 array, checking magic number, dimensions and size."""
    raw = read_bytes(path)
    if len(raw) < 4:
        raise BenchError(f"{path}: only {len(raw)} bytes; not an IDX file")
    zeros, type_code, ndim = struct.unpack(">HBB", raw[:4])
    expected_ndim = expected_magic & 0xFF
    magic = f"magic number 0x{int.from_bytes(raw[:4], 'big'):08x}"
    if zeros != 0 or type_code != UBYTE:
        raise BenchError(f"{path}: {magic}, expected 0x{expected_magic:08x}; not an unsigned-byte IDX file")
    if ndim != expected_ndim:
        plural = "" if ndim == 1 else "s"
        raise BenchError(f"{path}: {magic} gives {ndim} dimension{plural}, expected {expected_ndim} "
                         f"(0x{expected_magic:08x})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise BenchError(f"{path}: header cut short ({len(raw)} bytes, {ndim} dimensions need {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if expected_count is not None and dims[0] != expected_count:
        raise BenchError(f"{path}: holds {dims[0]} items, expected {expected_count}")
    size = math.prod(dims)
    if len(raw) - header != size:
        shape = " x ".join(map(str, dims))
        raise BenchError(
            f"{path}: {len(raw) - header} data bytes, header says {shape} = {size}; the file is truncated or padded"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
