"""The numba kernels behind :mod:`initlab.inspect.fused` (imported only when numba is installed).

Each reads a flat float32/float64 array once, in row-major order, and accumulates in float64. A tensor
of shape (B, …) is seen as B rows of ``cols`` = numel / B elements: the batch and its units.
``reassoc`` lets LLVM vectorize the sums (the order of float64 additions changes, far below float32's
resolution); NaN and inf keep their IEEE meaning (no ``nnan``/``ninf``).

The public kernels take a tensor as ``(address, n, wide)`` — its first element's address, its number of
elements and whether it is float64 — and view that memory as an array inside the compiled code. From
Python that is ``t.data_ptr()`` and ``t.numel()``, ~1 µs a call, where ``t.detach().numpy()`` and
numba's typing of the array cost ~5 µs (measured; inspect makes ~460 kernel calls a run on a 50-layer
MLP). The caller (:func:`initlab.inspect.fused.ref`) guarantees a live, contiguous CPU tensor of that dtype.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

_FLAGS = {"reassoc", "contract"}
_jit = numba.njit(cache=True, nogil=True, fastmath=_FLAGS)


def _pointer(dtype):  # an address (int) as a typed pointer, for numba.carray
    @intrinsic
    def cast(typingctx, addr):
        ptr = types.CPointer(dtype)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(ptr))

        return ptr(types.intp), codegen

    return cast


_f32 = _pointer(types.float32)
_f64 = _pointer(types.float64)


@_jit
def _moments(a):  # pragma: no cover - compiled
    """(Σx, Σx²)."""
    s1 = 0.0
    s2 = 0.0
    for i in range(a.size):
        v = np.float64(a[i])
        s1 += v
        s2 += v * v
    return s1, s2


@_jit
def _unit_sum(a, cols, head, keep):  # pragma: no cover - compiled
    """(‖Σ_i ŷ_i‖², nonzero rows, non-finite rows) over the first ``head`` rows of ``a`` with each unit
    weighted by ``keep`` (1 or 0) before normalizing: ŷ_i = (y_i·keep)/‖y_i·keep‖."""
    total = np.zeros(cols)
    nonzero = 0
    bad = 0
    for r in range(head):
        base = r * cols
        q = 0.0
        for j in range(cols):
            v = np.float64(a[base + j]) * keep[j]
            q += v * v
        if not math.isfinite(q):
            bad += 1
        elif q > 0.0:
            nonzero += 1
            inv = 1.0 / math.sqrt(q)
            for j in range(cols):
                total[j] += np.float64(a[base + j]) * keep[j] * inv
    t2 = 0.0
    for j in range(cols):
        t2 += total[j] * total[j]
    return t2, nonzero, bad


@_jit
def _moments_cosine(a, cols, head):  # pragma: no cover - compiled
    """(Σx, Σx², ‖Σ_i ŷ_i‖², nonzero rows, non-finite rows) with ŷ_i = y_i/‖y_i‖ over the first
    ``head`` rows: the parts of the mean cosine (see ``inspect._cosine``)."""
    s1, s2 = _moments(a)
    t2, nonzero, bad = _unit_sum(a, cols, head, np.ones(cols))
    return s1, s2, t2, nonzero, bad


@_jit
def _fired(a, cols):  # pragma: no cover - compiled
    """Per unit (column), the number of rows where it is nonzero — NaN counts — as float32 counts: a
    branch-free loop LLVM vectorizes."""
    fires = np.zeros(cols, dtype=np.float32)
    rows = a.size // cols
    for r in range(rows):
        base = r * cols
        for j in range(cols):
            fires[j] += np.float32(a[base + j] != 0)
    return fires


@_jit
def _relu_out(a, cols):  # pragma: no cover - compiled
    """A ReLU output's (Σy, Σy², #(y > 0), #NaN, units that fire for some row — or hold a NaN).

    The sums and the per-unit counts are two tight loops, which vectorize where one loop doing both
    does not (measured 15 µs against 43 µs at 256 × 256). y ≥ 0 or NaN, so y ≠ 0 counts the firing
    elements and the NaNs; NaN, which only a non-finite sum can hide, is counted only then."""
    s1, s2 = _moments(a)
    fires = _fired(a, cols)
    nan = 0
    if not (math.isfinite(s1) and math.isfinite(s2)):
        for i in range(a.size):
            nan += a[i] != a[i]
    return s1, s2, fires.sum() - nan, nan, np.count_nonzero(fires)


@_jit
def _act_out(a, cols):  # pragma: no cover - compiled
    """An activation output's (Σy, Σy², units nonzero for some row — NaN counts as nonzero)."""
    s1, s2 = _moments(a)
    return s1, s2, np.count_nonzero(_fired(a, cols))


@_jit
def _saturated(a, edges, first_saturated):  # pragma: no cover - compiled
    """(2 × the number of elements in the saturated set, #NaN): the real line is cut at the sorted
    ``edges``, the first interval saturated iff ``first_saturated``, membership alternating across each
    edge; an element exactly on an edge counts ½ (hence the doubled count, an integer). One and two
    edges (ReLU-like, tanh/sigmoid-like) have their own loops, which LLVM vectorizes."""
    twice = 0
    nan = 0
    k = edges.size
    first = 1 if first_saturated else 0
    if k == 1:
        e0 = edges[0]
        for i in range(a.size):
            v = np.float64(a[i])
            bad = np.int64(v != v)
            on = np.int64(v == e0)
            sat = (first ^ np.int64(v > e0)) * (1 - bad)
            twice += 2 * sat * (1 - on) + on
            nan += bad
    elif k == 2:
        e0 = edges[0]
        e1 = edges[1]
        for i in range(a.size):
            v = np.float64(a[i])
            bad = np.int64(v != v)
            on = np.int64(v == e0) | np.int64(v == e1)
            sat = (first ^ ((np.int64(v > e0) + np.int64(v > e1)) & 1)) * (1 - bad)
            twice += 2 * sat * (1 - on) + on
            nan += bad
    else:
        for i in range(a.size):
            v = np.float64(a[i])
            if v != v:
                nan += 1
                continue
            above = 0
            on = 0
            for e in range(k):
                above += v > edges[e]
                on += v == edges[e]
            if on:
                twice += 1
            elif first ^ (above & 1):
                twice += 2
    return twice, nan


@_jit
def _live_cosine(z, y, cols, head):  # pragma: no cover - compiled
    """(‖Σ_i ŷ_i‖², nonzero rows, non-finite rows) of z's first ``head`` rows restricted to the units
    whose output ``y`` is nonzero (NaN included) for some row — the mean cosine between inputs over the
    live units, without a mask tensor or a masked copy."""
    keep = (_fired(y, cols) > 0).astype(np.float64)
    return _unit_sum(z, cols, head, keep)


# ---- entry points: a tensor as (address, n, wide); each compiles a float32 and a float64 variant ----


@_jit
def moments(addr, n, wide):  # pragma: no cover - compiled
    """(Σx, Σx²)."""
    if wide:
        return _moments(numba.carray(_f64(addr), n))
    return _moments(numba.carray(_f32(addr), n))


@_jit
def moments_many(addrs, ns, wide):  # pragma: no cover - compiled
    """(Σx, Σx²) of each of several tensors of one dtype, as rows of a (k, 2) float64 array: one call
    for all of a model's small parameters or gradients."""
    out = np.empty((addrs.size, 2))
    for i in range(addrs.size):
        if wide:
            s1, s2 = _moments(numba.carray(_f64(addrs[i]), ns[i]))
        else:
            s1, s2 = _moments(numba.carray(_f32(addrs[i]), ns[i]))
        out[i, 0] = s1
        out[i, 1] = s2
    return out


@_jit
def moments_cosine(addr, n, wide, cols, head):  # pragma: no cover - compiled
    """(Σx, Σx², ‖Σ_i ŷ_i‖², nonzero rows, non-finite rows) with ŷ_i = y_i/‖y_i‖ over the first
    ``head`` rows: the parts of the mean cosine (see ``inspect._cosine``)."""
    if wide:
        return _moments_cosine(numba.carray(_f64(addr), n), cols, head)
    return _moments_cosine(numba.carray(_f32(addr), n), cols, head)


@_jit
def relu_out(addr, n, wide, cols):  # pragma: no cover - compiled
    """A ReLU output's (Σy, Σy², #(y > 0), #NaN, units that fire for some row — or hold a NaN)."""
    if wide:
        return _relu_out(numba.carray(_f64(addr), n), cols)
    return _relu_out(numba.carray(_f32(addr), n), cols)


@_jit
def act_out(addr, n, wide, cols):  # pragma: no cover - compiled
    """An activation output's (Σy, Σy², units nonzero for some row — NaN counts as nonzero)."""
    if wide:
        return _act_out(numba.carray(_f64(addr), n), cols)
    return _act_out(numba.carray(_f32(addr), n), cols)


@_jit
def saturated(addr, n, wide, edges, first_saturated):  # pragma: no cover - compiled
    """(2 × the number of elements in the saturated set, #NaN); see ``_saturated``."""
    if wide:
        return _saturated(numba.carray(_f64(addr), n), edges, first_saturated)
    return _saturated(numba.carray(_f32(addr), n), edges, first_saturated)


@_jit
def live_cosine(z_addr, z_n, y_addr, y_n, wide, cols, head):  # pragma: no cover - compiled
    """(‖Σ_i ŷ_i‖², nonzero rows, non-finite rows) of z's first ``head`` rows over the units live in
    ``y``; z and y of one dtype. See ``_live_cosine``."""
    if wide:
        return _live_cosine(numba.carray(_f64(z_addr), z_n), numba.carray(_f64(y_addr), y_n), cols, head)
    return _live_cosine(numba.carray(_f32(z_addr), z_n), numba.carray(_f32(y_addr), y_n), cols, head)
