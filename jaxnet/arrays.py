"""Host arrays that JAX on CPU can use in place, and checksums of arrays (numpy only).

JAX's CPU client aliases a numpy buffer instead of copying it when the buffer
starts on a 64-byte boundary (``jax.device_put(a, may_alias=True)``). numpy's
large allocations usually start 16 bytes past a page boundary, so CIFAR-10's
600 MB training set would be copied by every training run (0.15-1.3 s).
Arrays made here are aligned, and stay so through row slices whose row size
is a multiple of 64 bytes (3072 float32 pixels are 12288 bytes).
"""
from __future__ import annotations

import hashlib
import math

import numpy as np

ALIGNMENT = 64


def aligned_empty(shape: tuple, dtype, alignment: int = ALIGNMENT) -> np.ndarray:
    """``np.empty(shape, dtype)`` whose buffer starts on an ``alignment``-byte boundary."""
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    buffer = np.empty(size + alignment, np.uint8)
    start = -buffer.ctypes.data % alignment
    return buffer[start:start + size].view(dtype).reshape(shape)


def is_aligned(a: np.ndarray, alignment: int = ALIGNMENT) -> bool:
    """Whether ``a`` is C-contiguous and starts on an ``alignment``-byte boundary."""
    return a.flags.c_contiguous and a.ctypes.data % alignment == 0


def aligned_array(a, dtype, alignment: int = ALIGNMENT) -> np.ndarray:
    """``a`` as a C-contiguous array of ``dtype`` in an aligned buffer: ``a`` itself
    when it already is one, else a copy."""
    a, dtype = np.asarray(a), np.dtype(dtype)
    if a.dtype == dtype and is_aligned(a, alignment):
        return a
    out = aligned_empty(a.shape, dtype, alignment)
    np.copyto(out, a, casting="unsafe")
    return out


def fingerprint(*arrays) -> str:
    """A SHA-256 checksum of arrays (shapes, dtypes and bytes); None entries count as absent."""
    digest = hashlib.sha256()
    for a in arrays:
        if a is None:
            digest.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(memoryview(a).cast("B"))
    return digest.hexdigest()
