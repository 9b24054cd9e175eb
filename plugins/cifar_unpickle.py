"""A restricted unpickler for the official CIFAR-10 python batches.

The batches are Python 2 pickles of plain dicts. Besides bytes, ints, lists and
dicts they name exactly three globals, all to rebuild the one uint8 image array:
``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``.
``find_class`` hands out guarded stand-ins for those three and refuses every other
name, so a crafted file cannot reach ``os.system`` or any other callable.

numpy's own ``__setstate__`` is never called either: ``dtype.__setstate__`` takes flags,
fields and item sizes from the pickle unchecked (a uint8 dtype whose flags say it holds
Python objects breaks numpy's internals). The stand-ins build placeholders instead; the
pickle's BUILD steps hand their state to the placeholders, which admit only the state the
official files hold (the plain ``u1`` dtype; version 1, a shape, that dtype, raw bytes of
the right length), and the placeholders are swapped for plain uint8 arrays made from the
raw bytes once the pickle is read. Anything else is an ``UnsafePickleError``.
"""

from __future__ import annotations

import io
import math
import pickle
from typing import Any, Literal

import numpy as np

MAX_DEPTH = 8  # the official batches nest two deep (a dict of lists); a deeper pickle is refused
MAX_DIMS = 4


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for something the official CIFAR-10 files never contain."""


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages about what a crafted file holds."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Placeholder:
    """Base of the stand-ins: no ``__dict__`` for a BUILD to fill, and a ``__setstate__`` that refuses."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError(f"a BUILD step on {type(self).__name__} is not allowed")


class _NdarrayMarker(_Placeholder):
    """Stands in for ``numpy.ndarray``: it can be passed to ``_reconstruct`` but never called."""

    __slots__ = ()


class _Dtype(_Placeholder):
    """What the guarded ``numpy.dtype("u1", ...)`` returns; its BUILD must carry the plain ``u1`` state."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        # (version 3, byte order "|", no subarray, no names, no fields, elsize -1, alignment -1, flags 0)
        if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and state[1] in (b"|", "|")
                and state[2:] == (None, None, None, -1, -1, 0)):
            raise UnsafePickleError(f"dtype state {_short(state)} is not the plain u1 dtype")


class _Array(_Placeholder):
    """What the guarded ``_reconstruct`` returns; its BUILD must carry a uint8 array's state."""

    __slots__ = ("array",)

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise UnsafePickleError("array state is not (version, shape, dtype, fortran, bytes)")
        version, shape, dtype, fortran, raw = state
        if version != 1 or type(fortran) is not bool:
            raise UnsafePickleError(f"array state version {_short(version)}, order {_short(fortran)} is not allowed")
        if not (isinstance(shape, tuple) and len(shape) <= MAX_DIMS
                and all(type(n) is int and n >= 0 for n in shape)):
            raise UnsafePickleError(f"array shape {_short(shape)} is not allowed")
        if not isinstance(dtype, _Dtype):
            raise UnsafePickleError(f"array dtype {type(dtype).__name__} is not the guarded u1 dtype")
        if not isinstance(raw, bytes):
            raise UnsafePickleError(f"array data is a {type(raw).__name__}, expected bytes")
        size = math.prod(shape)
        if len(raw) != size:
            raise UnsafePickleError(f"array of shape {shape} with {len(raw)} bytes of data, expected {size}")
        order: Literal["C", "F"] = "F" if fortran else "C"
        self.array = np.frombuffer(raw, dtype=np.uint8).reshape(shape, order=order).copy(order="C")

    def result(self) -> np.ndarray:
        try:
            return self.array
        except AttributeError:
            raise UnsafePickleError("an array was never given its contents") from None


class _Guard(_Placeholder):
    """A callable stand-in for one allowed global."""

    __slots__ = ("function",)

    def __init__(self, function: Any) -> None:
        self.function = function

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)


_NDARRAY = _NdarrayMarker()


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> _Array:
    """Guarded ``numpy.core.multiarray._reconstruct``: a placeholder, filled by the BUILD that follows."""
    if subtype is not _NDARRAY or shape != (0,) or typecode not in (b"b", "b"):
        raise UnsafePickleError(f"unexpected array reconstruction {_short(shape)}, {_short(typecode)}")
    return _Array()


def _dtype(code: Any, align: Any = 0, copy: Any = 1) -> _Dtype:
    """Guarded ``numpy.dtype``: only the unsigned byte the image arrays use."""
    if code not in (b"u1", "u1"):
        raise UnsafePickleError(f"dtype {_short(code)} is not allowed (only u1)")
    return _Dtype()


ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _Guard(_reconstruct),
    ("numpy._core.multiarray", "_reconstruct"): _Guard(_reconstruct),
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Guard(_dtype),
}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"global {module}.{name} is not allowed in a CIFAR-10 batch") from None


PLAIN = (bytes, str, int, float, bool, type(None))
KEYS = (bytes, str, int)


class _Finisher:
    """Swaps each array placeholder for its array, once per object (a pickle may share one
    object in many places); refuses cycles, deep nesting, stray stand-ins and any type the
    official batches do not hold (sets, bytearrays, ...)."""

    def __init__(self) -> None:
        self.done: dict[int, Any] = {}
        self.active: set[int] = set()

    def __call__(self, obj: Any, depth: int = 0) -> Any:
        if type(obj) in PLAIN:
            return obj
        if isinstance(obj, _Array):
            return obj.result()
        if isinstance(obj, _Placeholder):
            raise UnsafePickleError(f"a bare {type(obj).__name__} is not allowed in the data")
        if type(obj) not in (dict, list, tuple):
            raise UnsafePickleError(f"a {type(obj).__name__} is not allowed in a CIFAR-10 batch")
        if id(obj) in self.done:
            return self.done[id(obj)]
        if id(obj) in self.active:
            raise UnsafePickleError(f"a {type(obj).__name__} that contains itself is not allowed")
        if depth >= MAX_DEPTH:
            raise UnsafePickleError(f"nested deeper than {MAX_DEPTH} levels")
        self.active.add(id(obj))
        if type(obj) is dict:
            if not all(type(key) in KEYS for key in obj):
                raise UnsafePickleError("dict keys other than bytes, str or int are not allowed")
            result: Any = {key: self(value, depth + 1) for key, value in obj.items()}
        elif type(obj) is list:
            result = [self(value, depth + 1) for value in obj]
        else:
            result = tuple(self(value, depth + 1) for value in obj)
        self.active.discard(id(obj))
        self.done[id(obj)] = result
        return result


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` (bytes keys and strings, as ``encoding='bytes'``) admitting only the
    uint8 array rebuild the official batches need; numpy arrays come back as plain uint8 arrays."""
    loaded = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    return _Finisher()(loaded)
