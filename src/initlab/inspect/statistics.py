"""Per-call statistics, each in one pass where it can be: (std, mean) from Σx and Σx², ‖t‖₂ safe against
float32 over- and underflow, the mean pairwise cosine without a Gram matrix — through the compiled
kernels of :mod:`initlab.inspect.fused` where they take the tensor, else torch ops — and the helpers
that find the floating-point tensors in a call's arguments and outputs."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from . import fused

_COSINE_SAMPLES = 64  # inputs used for the mean pairwise cosine (2016 pairs; O(64·width) work)
_FLOATS = (torch.float32, torch.float64)


def _first_float(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj if obj.is_floating_point() else None
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        for o in obj:
            t = _first_float(o)
            if t is not None:
                return t
    return None


def _all_float(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() else []
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _all_float(o)]
    if hasattr(obj, "__dataclass_fields__") or hasattr(obj, "_fields"):
        return [t for v in vars(obj).values() for t in _all_float(v)] if hasattr(obj, "__dict__") else []
    return []


def _map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return type(obj)((k, _map_tensors(v, fn)) for k, v in obj.items())
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_map_tensors(v, fn) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


def _std_mean(
    t: torch.Tensor, scratch: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> tuple[float, float]:
    """(std, mean) of all elements, unbiased (n − 1), as Python floats.

    Where the compiled kernels take ``t`` (:mod:`initlab.inspect.fused`), Σx and Σx² come from one float64
    pass. Otherwise one pass of torch ops: mean = Σx/n and var = (Σx² − n·mean²)/(n − 1) with
    Σx² = x·x (BLAS) and the final arithmetic in float64 — several times faster on CPU than
    ``torch.std_mean``; where float32 squares overflow or underflow, Σx² is taken on x scaled by a power
    of two (:func:`_sum_squares_scaled`). Either way, where the one-pass formula loses digits
    (mean² > 100·var) it recomputes two-pass in float64. ``scratch`` (e.g. :meth:`_Recorder.scratch`)
    gives a reusable buffer shaped like its argument for the scaled copy; it is called only on that
    rare path.
    """
    d = t.detach() if t.requires_grad and torch.is_grad_enabled() else t
    n = d.numel()
    if n < 2:
        return 0.0, float(d.to(torch.float64).sum()) if n else math.nan
    r = fused.ref(d)
    if r is not None:
        found = _from_sums(n, *fused.kernels().moments(*r), safe=True)
        if found is not None:
            return found
    elif d.dtype == torch.float32 or d.dtype == torch.float64:
        flat = d.reshape(-1)
        s1 = float(flat.sum())  # torch's CPU sum is cascaded: float32 keeps ~1e-7 relative
        s2 = float(torch.dot(flat, flat))
        safe = False
        if not (math.isfinite(s2) and s2 > 1e-20 * n):
            # Squares overflow (elements beyond ~1e19) or underflow (below ~1e-19) in float32.
            scaled = _sum_squares_scaled(flat, None if scratch is None else scratch(flat))
            if scaled is not None:
                s2, safe = scaled, True
        found = _from_sums(n, s1, s2, safe)
        if found is not None:
            return found
    d64 = d.to(torch.float64)
    mean64 = d64.mean()
    return float((d64 - mean64).pow(2).sum().div(n - 1).sqrt()), float(mean64)


def _from_sums(n: int, s1: float, s2: float, safe: bool = False) -> tuple[float, float] | None:
    """(std, mean) from Σx and Σx² by the one-pass formula, or None where it cannot be trusted (see
    :func:`_std_mean`: non-finite sums, squares that may have underflowed float32, cancellation).
    ``safe``: Σx² was accumulated where the squares cannot underflow (in float64, or scaled), so a
    small or zero Σx² is real — Σx² = 0 is an all-zero tensor, (0, 0) — rather than lost digits."""
    if not (safe or s2 > 1e-20 * n):
        return None
    mean = s1 / n
    var = (s2 - n * mean * mean) / (n - 1)
    if math.isfinite(s2) and math.isfinite(s1) and var >= 0 and var * 100 >= mean * mean:
        return math.sqrt(var), mean
    return None


def _norm(t: torch.Tensor, scratch: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
    """‖t‖₂ from float64 sums where the compiled kernels take ``t`` (or a sparse gradient's stored
    values); else in the tensor's precision, scaled by a power of two (:func:`_sum_squares_scaled`, into
    a buffer from ``scratch`` if given) when float32 overflows (‖g‖² beyond 3.4e38) or may have
    underflowed (‖g‖ < 1e-10: squares of elements below ~1e-19 leave float32's normal range); in float64
    for other dtypes or non-finite elements."""
    g = t
    if g.layout != torch.strided:  # a sparse gradient (nn.Embedding(sparse=True)): its stored values
        g = g.coalesce().values() if g.layout == torch.sparse_coo else g.values()
    r = fused.ref(g)
    if r is not None:
        s2 = fused.kernels().moments(*r)[1]  # float64 squares of float32 values neither over- nor underflow
        if math.isfinite(s2):
            return math.sqrt(s2)
    g = g.detach() if g.requires_grad and torch.is_grad_enabled() else g
    v = float(torch.linalg.vector_norm(g))
    if (not math.isfinite(v) and bool(torch.isfinite(g).all())) or v < 1e-10:
        scaled = None
        if g.dtype in _FLOATS and g.layout == torch.strided and g.is_contiguous():
            flat = g.view(-1)
            scaled = _sum_squares_scaled(flat, None if scratch is None else scratch(flat))
        v = math.sqrt(scaled) if scaled is not None else float(torch.linalg.vector_norm(g, dtype=torch.float64))
    return v


def _sum_squares_scaled(flat: torch.Tensor, out: torch.Tensor | None = None) -> float | None:
    """Σx² of a 1-D float tensor whose float32 squares overflow or underflow, as a Python float: x is
    first multiplied by 2⁻ᵏ with 2ᵏ just above max|x| (exact in binary floating point), so the
    squares land in [0, 1) — three fast passes (min/max, scale, dot) where a float64 reduction of
    float32 data takes torch's slow conversion path, and, with ``out`` (a buffer like ``flat``), no
    allocation. Elements below 2⁻¹⁵⁰·max|x| contribute nothing, which is below float64 resolution of the
    sum anyway. 0.0 for an all-zero tensor; None if an element is not finite."""
    lo, hi = torch.aminmax(flat)
    top = max(-float(lo), float(hi))
    if not math.isfinite(top):
        return None
    if top == 0.0:
        return 0.0
    k = math.frexp(top)[1]  # top = f·2ᵏ with f in [0.5, 1)
    y = torch.mul(flat, math.ldexp(1.0, -k), out=out) if out is not None else flat * math.ldexp(1.0, -k)
    return math.ldexp(float(torch.dot(y, y)), 2 * k)


def _head(t: torch.Tensor) -> torch.Tensor:
    """The first 64 inputs' representations of ``t`` (batch first, ≥ 1 dimension), flattened: a view."""
    n = min(t.shape[0], _COSINE_SAMPLES)
    return t.detach()[:n].reshape(n, -1)


def _cosine(t: torch.Tensor, scratch: dict[tuple[Any, ...], torch.Tensor] | None = None) -> float | None:
    """Mean cosine similarity between different inputs' (flattened) representations, over the first
    64 inputs: with unit rows ŷ_i, Σ_{i≠j} ŷ_i·ŷ_j = ‖Σ_i ŷ_i‖² − Σ_i ‖ŷ_i‖², so no Gram matrix is
    needed (O(n·D), in float64 so that 1 − cosine resolves down to ~1e-14). All-zero rows count as
    orthogonal to every other row (Σ_i ‖ŷ_i‖² counts the nonzero rows). ``scratch`` caches the float64
    work buffer by shape."""
    if t.dim() < 1 or t.shape[0] < 2:
        return None
    r = fused.ref(t)
    if r is not None:
        n = min(t.shape[0], _COSINE_SAMPLES)
        _, _, t2, nonzero, bad = fused.kernels().moments_cosine(*r, t.numel() // t.shape[0], n)
        return _cosine_from(t2, nonzero, bad, n)
    src = _head(t)
    n = src.shape[0]
    key = (tuple(src.shape), src.device)
    y = None if scratch is None else scratch.get(key)
    if y is None:
        y = torch.empty(src.shape, dtype=torch.float64, device=src.device)
        if scratch is not None:
            scratch[key] = y
    y.copy_(src)
    norms = torch.linalg.vector_norm(y, dim=1)
    inv = norms.clamp_min(1e-300).reciprocal_()
    total = torch.mv(y.T, inv)  # Σ_i y_i/‖y_i‖
    nonzero = float(torch.dot(norms, inv))  # Σ_i ‖ŷ_i‖²: each term 1 (to an ulp) or 0; NaN if not finite
    if not math.isfinite(nonzero):
        return math.nan
    return (float(torch.dot(total, total)) - round(nonzero)) / (n * (n - 1))


def _cosine_from(t2: float, nonzero: int, bad: int, n: int) -> float:
    """The mean cosine from ‖Σ_i ŷ_i‖², the number of nonzero rows and of non-finite rows (see :func:`_cosine`)."""
    return math.nan if bad else (t2 - nonzero) / (n * (n - 1))


def _sum_and_nonzero(v: torch.Tensor, bound: int) -> tuple[float, int]:
    """(Σv, number of nonzero entries) of a small per-unit vector of whole-number counts whose sum is at
    most ``bound``; on CPU through numpy, whose calls cost a fraction of a torch dispatch at this size.
    A float32 sum of whole numbers is exact below 2²⁴, so only larger bounds are summed in float64."""
    if v.device.type == "cpu" and v.dtype in _FLOATS:
        a = v.numpy()  # (a statistic: never requires grad)
        total = a.sum() if bound < 2**24 else a.sum(dtype=np.float64)
        return float(total), int(np.count_nonzero(a))
    both = torch.stack([v.sum(dtype=torch.float64), torch.count_nonzero(v).to(torch.float64)]).tolist()
    return both[0], int(both[1])
