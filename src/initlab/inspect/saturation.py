"""Saturation: the set {z : |φ'(z)| < 5 % max |φ'|} of any elementwise activation as a union of
intervals, found once per activation, and the fraction of a tensor that falls in it."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..initializers.activations import Activation
from ..initializers.quadrature import derivative
from . import fused

__all__ = ["SATURATION_THRESHOLD", "SaturationRule", "saturation_rule"]


SATURATION_THRESHOLD = 0.05  # |φ'(z)| below 5 % of its maximum counts as saturated


@dataclass(frozen=True)
class SaturationRule:
    """The saturated set of an activation as sorted interval edges.

    The real line is cut at ``edges``; ``first_saturated`` says whether (−∞, edges[0]) is saturated
    and membership alternates across each edge. ``reference`` is P(z saturated) for z ~ N(0, 1),
    exact from the normal CDF. ``max_slope`` is max |φ'| over |z| ≤ 12.
    """

    label: str
    edges: tuple[float, ...]
    first_saturated: bool
    reference: float
    max_slope: float

    def fraction(self, z: torch.Tensor, scratch: torch.Tensor | None = None) -> float:
        """Fraction of the elements of ``z`` in the saturated set.

        With S_e = Σ sign(z − e) for each edge e₁ < … < e_k, the count below e₁ is (n − S₁)/2, between
        e_i and e_{i+1} it is (S_i − S_{i+1})/2 and above e_k it is (n + S_k)/2 (an element exactly on
        an edge counts ½ on each side — a null event for continuous z). Float sign-sums are several
        times faster on CPU than boolean masks and exact in float64 up to 2⁵³ elements. ``scratch``, a
        tensor of z's shape and dtype, receives the signs (no allocation in the middle of a forward).
        """
        z = z.detach()
        n = float(max(z.numel(), 1))
        if not self.edges:
            return 1.0 if self.first_saturated else 0.0
        r = fused.ref(z)
        if r is not None:
            twice, nan = fused.kernels().saturated(*r, _edges_array(self.edges), self.first_saturated)
            return math.nan if nan else twice / (2.0 * n)
        # ±1 sums are exact in float32 below 2²⁴ elements; beyond, accumulate in float64.
        acc = None if z.numel() < 2**24 and z.dtype == torch.float32 else torch.float64
        sums = []
        for e in self.edges:
            if scratch is None:
                sg = torch.sign(z if e == 0.0 else z - e)
            elif e == 0.0:
                sg = torch.sign(z, out=scratch)
            else:
                sg = torch.sign(torch.sub(z, e, out=scratch), out=scratch)
            sums.append(float(sg.sum(dtype=acc)))
        counts = [(n - sums[0]) / 2]
        counts += [(sums[i] - sums[i + 1]) / 2 for i in range(len(sums) - 1)]
        counts.append((n + sums[-1]) / 2)
        start = 0 if self.first_saturated else 1
        total = counts[start]
        for c in counts[start + 2 :: 2]:
            total = total + c
        return total / n


@functools.cache
def _edges_array(edges: tuple[float, ...]) -> np.ndarray:
    """A rule's edges as the float64 array the saturation kernel takes (built once per rule)."""
    return np.array(edges, dtype=np.float64)


_RULES: dict[str, SaturationRule] = {}
_GRID_LIMIT = 12.0
_GRID_POINTS = 24001


def saturation_rule(act: Activation) -> SaturationRule:
    """Find {z : |φ'(z)| < 5 % max|φ'|} for an elementwise activation (cached by its label).

    φ' comes from :func:`initlab.initializers.quadrature.derivative` (autograd) on a grid of 24 001 points over
    [−12, 12]; each sign change of |φ'(z)| − 0.05·max|φ'| is refined by 60 bisections, so the edges are
    exact to float64. Outside the grid the set continues as at its ends.
    """
    key = f"{act.label}:{id(act.fn) if act.name not in _KNOWN_LABELS else ''}"
    if key in _RULES:
        return _RULES[key]
    dphi = derivative(act.fn)
    grid = torch.linspace(-_GRID_LIMIT, _GRID_LIMIT, _GRID_POINTS, dtype=torch.float64)
    slope = dphi(grid).abs()
    if not torch.isfinite(slope).all():
        raise ValueError(f"activation {act.label!r}: its derivative is not finite on [-12, 12].")
    max_slope = float(slope.max())
    thr = SATURATION_THRESHOLD * max_slope
    if max_slope == 0.0:
        rule = SaturationRule(act.label, (), True, 1.0, 0.0)
        _RULES[key] = rule
        return rule
    sat = slope < thr
    edges: list[float] = []
    flips = torch.nonzero(sat[1:] != sat[:-1]).flatten().tolist()
    for i in flips:
        lo, hi = float(grid[i]), float(grid[i + 1])
        lo_sat = bool(sat[i])
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            m_sat = bool(dphi(torch.tensor([mid], dtype=torch.float64)).abs()[0] < thr)
            if m_sat == lo_sat:
                lo = mid
            else:
                hi = mid
        # Kinks of piecewise activations sit at integers (ReLU at 0, ReLU6 at 6, hardtanh at ±1); bisection
        # lands within ~1e-18 of them, and an edge of exactly 0 spares a subtraction pass over z per call.
        edges.append(float(round(hi)) if abs(hi - round(hi)) < 1e-12 else hi)
    first = bool(sat[0])
    # P(saturated) under N(0, 1): sum of Φ(b) − Φ(a) over the saturated intervals.
    bounds = [-math.inf, *edges, math.inf]
    ref = 0.0
    for j in range(len(bounds) - 1):
        if (j % 2 == 0) == first:
            ref += _phi(bounds[j + 1]) - _phi(bounds[j])
    rule = SaturationRule(act.label, tuple(edges), first, min(max(ref, 0.0), 1.0), max_slope)
    _RULES[key] = rule
    return rule


_KNOWN_LABELS = {
    "linear",
    "relu",
    "leaky_relu",
    "tanh",
    "sigmoid",
    "selu",
    "gelu",
    "gelu_tanh",
    "silu",
    "mish",
    "elu",
    "celu",
    "softplus",
    "softsign",
    "hardtanh",
    "relu6",
    "hardswish",
    "hardsigmoid",
    "logsigmoid",
    "tanhshrink",
    "sin",
    "exponential",
}


def _phi(x: float) -> float:
    if x == math.inf:
        return 1.0
    if x == -math.inf:
        return 0.0
    return 0.5 * math.erfc(-x / math.sqrt(2.0))
