"""The numba kernels behind :mod:`initlab.initializers.counter` (imported only when numba is installed).

Philox4x32-10 with each word a uint32 and each product widened to uint64 (one multiply instruction per
word pair; 2.5× faster than doing everything in uint64, measured). Every kernel fills rows of consecutive
global indices — element (r, j) is global index ``bases[r] + j0 + j`` — into a new flat array, row-major.

The kernels are single-threaded and GIL-free (``nogil``): parallelism comes from calling them on several
chunks from several threads (:func:`initlab.initializers.counter_fill.fill_shard`). numba's own parallel
layers do not mix well with torch in one process: the ``omp`` layer took 15 ms per call next to torch's
OpenMP, and ``workqueue`` is not safe for concurrent callers (measured, issue 15 notes).
"""

from __future__ import annotations

import numba
import numpy as np

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)
_S32 = np.uint64(32)
_M32 = np.uint64(0xFFFFFFFF)
_jit = numba.njit(cache=True, nogil=True)


@numba.njit(inline="always", cache=True)
def _philox(c0, c1, c2, c3, k0, k1):  # pragma: no cover - compiled
    for r in range(10):
        if r:
            k0 = np.uint32(k0 + _W0)
            k1 = np.uint32(k1 + _W1)
        p0 = np.uint64(c0) * _M0
        p1 = np.uint64(c2) * _M1
        n0 = np.uint32(p1 >> _S32) ^ c1 ^ k0
        n2 = np.uint32(p0 >> _S32) ^ c3 ^ k1
        c0, c1, c2, c3 = n0, np.uint32(p1 & _M32), n2, np.uint32(p0 & _M32)
    return c0, c1, c2, c3


@numba.njit(inline="always", cache=True)
def _words(i, stream, k0, k1):  # pragma: no cover - compiled
    i = np.uint64(i)
    return _philox(np.uint32(i & _M32), np.uint32(i >> _S32), np.uint32(stream), np.uint32(0),
                   np.uint32(k0), np.uint32(k1))


@_jit
def u53(bases, j0, j1, k0, k1, stream, open_interval):  # pragma: no cover - compiled
    """float64 uniforms: 53 bits on [0, 1), or 52 bits plus one half on (0, 1) — both exact in float64."""
    n = j1 - j0
    out = np.empty(bases.size * n, dtype=np.float64)
    for r in range(bases.size):
        b = bases[r] + j0
        for j in range(n):
            w0, w1, _, _ = _words(b + j, stream, k0, k1)
            if open_interval:
                k52 = (np.uint64(w0 >> np.uint32(6)) << np.uint64(26)) | np.uint64(w1 >> np.uint32(6))
                out[r * n + j] = (np.float64(k52) + 0.5) * 2.220446049250313e-16  # 2⁻⁵²
            else:
                k53 = (np.uint64(w0 >> np.uint32(5)) << np.uint64(26)) | np.uint64(w1 >> np.uint32(6))
                out[r * n + j] = np.float64(k53) * 1.1102230246251565e-16  # 2⁻⁵³
    return out


@_jit
def f24(bases, j0, j1, k0, k1, stream, symmetric):  # pragma: no cover - compiled
    """float32 from the top 24 bits of w0: k·2⁻²⁴ on [0, 1), or the odd grid (2k + 1 − 2²⁴)·2⁻²⁴ on (−1, 1)."""
    n = j1 - j0
    out = np.empty(bases.size * n, dtype=np.float32)
    for r in range(bases.size):
        b = bases[r] + j0
        for j in range(n):
            w0, _, _, _ = _words(b + j, stream, k0, k1)
            k = np.int64(w0 >> np.uint32(8))
            out[r * n + j] = np.float32(2 * k + 1 - 16777216 if symmetric else k) * np.float32(5.9604644775390625e-08)
    return out


@_jit
def keys63(bases, j0, j1, k0, k1, stream):  # pragma: no cover - compiled
    n = j1 - j0
    out = np.empty(bases.size * n, dtype=np.int64)
    for r in range(bases.size):
        b = bases[r] + j0
        for j in range(n):
            w0, w1, _, _ = _words(b + j, stream, k0, k1)
            out[r * n + j] = np.int64((np.uint64(w0 >> np.uint32(1)) << _S32) | np.uint64(w1))
    return out


@numba.njit(cache=True)
def philox_scalar(c0, c1, c2, c3, k0, k1):  # pragma: no cover - compiled
    """One Philox4x32-10 block (for the known-answer test)."""
    return _philox(np.uint32(c0), np.uint32(c1), np.uint32(c2), np.uint32(c3), np.uint32(k0), np.uint32(k1))
