"""Mean-field signal propagation for any activation (Poole et al. 2016; Schoenholz et al. 2017).

A fully connected network with weights W ~ N(0, σ_w²/fan_in), biases b ~ N(0, σ_b²) and activation
φ has, in the infinite-width limit, Gaussian pre-activations whose variance follows the *length map*

    q_{l+1} = V(q_l) = σ_w²·E[φ(√q_l z)²] + σ_b²,          z ~ N(0, 1)             (Poole eq. 3)

and whose correlation between two inputs follows the *correlation map* (at the fixed point q*)

    c_{l+1} = C(c_l) = (σ_w²·E[φ(u₁)φ(u₂)] + σ_b²) / q*,   (u₁, u₂) ~ N(0, q*·[[1, c], [c, 1]]).

At the fixed point the slope of C at c = 1 is χ₁ = σ_w²·E[φ'(√q* z)²]; χ₁ < 1 is the ordered phase
(inputs collapse together), χ₁ > 1 the chaotic one, χ₁ = 1 the *edge of chaos*. Signals travel
ξ_q = −1/ln V'(q*) layers in length and ξ_c = −1/ln χ_c layers in correlation, where χ_c = C'(c*)
(= χ₁ when c* = 1); Schoenholz et al. (arXiv:1611.01232) find nets trainable to depth ≈ 6ξ_c.

Quadrature. Activations are arbitrary callables (resolved by :func:`initlab.activation`), often with
a kink at 0 (ReLU family, ELU, ReLU6). Plain Gauss–Hermite converges slowly there — 101 nodes put a node
at 0 and give E[ReLU'(z)²] 12 % wrong, and at q = 9 tanh's E[φ'²] is 1.5 % off (measured). So:

* 1-D expectations use Gauss–Legendre panels against the Gaussian density on z ∈ [−10, 10]: panels of
  width 0.5 with the first split geometrically toward 0 (edges 0.5·2^-k, k ≤ 20), mirrored, 8 nodes each
  (640 nodes), plus an edge at k/√q for every kink k of φ (``Activation.kinks``: ReLU6, hardtanh,
  hardswish, hardsigmoid), so every kink of z ↦ φ(√q z) sits on a panel edge and features at x ≈ 0
  stay resolved up to q ≈ 10⁸. Against the adaptive quadrature of :mod:`initlab.initializers.quadrature` and
  25-digit mpmath the relative error is ≤ 2e-11 for tanh, GELU, ELU, ReLU, ReLU6, SiLU at q ∈ [1e-4, 1e6]; an
  unknown callable with a kink elsewhere costs ~1e-4 (the critical search's error estimate shows it).
* The 2-D correlation integral uses polar coordinates z = r(cos θ, sin θ): then u₁ = √q₁ r cos θ and
  u₂ = √q₂ r cos(θ − α) with c = cos α, so the kink lines u₁ = 0 and u₂ = 0 are the rays
  θ = ±π/2, α ± π/2, which become panel edges of the θ rule (4 arcs × 2 panels × 8 nodes); r uses
  Gauss–Legendre panels against r·e^{−r²/2} on [0, 10] (10 × 8 nodes). ReLU's arc-cosine kernel comes
  out exact to ~1e-15; erf(1.5x) at q = 0.8 (closed form: Williams 1997) to 2e-6 at c = 0.999.

Everything is vectorized over the points (one call of φ per batch of points) and root finding uses a
few vectorized bracketing rounds (or Newton for c*), so a call costs 0.1–8 ms of CPU
(``benchmarks/bench_lsuv.py`` prints wall and CPU time per function).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..initializers.activations import Activation, ActivationLike, activation
from ..initializers.quadrature import derivative

__all__ = [
    "DepthScales",
    "VarianceMap",
    "chi1",
    "correlation_fixed_point",
    "correlation_map",
    "depth_scales",
    "expectation",
    "fixed_point",
    "predict_std",
    "variance_map",
]

_Z_LIMIT = 10.0  # pdf(10) ≈ 7.7e-23: beyond it no activation of polynomial growth contributes
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_PANELS_1D = 20  # per side of 0: panels of width 0.5 on [0, 10]
_GRADED = 20  # the first panel split geometrically toward 0: edges 0.5·2^-k, k = 1..20
_PANELS_R = 10  # radial panels of width 1 on [0, 10], 8 nodes each
_ARC_PANELS = 2  # panels per arc between kink rays, 8 nodes each (64 angles)


def _panels(lo: float, hi: float, panels: int, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(nodes)
    edges = np.linspace(lo, hi, panels + 1)
    a, b = edges[:-1, None], edges[1:, None]
    return ((a + b) / 2 + (b - a) / 2 * x).ravel(), ((b - a) / 2 * w).ravel()


def _edges_1d() -> np.ndarray:
    """Panel edges on [0, 10]: 0, 0.5·2^-20, …, 0.25, 0.5, 1, …, 10. The geometric panels near 0 resolve
    an activation's features at x ≈ 0 (a kink, GELU's bend) after scaling by √q: at q = 10⁸ they sit at
    |z| ~ 10⁻⁴, which a panel of width 0.5 would smear."""
    fine = 0.5 * 2.0 ** -np.arange(_GRADED, 0, -1, dtype=np.float64)
    coarse = np.linspace(0.5, _Z_LIMIT, _PANELS_1D)
    return np.concatenate([[0.0], fine, coarse])


@lru_cache(maxsize=2)
def _rule_1d(nodes: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes z and weights w with Σ w·f(z) ≈ E[f(z)], z ~ N(0, 1): Gauss–Legendre with ``nodes`` points
    on each panel of :func:`_edges_1d` and its mirror image (a panel edge at z = 0)."""
    x, wx = np.polynomial.legendre.leggauss(nodes)
    edges = _edges_1d()
    a, b = edges[:-1, None], edges[1:, None]
    zr = ((a + b) / 2 + (b - a) / 2 * x).ravel()
    wr = ((b - a) / 2 * wx).ravel()
    z = np.concatenate([-zr[::-1], zr])
    w = np.concatenate([wr[::-1], wr]) * np.exp(-0.5 * z * z) / _SQRT_2PI
    return torch.from_numpy(z), torch.from_numpy(w)


def _rule(q: np.ndarray, kinks: tuple[float, ...] = (), nodes: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """z and w of shape (len(q), N) with Σ_j w[i, j]·f(z[i, j]) ≈ E[f(z)], z ~ N(0, 1): the rule of
    :func:`_rule_1d`, plus a panel edge at z = k/√q[i] for each kink k of φ, so that every kink of
    z ↦ φ(√q z) sits on an edge (a kink inside a panel costs Gauss–Legendre its order: ~1e-4 relative)."""
    if not kinks:
        z, w = _rule_1d(nodes)
        return z.expand(len(q), -1), w.expand(len(q), -1)
    half = _edges_1d()
    base = np.concatenate([-half[::-1], half[1:]])
    with np.errstate(divide="ignore"):
        extra = np.asarray(kinks, dtype=np.float64)[None, :] / np.sqrt(q)[:, None]
    # A kink beyond ±10 (or at q = 0) becomes a zero-width panel at the end: weight 0.
    extra = np.clip(extra, -_Z_LIMIT, _Z_LIMIT)
    edges = np.sort(np.concatenate([np.broadcast_to(base, (len(q), base.size)), extra], axis=1), axis=1)
    x, wx = np.polynomial.legendre.leggauss(nodes)
    a, b = edges[:, :-1, None], edges[:, 1:, None]
    z = ((a + b) / 2 + (b - a) / 2 * x).reshape(len(q), -1)
    w = ((b - a) / 2 * wx).reshape(len(q), -1) * np.exp(-0.5 * z * z) / _SQRT_2PI
    return torch.from_numpy(z), torch.from_numpy(w)


@lru_cache(maxsize=1)
def _rule_radial() -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes r and weights with Σ w·g(r) ≈ ∫₀^∞ g(r)·r·e^{−r²/2} dr (the radial part of N(0, I₂))."""
    r, w = _panels(0.0, _Z_LIMIT, _PANELS_R, 8)
    return torch.from_numpy(r), torch.from_numpy(w * r * np.exp(-0.5 * r * r))


_THETA_X, _THETA_W = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(8))


def _theta_rule(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Angles θ (n_c, n_θ) and weights (including the 1/2π) covering [0, 2π) with panel edges at the
    kink rays π/2, 3π/2, α + π/2 and α + 3π/2 (mod 2π) of each correlation c = cos α."""
    half = math.pi / 2
    breaks = torch.stack(
        [
            torch.full_like(alpha, half),
            torch.full_like(alpha, 3 * half),
            torch.remainder(alpha + half, 2 * math.pi),
            torch.remainder(alpha + 3 * half, 2 * math.pi),
        ],
        dim=1,
    )
    breaks, _ = torch.sort(breaks, dim=1)
    edges = torch.cat([breaks, breaks[:, :1] + 2 * math.pi], dim=1)  # 4 arcs going once round
    # Split each arc into equal panels, then place 8 Gauss–Legendre nodes in each panel.
    frac = torch.arange(_ARC_PANELS + 1, dtype=torch.float64) / _ARC_PANELS
    sub = edges[:, :-1, None] + (edges[:, 1:, None] - edges[:, :-1, None]) * frac  # (n, 4, P+1)
    a, b = sub[..., :-1, None], sub[..., 1:, None]  # (n, 4, P, 1)
    theta = (a + b) / 2 + (b - a) / 2 * _THETA_X
    weight = (b - a) / 2 * _THETA_W / (2 * math.pi)
    n = alpha.shape[0]
    return theta.reshape(n, -1), weight.reshape(n, -1)


# -- argument checking ------------------------------------------------------------------------------


def _act(act: ActivationLike) -> Activation:
    return activation(act)


def _nonneg(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} ({value!r}).")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}.")
    return value


def _q_array(q: float | np.ndarray, name: str = "q") -> tuple[np.ndarray, bool]:
    scalar = np.ndim(q) == 0
    arr = np.atleast_1d(np.asarray(q, dtype=np.float64))
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        bad = arr[~np.isfinite(arr) | (arr < 0)][0]
        raise ValueError(f"{name}: variances must be finite and >= 0, got {bad!r}.")
    return arr, scalar


def _out(values: np.ndarray, scalar: bool) -> float | np.ndarray:
    return float(values[0]) if scalar else values


# -- expectations -----------------------------------------------------------------------------------


def _call(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    y = f(x)
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        got = f"shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(
            f"act: must map a tensor to a tensor of the same shape (elementwise); for input of shape "
            f"{tuple(x.shape)} it returned {got}."
        )
    return y.to(torch.float64)


def _finite(values: np.ndarray) -> np.ndarray:
    # Checking the weighted sums is enough (a NaN or inf anywhere propagates) and far cheaper than
    # checking every point.
    if not np.all(np.isfinite(values)):
        raise ValueError("act: returned non-finite values on Gaussian inputs; its moments cannot be computed.")
    return values


def _points(q: np.ndarray, kinks: tuple[float, ...] = (), nodes: int = 8):
    """(x, z, w), each (len(q), N): inputs x = √q·z of the rule for each variance q, and its weights."""
    z, w = _rule(q, kinks, nodes)
    return torch.from_numpy(np.sqrt(q))[:, None] * z, z, w


def _expect(values: torch.Tensor, w: torch.Tensor, strict: bool = True) -> np.ndarray:
    out = (values * w).sum(dim=1).numpy()
    return _finite(out) if strict else out


def expectation(
    f: Callable[[torch.Tensor], torch.Tensor], q: float | np.ndarray
) -> float | np.ndarray:
    """E[f(√q·z)], z ~ N(0, 1), for each variance ``q`` (vectorized; see the module docstring for the rule).
    ``f`` may be an :class:`~initlab.Activation`: its kinks then become panel edges."""
    qa, scalar = _q_array(q)
    x, _, w = _points(qa, getattr(f, "kinks", ()))
    return _out(_expect(_call(f, x), w), scalar)


def _moments(
    act: Activation, q: np.ndarray, stein: bool = False, nodes: int = 8, strict: bool = True
) -> tuple[np.ndarray, ...]:
    """(E[φ(√q z)²], E[φ'(√q z)²]) for each q, with one call of φ and one of φ' (autograd); with
    ``stein=True`` also E[φ(√q z)²(z² − 1)] (= 2q·V'(q)/σ_w², from the same values). ``nodes`` per
    panel: 8 is the rule everywhere; 16 gives the second order that error estimates compare against.
    ``strict=False`` returns inf/nan where float64 overflows instead of raising."""
    x, z, w = _points(q, act.kinks, nodes)
    with np.errstate(all="ignore"):
        phi = _call(act.fn, x)
        dphi = _call(derivative(act.fn), x)
        p2 = phi * phi
        out = [_expect(p2, w, strict), _expect(dphi * dphi, w, strict)]
        if stein:
            out.append(_expect(p2 * (z * z - 1), w, strict))
    return tuple(out)


def _refine_root(
    g: Callable[[np.ndarray], np.ndarray], lo: float, hi: float, points: int = 32, rounds: int = 3
) -> float:
    """A root of ``g`` in [lo, hi] (g(lo), g(hi) of opposite signs or zero), by vectorized bracketing.

    Each round evaluates g at ``points`` evenly spaced points of the bracket in ONE call and keeps the
    sub-interval where the sign changes, shrinking the bracket (points − 1)-fold; a final secant step
    inside the last bracket adds the square of that precision. Few calls of a vectorized g beat
    Brent's many scalar calls when every call costs a torch dispatch.
    """
    g_lo = float(g(np.array([lo]))[0])
    for _ in range(rounds):
        xs = np.linspace(lo, hi, points)
        gs = np.asarray(g(xs), dtype=np.float64)
        gs[0] = g_lo
        zero = np.nonzero(gs == 0)[0]
        if zero.size:
            return float(xs[zero[0]])
        change = np.nonzero(np.sign(gs[:-1]) != np.sign(gs[1:]))[0]
        if change.size == 0:
            break
        k = int(change[0])
        lo, hi, g_lo, g_hi = float(xs[k]), float(xs[k + 1]), float(gs[k]), float(gs[k + 1])
    else:
        return lo + (hi - lo) * g_lo / (g_lo - g_hi)
    return 0.5 * (lo + hi)


# -- the length map -------------------------------------------------------------------------------


class VarianceMap:
    """q ↦ σ_w²·E[φ(√q z)²] + σ_b² as a vectorized callable (returned by :func:`variance_map`)."""

    def __init__(self, act: Activation, sigma_w2: float, sigma_b2: float) -> None:
        self.act, self.sigma_w2, self.sigma_b2 = act, sigma_w2, sigma_b2

    def __call__(self, q: float | np.ndarray) -> float | np.ndarray:
        qa, scalar = _q_array(q)
        x, _, w = _points(qa, self.act.kinks)
        phi = _call(self.act.fn, x)
        return _out(self.sigma_w2 * _expect(phi * phi, w) + self.sigma_b2, scalar)

    def slope(self, q: float | np.ndarray) -> float | np.ndarray:
        """V'(q) = σ_w²·E[φ(√q z)²(z² − 1)]/(2q) (Stein's lemma; needs no φ''), and σ_w²·φ'(0)² at q = 0."""
        qa, scalar = _q_array(q)
        x, z, w = _points(qa, self.act.kinks)
        phi2 = _call(self.act.fn, x) ** 2
        out = np.empty_like(qa)
        pos = qa > 0
        out[pos] = self.sigma_w2 * _expect(phi2[pos] * (z[pos] * z[pos] - 1), w[pos]) / (2 * qa[pos])
        if (~pos).any():
            d0 = float(_call(derivative(self.act.fn), torch.zeros(1, dtype=torch.float64))[0])
            out[~pos] = self.sigma_w2 * d0 * d0
        return _out(out, scalar)

    def __repr__(self) -> str:
        return f"VarianceMap({self.act.label}, sigma_w2={self.sigma_w2:g}, sigma_b2={self.sigma_b2:g})"


def variance_map(
    act: ActivationLike, sigma_w2: float, sigma_b2: float, q: float | np.ndarray | None = None
) -> VarianceMap | float | np.ndarray:
    """The length map V(q) = σ_w²·E[φ(√q z)²] + σ_b² (Poole et al. 2016, arXiv:1606.05340, eq. 3).

    With ``q`` (a float or an array of variances) returns V(q); without, a vectorized callable.

    >>> round(variance_map("relu", 2.0, 0.0, 1.5), 12)
    1.5
    """
    m = VarianceMap(_act(act), _nonneg("sigma_w2", sigma_w2), _nonneg("sigma_b2", sigma_b2))
    return m if q is None else m(q)


_Q_GRID = np.concatenate([[0.0], np.logspace(-8, 8, 81)])


def _fixed_point(vmap: VarianceMap, q0: float) -> float:
    """The fixed point that iterating V from q0 reaches (0, a finite q*, or inf when V(q) > q for all q > q0)."""
    g_q0 = float(vmap(q0)) - q0
    scale = max(q0, 1.0)
    if abs(g_q0) <= 1e-12 * scale:
        return q0  # q0 is itself a fixed point (e.g. ReLU at σ_w² = 2, σ_b² = 0: every q is)
    grid = _Q_GRID
    g = np.asarray(vmap(grid)) - grid
    if g_q0 > 0:
        # q grows: the attractor is the first q > q0 where V(q) − q turns negative.
        above = np.nonzero((grid > q0) & (g <= 0))[0]
        if above.size == 0:
            return math.inf
        hi = float(grid[above[0]])
        lo = max(q0, float(grid[above[0] - 1]))
    else:
        # q shrinks: the attractor is the largest q < q0 where V(q) − q is >= 0.
        below = np.nonzero((grid < q0) & (g >= 0))[0]
        if below.size == 0:
            return 0.0
        lo = float(grid[below[-1]])
        if g[below[-1]] == 0:
            return lo
        hi = min(q0, float(grid[below[-1] + 1]))
    if float(vmap(hi)) - hi == 0:
        return hi
    # Refine in log q when the bracket spans decades, so the relative precision is uniform.
    if lo > 0:
        return float(np.exp(_refine_root(lambda t: np.asarray(vmap(np.exp(t))) - np.exp(t), math.log(lo), math.log(hi))))
    return _refine_root(lambda q: np.asarray(vmap(q)) - q, lo, hi)


def fixed_point(act: ActivationLike, sigma_w2: float, sigma_b2: float, q0: float = 1.0) -> float:
    """The fixed point q* = V(q*) of the length map that layers starting at variance ``q0`` approach.

    ``0.0`` when the variance dies out (e.g. tanh with σ_b² = 0 and σ_w² ≤ 1), ``inf`` when it grows
    without bound (e.g. ReLU with σ_w² > 2), ``q0`` itself when every q is a fixed point (ReLU at
    σ_w² = 2, σ_b² = 0). Found on a log grid of q, then refined by vectorized bracketing and a secant step.

    >>> round(fixed_point("tanh", 1.76, 0.05), 3)
    0.569
    """
    vmap = VarianceMap(_act(act), _nonneg("sigma_w2", sigma_w2), _nonneg("sigma_b2", sigma_b2))
    return _fixed_point(vmap, _nonneg("q0", q0))


def _q_star(vmap: VarianceMap, q: float | None, who: str) -> float:
    if q is not None:
        return _nonneg("q", q)
    qs = _fixed_point(vmap, 1.0)
    if not math.isfinite(qs):
        raise ValueError(
            f"{who}: the length map of {vmap.act.label} with sigma_w2={vmap.sigma_w2:g}, "
            f"sigma_b2={vmap.sigma_b2:g} has no finite fixed point (the variance grows without bound); "
            "pass q= to evaluate at a chosen variance, or lower sigma_w2."
        )
    return qs


def chi1(act: ActivationLike, sigma_w2: float, sigma_b2: float, q: float | None = None) -> float:
    """χ₁ = σ_w²·E[φ'(√q* z)²], the slope of the correlation map at c = 1 (Poole et al. 2016, eq. 7).

    χ₁ < 1: ordered phase; χ₁ > 1: chaotic; χ₁ = 1: edge of chaos. ``q`` defaults to the fixed point
    that layers fed unit-variance inputs reach (``fixed_point(..., q0=1)``); pass ``q`` for another.

    >>> round(chi1("tanh", 1.5, 0.05), 3)
    0.939
    """
    a = _act(act)
    vmap = VarianceMap(a, _nonneg("sigma_w2", sigma_w2), _nonneg("sigma_b2", sigma_b2))
    qs = _q_star(vmap, q, "chi1")
    _, d2 = _moments(a, np.array([qs]))
    return float(vmap.sigma_w2 * d2[0])


# -- the correlation map -------------------------------------------------------------------------


def _pair_expectation(
    f: Callable[[torch.Tensor], torch.Tensor], q1: float, q2: float, c: np.ndarray
) -> np.ndarray:
    """E[f(u₁)·f(u₂)] with Var u₁ = q1, Var u₂ = q2, corr(u₁, u₂) = c, for each c (polar rule)."""
    ct = torch.from_numpy(np.clip(c, -1.0, 1.0))
    alpha = torch.arccos(ct)
    theta, wt = _theta_rule(alpha)  # (n, T)
    r, wr = _rule_radial()  # (R,)
    u1 = math.sqrt(q1) * r[None, :, None] * torch.cos(theta)[:, None, :]
    u2 = math.sqrt(q2) * r[None, :, None] * torch.cos(theta - alpha[:, None])[:, None, :]
    both = _call(f, torch.stack([u1, u2]))
    prod = both[0] * both[1]
    return _finite(torch.einsum("nrt,r,nt->n", prod, wr, wt).numpy())


def correlation_map(
    act: ActivationLike,
    sigma_w2: float,
    sigma_b2: float,
    c: float | np.ndarray,
    q: float | None = None,
) -> float | np.ndarray:
    """C(c) = (σ_w²·E[φ(u₁)φ(u₂)] + σ_b²)/q*, (u₁, u₂) ~ N(0, q*·[[1, c], [c, 1]]) (Poole eq. 5).

    ``c`` may be an array; ``q`` defaults to the fixed point q*. The 2-D integral uses the polar rule
    of the module docstring.

    >>> round(float(correlation_map("relu", 2.0, 0.0, 0.0, q=1.0)), 6)  # 2·q/(2π) / q = 1/π
    0.31831
    """
    a = _act(act)
    vmap = VarianceMap(a, _nonneg("sigma_w2", sigma_w2), _nonneg("sigma_b2", sigma_b2))
    qs = _q_star(vmap, q, "correlation_map")
    ca, scalar = _corr_array(c)
    if qs == 0:
        # Zero variance: every input maps to φ(0); C is (σ_w²φ(0)² + σ_b²)/q*, undefined; report 1.
        return _out(np.ones_like(ca), scalar)
    return _out((vmap.sigma_w2 * _pair_expectation(a.fn, qs, qs, ca) + vmap.sigma_b2) / qs, scalar)


def _corr_array(c: float | np.ndarray) -> tuple[np.ndarray, bool]:
    scalar = np.ndim(c) == 0
    arr = np.atleast_1d(np.asarray(c, dtype=np.float64))
    if not np.all(np.isfinite(arr)) or np.any(np.abs(arr) > 1):
        bad = arr[~np.isfinite(arr) | (np.abs(arr) > 1)][0]
        raise ValueError(f"c: correlations must lie in [-1, 1], got {bad!r}.")
    return arr, scalar


def _pair_value_and_slope(
    f: Callable[[torch.Tensor], torch.Tensor], q: float, c: float
) -> tuple[float, float]:
    """(E[φ(u₁)φ(u₂)], E[φ'(u₁)φ'(u₂)]) at Var = q, corr = c, from one autograd pass over the 2-D rule."""
    ct = torch.tensor([min(max(c, -1.0), 1.0)], dtype=torch.float64)
    alpha = torch.arccos(ct)
    theta, wt = _theta_rule(alpha)
    r, wr = _rule_radial()
    sq = math.sqrt(q)
    x = torch.stack([sq * r[:, None] * torch.cos(theta[0])[None, :],
                     sq * r[:, None] * torch.cos(theta[0] - alpha)[None, :]])
    with torch.enable_grad():
        xg = x.clone().requires_grad_(True)
        y = _call(f, xg)
        if y.requires_grad:
            (dy,) = torch.autograd.grad(y.sum(), xg, allow_unused=True)
        else:
            dy = None
    y = y.detach()
    dy = torch.zeros_like(x) if dy is None else dy.to(torch.float64)
    w2 = wr[:, None] * wt[0][None, :]
    vals = _finite(np.array([float((y[0] * y[1] * w2).sum()), float((dy[0] * dy[1] * w2).sum())]))
    return float(vals[0]), float(vals[1])


def _c_star(a: Activation, sigma_w2: float, sigma_b2: float, qs: float, chi: float) -> tuple[float, float]:
    """(c*, χ_c): c* = 1 and χ_c = χ₁ in the ordered phase; else the stable fixed point c* < 1 of C
    and χ_c = C'(c*) = σ_w²·E[φ'(u₁)φ'(u₂)] there (Price's theorem).

    g(c) = C(c) − c is convex on [0, 1] (C has a power series in c with non-negative coefficients),
    g(0) >= 0 and g < 0 just below 1 when χ₁ > 1, so Newton's method from c = 0 increases
    monotonically to the root, each step one 2-D quadrature of φ and φ' together.
    """
    if chi <= 1.0 or qs == 0:
        return 1.0, chi
    c = 0.0
    slope = chi
    for _ in range(100):
        e, d = _pair_value_and_slope(a.fn, qs, c)
        value = (sigma_w2 * e + sigma_b2) / qs - c
        slope = sigma_w2 * d  # C'(c); the slope of g is C'(c) − 1
        if value <= 0 and c == 0.0:
            return 0.0, slope  # odd φ with σ_b² = 0: C(0) = 0, decorrelated inputs stay so
        if slope >= 1.0:
            break  # only when c* is within rounding of 1 (χ₁ within ~1e-12 of 1)
        step = value / (1.0 - slope)
        c_next = min(c + step, 1.0)
        if abs(c_next - c) <= 1e-13:
            c = c_next
            break
        c = c_next
    if c >= 1.0 or slope >= 1.0:
        return 1.0, chi
    return c, slope


def correlation_fixed_point(act: ActivationLike, sigma_w2: float, sigma_b2: float) -> float:
    """c*, the correlation that deep layers converge to: 1 when χ₁ ≤ 1, else the root of C(c) = c in [0, 1).

    >>> round(correlation_fixed_point("tanh", 2.0, 0.05), 3)
    0.744
    """
    return depth_scales(act, sigma_w2, sigma_b2).c_star


@dataclass(frozen=True)
class DepthScales:
    """Mean-field depth scales (Schoenholz et al. 2017, arXiv:1611.01232).

    ``xi_q = −1/ln V'(q*)`` (layers over which the length converges to q*), ``xi_c = −1/ln χ_c``
    (layers over which two inputs' correlation converges to c*; trainable depth ≈ 6·ξ_c).
    ``inf`` at criticality.
    """

    q_star: float
    c_star: float
    chi1: float
    chi_c: float
    xi_q: float
    xi_c: float

    @property
    def trainable_depth(self) -> float:
        """6·ξ_c, the depth beyond which Schoenholz et al. found such nets untrainable."""
        return 6 * self.xi_c


def _xi(slope: float) -> float:
    if slope <= 0:
        return 0.0
    if slope >= 1:
        return math.inf
    return -1.0 / math.log(slope)


def depth_scales(act: ActivationLike, sigma_w2: float, sigma_b2: float) -> DepthScales:
    """ξ_q and ξ_c (with q*, c*, χ₁, χ_c) of a network at (σ_w², σ_b²).

    >>> s = depth_scales("tanh", 1.5, 0.05)
    >>> round(s.xi_c, 1), round(s.q_star, 3)
    (15.8, 0.418)
    """
    a = _act(act)
    vmap = VarianceMap(a, _nonneg("sigma_w2", sigma_w2), _nonneg("sigma_b2", sigma_b2))
    qs = _q_star(vmap, None, "depth_scales")
    _, d2 = _moments(a, np.array([qs]))
    chi = float(vmap.sigma_w2 * d2[0])
    c_star, chi_c = _c_star(a, vmap.sigma_w2, vmap.sigma_b2, qs, chi)
    v_slope = float(vmap.slope(qs))
    return DepthScales(qs, c_star, chi, chi_c, _xi(abs(v_slope)), _xi(abs(chi_c)))


def predict_std(
    act: ActivationLike, sigma_w2: float, sigma_b2: float, depth: int, q0: float = 1.0
) -> np.ndarray:
    """Predicted std of the pre-activations of layers 1..``depth`` of a wide MLP.

    ``q0`` is the mean square of the input features (1/n·Σ x_i²). Layer 1 sees the raw input, so
    q₁ = σ_w²·q0 + σ_b²; each later layer sees φ of the previous one, q_{l+1} = V(q_l). Returns
    ``sqrt([q₁, …, q_depth])`` (the pre-activations have mean 0, so std = √q).

    >>> predict_std("relu", 2.0, 0.0, 3, q0=1.0).tolist()
    [1.4142135623730951, 1.4142135623730951, 1.4142135623730951]
    """
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ValueError(f"depth: expected an int >= 1 (number of layers), got {depth!r}.")
    vmap = VarianceMap(_act(act), _nonneg("sigma_w2", sigma_w2), _nonneg("sigma_b2", sigma_b2))
    q = vmap.sigma_w2 * _nonneg("q0", q0) + vmap.sigma_b2
    out = np.empty(int(depth))
    for layer in range(int(depth)):
        out[layer] = q
        if layer + 1 < depth and math.isfinite(q):
            x, _, w = _points(np.array([q]), vmap.act.kinks)
            phi = _call(vmap.act.fn, x)
            q = vmap.sigma_w2 * float((phi * phi * w).sum()) + vmap.sigma_b2  # V(q); may overflow to inf
    if np.isnan(out).any():
        raise ValueError(f"act: {vmap.act.label} returned non-finite values; cannot predict the std.")
    with np.errstate(over="ignore"):
        return np.sqrt(out)
