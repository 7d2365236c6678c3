"""Fast, exact samplers that torch does not provide as one kernel."""

from __future__ import annotations

import math

import torch

from .base import _round_in

__all__ = ["TRUNC_STD_2SIGMA", "truncated_moments", "truncated_normal_"]

#: std of N(0,1) restricted to (-2, 2): √(1 − 4φ(2)/(2Φ(2)−1)). Keras and JAX use the same literal.
TRUNC_STD_2SIGMA = 0.87962566103423978

_SQRT2 = math.sqrt(2.0)


def _pdf(x: float) -> float:
    return 0.0 if math.isinf(x) else math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / _SQRT2)


def truncated_moments(lo: float, hi: float) -> tuple[float, float, float]:
    """(mass, mean, variance) of N(0,1) restricted to [lo, hi] (std units)."""
    mass = _cdf(hi) - _cdf(lo)
    if not mass > 0:
        raise ValueError(
            f"bounds: the interval [{lo:g}, {hi:g}] (in standard deviations from the mean) holds no "
            "probability mass; widen a/b or move the mean inside them."
        )
    pa, pb = _pdf(lo), _pdf(hi)
    la = 0.0 if math.isinf(lo) else lo * pa
    lb = 0.0 if math.isinf(hi) else hi * pb
    mean = (pa - pb) / mass
    var = 1.0 + (la - lb) / mass - mean * mean
    return mass, mean, var


def truncated_normal_(
    t: torch.Tensor, lo: float, hi: float, gen: torch.Generator | None, scale: float = 1.0, shift: float = 0.0
) -> torch.Tensor:
    """Fill contiguous ``t`` with shift + scale·Z, Z ~ N(0,1) restricted to [lo, hi] (std units).

    Three exact samplers, by the shape of the interval:

    - both bounds within ±3σ and most of the mass inside (>= 0.3; Keras's ±2σ cut, 95.4 %): the
      inverse CDF in the tensor's own dtype, Z = √2·erfinv(U), U ~ U[erf(lo/√2), erf(hi/√2)) — four
      in-place passes, no rejection and no index bookkeeping, 1.3–2× the time of ``normal_`` (torch's
      ``trunc_normal_`` redraws the whole tensor until nothing is out of range, 10–20× ``normal_``;
      see benchmarks/bench_initializers.py).
      Within ±3σ the float32 grid of U maps to steps in Z below 10⁻⁵σ, so the law is exact to float
      rounding; a final clamp to the bounds rounded inward keeps every value inside [lo, hi];
    - other intervals holding >= 0.3 of the mass (e.g. torch's absolute ±2 with std 0.02, 100σ away):
      one ``normal_`` pass, one compare, then redraws of only the out-of-range entries;
    - intervals with little mass (a one-sided tail): the inverse CDF in float64, which has no
      rejection cost and keeps its resolution far in the tail.
    """
    mass, _, _ = truncated_moments(lo, hi)
    flat = t.view(-1)
    if mass >= 0.3 and lo >= -3.0 and hi <= 3.0:
        ea, eb = math.erf(lo / _SQRT2), math.erf(hi / _SQRT2)
        flat.uniform_(ea, eb, generator=gen).erfinv_()
        flat.mul_(_SQRT2 * scale)
        if shift != 0.0:
            flat.add_(shift)
        # Float rounding in erf, erfinv and the scaling may step one ulp past a bound; keep the promise.
        return flat.clamp_(_round_in(shift + scale * lo, t.dtype, up=True), _round_in(shift + scale * hi, t.dtype)).view_as(t)
    if mass >= 0.3:
        # Draw and test in absolute units: no extra scaling pass, and every kept value is in range.
        a, b = shift + scale * lo, shift + scale * hi

        def outside(x: torch.Tensor) -> torch.Tensor:
            # One abs+compare beats two compares and an or when the cut is symmetric (the usual ±2σ).
            return x.abs() > b if shift == 0.0 and lo == -hi else (x < a) | (x > b)

        flat.normal_(shift, scale, generator=gen)
        if flat.numel() == 0:
            return t
        # Bounds far out (torch's default ±2 with std 0.02 is 100σ): one read-only pass usually
        # shows nothing to redraw, without a mask or index tensor.
        low, high = torch.aminmax(flat)
        if low.item() >= a and high.item() <= b:
            return t
        bad = outside(flat).nonzero().squeeze(1)
        while bad.numel():
            redraw = torch.empty(bad.numel(), dtype=t.dtype, device=t.device).normal_(shift, scale, generator=gen)
            flat[bad] = redraw
            bad = bad[outside(redraw)]
        return t
    u = torch.empty(flat.shape, dtype=torch.float64, device=t.device).uniform_(generator=gen)
    ca, cb = _cdf(lo), _cdf(hi)
    z = torch.special.ndtri(u.mul_(cb - ca).add_(ca)).clamp_(lo, hi)
    flat.copy_(z.mul_(scale).add_(shift))
    if math.isfinite(lo) or math.isfinite(hi):
        # float32 rounding of shift+scale·z may step one ulp past the bound.
        flat.clamp_(shift + scale * lo if math.isfinite(lo) else None, shift + scale * hi if math.isfinite(hi) else None)
    return t
