"""Reader for the IDX files MNIST ships in (gzip or plain), with integrity checks."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from cnnbench import BenchError

IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension


def read_idx(path: Path, expected_magic: int, expected_count: int | None = None) -> np.ndarray:
    """Decode one IDX file into a uint8 array, checking magic number, dimensions and size."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise BenchError(f"{path}: cannot read ({exc}); the file is corrupt or truncated") from exc
    if len(raw) < 4:
        raise BenchError(f"{path}: only {len(raw)} bytes; not an IDX file")
    (magic,) = struct.unpack(">i", raw[:4])
    if magic != expected_magic:
        raise BenchError(f"{path}: magic number {magic}, expected {expected_magic}; not the right IDX file")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise BenchError(f"{path}: header cut short")
    dims = struct.unpack(f">{ndim}i", raw[4:header])
    if expected_count is not None and dims[0] != expected_count:
        raise BenchError(f"{path}: holds {dims[0]} items, expected {expected_count}")
    size = int(np.prod(dims))
    if len(raw) - header != size:
        raise BenchError(f"{path}: {len(raw) - header} data bytes, header says {size}; file is truncated or padded")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
