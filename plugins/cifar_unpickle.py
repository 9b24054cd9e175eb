"""A restricted unpickler for the official CIFAR-10 python batches.

The batches are Python 2 pickles of plain dicts. Besides bytes, ints, lists and
dicts they name exactly three globals, all to rebuild the one uint8 image array:
``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``.
``find_class`` hands out guarded stand-ins for those three and refuses every other
name, so a crafted file cannot reach ``os.system`` or any other callable. The
stand-ins only build an empty array and the ``uint8`` dtype; the array's contents
then come from numpy's own ``__setstate__``, which copies bytes and calls nothing.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for something the official CIFAR-10 files never contain."""


class _NdarrayMarker:
    """Stands in for ``numpy.ndarray``: it can be passed to ``_reconstruct`` but never called."""


_NDARRAY = _NdarrayMarker()


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    """Guarded ``numpy.core.multiarray._reconstruct``: an empty ndarray, filled later by BUILD."""
    if subtype is not _NDARRAY or shape != (0,) or typecode not in (b"b", "b"):
        raise UnsafePickleError(f"unexpected array reconstruction {shape!r}, {typecode!r}")
    return np.empty((0,), dtype=np.int8)


def _dtype(code: Any, align: Any = 0, copy: Any = 1) -> np.dtype:
    """Guarded ``numpy.dtype``: only the unsigned byte the image arrays use."""
    if code not in (b"u1", "u1"):
        raise UnsafePickleError(f"dtype {code!r} is not allowed (only u1)")
    return np.dtype(np.uint8, False, True)  # a copy: the pickle's BUILD step sets state on it


ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"global {module}.{name} is not allowed in a CIFAR-10 batch") from None


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` (bytes keys and strings, as ``encoding='bytes'``) admitting only the
    numpy array rebuild the official batches need."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
