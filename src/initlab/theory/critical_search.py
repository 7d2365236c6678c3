"""The edge of chaos, exactly: σ_w² with χ₁ = 1 at an attracting fixed point of the variance map.

:func:`critical_point` (and :func:`critical`, its σ_w²) scans χ₁ − 1 along the curve of fixed points with
two quadrature orders, counts a crossing only beyond their difference, treats the two limits that reach
χ₁ = 1 without a crossing analytically, and confirms a point by iterating the map; everything else raises
:class:`NoCriticalPointError`. The maps themselves are in :mod:`initlab.theory.maps`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..initializers.activations import Activation, ActivationLike
from ..initializers.quadrature import derivative
from .maps import _Q_GRID, VarianceMap, _act, _call, _moments, _nonneg, _refine_root

__all__ = ["CriticalPoint", "NoCriticalPointError", "critical", "critical_point"]


# -- critical initialization ----------------------------------------------------------------------
#
# Along the curve of fixed points, q* = σ_b² + t for t > 0, a fixed point needs σ_w²(t) = t/E[φ(√q* z)²],
# and there χ₁(t) = σ_w²(t)·E[φ'(√q* z)²]. The edge of chaos is where χ₁(t) = 1 *and* q* attracts. Two
# limits of that curve reach χ₁ = 1 without a crossing, and the search treats them analytically rather
# than trusting quadrature noise near them:
#   t → 0 at σ_b² = 0 with φ(0) = 0, φ'(0) ≠ 0:  σ_w² → 1/φ'(0)² and χ₁ → 1 (q* = 0, a point that
#         attracts for tanh, whose V(q) < q near 0, and repels for GELU/SiLU/Mish, whose V(q) > q);
#   t → ∞ for ReLU-like φ (φ(x)/x → a₊, a₋ as x → ±∞):  χ₁ → σ_w²·E[φ'(∞·z)²] = σ_w²(a₊² + a₋²)/2
#         with σ_w² → 2/(a₊² + a₋²), i.e. χ₁ → 1 from one side: never a crossing.
# GELU, SiLU and Mish at σ_b² = 0 have χ₁(t) > 1 at every t (χ₁ − 1 ≈ (φ''(0)/2φ'(0))²·t near 0 and
# ~ c/√t at large t; ≥ 1e-4 on the whole grid) and so no edge of chaos: only the repelling limit t → 0.

_CRIT_T = np.logspace(-10, 8, 91)  # t = q* − σ_b², in units of max(σ_b², 1): 5 points a decade
_CHI_ROUNDING = 1e-12  # relative rounding of χ₁ from ~1,300 positive float64 terms, with margin
_RETURN_STEPS = 50  # Steffensen steps allowed to read the limit of the iterates


class NoCriticalPointError(ValueError):
    """Raised by :func:`critical` and :func:`critical_point` when there is no usable edge of chaos.

    ``reason`` is ``"none"`` when χ₁ at the fixed point never equals 1 beyond its numerical error, or
    ``"unstable"`` when it does only at fixed points that repel (layers move away from them).
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class CriticalPoint:
    """The edge of chaos at a given σ_b²: ``sigma_w2`` (χ₁ = 1), the fixed point ``q_star`` there
    (``nan`` when every q is one, as for ReLU at σ_b² = 0), and ``q_max``, the upper edge of q*'s basin
    of attraction: inputs whose mean square exceeds it make the variance grow without bound instead
    (finite for GELU/SiLU-like φ, which grow like ReLU with σ_w² > 2; ``inf`` for tanh), and ``q_min``,
    its lower edge (an unstable fixed point below q*, above which layers still settle at q*; 0 when none).
    GELU, SiLU and Mish can have several fixed points: check :meth:`attracts` for your inputs.

    ``chi1_error`` bounds the numerical error of χ₁ at the point (the 8- and 16-node quadratures'
    difference plus float64 rounding); ``regime`` says how the point was found: ``"crossing"`` (χ₁ − 1
    changes sign there by more than its error), ``"q_to_0"`` (the limit q* → 0 at σ_b² = 0, σ_w² =
    1/φ'(0)², tanh's edge of chaos) or ``"every_q"`` (χ₁ ≡ 1: ReLU-like or linear φ at σ_b² = 0)."""

    sigma_w2: float
    q_star: float
    q_max: float
    q_min: float = 0.0
    chi1_error: float = 0.0
    regime: str = "crossing"

    def attracts(self, q0: float) -> bool:
        """Do layers fed inputs of mean square ``q0`` (first pre-activation σ_w²·q0 + σ_b²) settle at q*?"""
        q1 = self.sigma_w2 * q0
        return math.isnan(self.q_star) or self.q_min <= q1 + 0.0 <= self.q_max


def critical(act: ActivationLike, sigma_b2: float = 0.05) -> float:
    """σ_w² with χ₁ = 1 at σ_b² (``critical_point(act, sigma_b2).sigma_w2``; see :func:`critical_point`).

    >>> round(critical("tanh", 0.05), 2)
    1.76
    >>> critical("relu", 0.0)
    2.0
    """
    return _critical(act, sigma_b2, basin=False).sigma_w2


def critical_point(act: ActivationLike, sigma_b2: float = 0.05) -> CriticalPoint:
    """σ_w² on the edge of chaos: χ₁ = σ_w²·E[φ'(√q* z)²] = 1 at an attracting fixed point q* of the
    length map (Poole et al. 2016; Schoenholz et al. 2017, Fig. 1: tanh at σ_b² = 0.05 gives σ_w² ≈ 1.76).

    Parametrized by q* = σ_b² + t: a fixed point needs σ_w²(t) = t/E[φ(√q* z)²], and then
    χ₁(t) = t·E[φ'²]/E[φ²]. χ₁ − 1 is scanned on a log grid of t with two quadrature orders (8 and 16
    Gauss–Legendre nodes per panel); their difference plus float64 rounding is its error, and a
    crossing counts only where χ₁ − 1 changes sign by more than that error. Each crossing is refined
    by bracketing, and a point is returned only after iterating the variance map from q*·(1 ± 1 %)
    and seeing both iterates come back to q* (an attracting fixed point). The limits that reach χ₁ = 1
    without a crossing are handled analytically (see the comment above this function's code): tanh at
    σ_b² = 0 gives σ_w² = 1/φ'(0)² = 1 with q* = 0; ReLU-like φ at σ_b² = 0 give σ_w² = 2/(a₊² + a₋²)
    at every q. The basin [q_min, q_max] of q* is computed too.

    Raises :class:`NoCriticalPointError` (a ``ValueError``) when χ₁ never reaches 1 at a finite q*
    (e.g. ReLU or linear with σ_b² > 0, whose edge of chaos σ_w² = 2 (1) is only approached as
    q* → ∞), or only at repelling fixed points (GELU, SiLU, Mish at σ_b² = 0: q* → 0 repels).

    >>> p = critical_point("tanh", 0.05)
    >>> round(p.sigma_w2, 2), round(p.q_star, 3), p.q_max
    (1.76, 0.57, inf)
    """
    return _critical(act, sigma_b2, basin=True)


def _slopes_at_infinity(a: Activation) -> tuple[float, float] | None:
    """(a₊, a₋) with φ(x)/x → a± as x → ±∞, or None when φ is not asymptotically linear (bounded like
    tanh: both → 0; or oscillating, or overflowing). Read at |x| = 10⁷ and 10⁸ and required to agree."""
    x = torch.tensor([1e7, 1e8, -1e7, -1e8], dtype=torch.float64)
    with np.errstate(all="ignore"):
        r = (_call(a.fn, x) / x).numpy()
    if not np.all(np.isfinite(r)) or abs(r[0] - r[1]) > 1e-6 or abs(r[2] - r[3]) > 1e-6:
        return None
    ap, am = float(r[1]), float(r[3])
    return (ap, am) if ap * ap + am * am > 1e-6 else None


class _Curve:
    """χ₁ − 1 along the curve of fixed points q* = σ_b² + t, with its numerical error."""

    def __init__(self, a: Activation, sb: float) -> None:
        self.a, self.sb, self.unit = a, sb, max(sb, 1.0)

    def chi(self, t: np.ndarray, nodes: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(σ_w², χ₁, V'(q*)) at each t with ``nodes`` Gauss–Legendre points per panel."""
        q = self.sb + t
        # Where φ² overflows float64 (exp at large q) the point is dropped, not the search.
        p2, d2, st = _moments(self.a, q, stein=True, nodes=nodes, strict=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            sw = t / p2
            return sw, sw * d2, sw * st / (2 * q)

    def at(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(σ_w², χ₁, error of χ₁, V'(q*)) at each t, from the 16-node rule; the error is its distance
        to the 8-node rule plus rounding."""
        _, chi8, _ = self.chi(t, 8)
        sw, chi, v_slope = self.chi(t, 16)
        with np.errstate(invalid="ignore"):
            err = np.abs(chi - chi8) + _CHI_ROUNDING * np.abs(chi)
        return sw, chi, err, v_slope

    def refine(self, lo: float, hi: float, s_lo: float, err: float) -> float:
        """The crossing of χ₁ = 1 in t ∈ [lo, hi] (resolved signs s_lo at lo, −s_lo at hi; ``err`` the
        error of χ₁ there), by rounds of 33 points in log t; stops where the points between the two
        signs are within the error (the rule cannot place the root more finely), else with a secant step."""
        a, b = math.log(lo), math.log(hi)
        fa = fb = 0.0
        for _ in range(4):
            xs = np.linspace(a, b, 33)
            f = self.chi(np.exp(xs))[1] - 1.0
            resolved = np.isfinite(f) & (np.abs(f) > err)
            resolved[0] = resolved[-1] = True  # the bracket's ends are resolved by construction
            f[0] = abs(f[0]) * s_lo if fa == 0.0 else fa
            f[-1] = -abs(f[-1]) * s_lo if fb == 0.0 else fb
            opposite = np.nonzero(resolved & (np.sign(f) == -s_lo))[0]
            j = int(opposite[0])
            same = np.nonzero(resolved[:j] & (np.sign(f[:j]) == s_lo))[0]
            i = int(same[-1])
            a, b, fa, fb = float(xs[i]), float(xs[j]), float(f[i]), float(f[j])
            if j - i > 1:
                return math.exp(0.5 * (a + b))
        return math.exp(a + (b - a) * fa / (fa - fb))


def _returns(vmap: VarianceMap, q_star: float) -> bool:
    """Iterate V from q*·(1 ± 1 %): True when both iterates come back to q* (within 1e-6 relative).

    30 plain steps must bring both strictly closer (or to within rounding); then Steffensen's method
    (Aitken's Δ² on the iteration, quadratically convergent) from where they are reads the limit they
    converge to, instead of waiting out a rate V'(q*) close to 1 (0.999 for ReLU6 at σ_b² = 1e-4)."""
    q = np.array([q_star * 0.99, q_star * 1.01])
    dist = np.abs(q - q_star)
    for _ in range(30):
        q = np.asarray(vmap(q), dtype=np.float64)
        new = np.abs(q - q_star)
        if not np.all(np.isfinite(q)) or not np.all((new < dist) | (new <= 1e-12 * q_star)):
            return False
        dist = new
    for _ in range(_RETURN_STEPS):
        q1 = np.asarray(vmap(q), dtype=np.float64)
        q2 = np.asarray(vmap(q1), dtype=np.float64)
        curv = q2 - 2 * q1 + q
        with np.errstate(divide="ignore", invalid="ignore"):
            nxt = np.where(np.abs(curv) > 0, q - (q1 - q) ** 2 / curv, q2)
        if not np.all(np.isfinite(nxt)) or np.any(np.abs(nxt - q_star) > 0.5 * q_star):
            return False
        done = np.all(np.abs(nxt - q) <= 1e-13 * q_star)
        q = nxt
        if done:
            break
    return bool(np.all(np.abs(q - q_star) <= 1e-6 * q_star))


def _decays_to_zero(vmap: VarianceMap) -> bool:
    """Iterate V from q0 = 10⁻³ and 0.1: True when the variance never grows beyond rounding (q* = 0
    attracts, or is neutral where φ is exactly linear near 0, as for hardtanh and ReLU6)."""
    q = np.array([1e-3, 0.1])
    for _ in range(60):
        nxt = np.asarray(vmap(q), dtype=np.float64)
        if not np.all((nxt >= 0.0) & (nxt <= q * (1 + 1e-12))):
            return False
        q = nxt
    return True


def _critical(act: ActivationLike, sigma_b2: float, basin: bool) -> CriticalPoint:
    a = _act(act)
    sb = _nonneg("sigma_b2", sigma_b2)
    curve = _Curve(a, sb)

    def found(sw: float, q_star: float, err: float, regime: str) -> CriticalPoint:
        if regime == "every_q":
            return CriticalPoint(sw, math.nan, math.inf, 0.0, err, regime)
        if basin:
            p = _with_basin(a, sw, sb, q_star)
            return CriticalPoint(p.sigma_w2, p.q_star, p.q_max, p.q_min, err, regime)
        return CriticalPoint(sw, q_star, math.nan, math.nan, err, regime)

    t = _CRIT_T * curve.unit
    sw, chi, err, v_slope = curve.at(t)
    f = chi - 1.0
    ok = np.isfinite(sw) & np.isfinite(chi) & np.isfinite(err) & (sw > 0)
    resolved = ok & (np.abs(f) > err)
    unstable: list[str] = []

    if sb == 0.0 and ok.any() and not resolved.any():
        # χ₁ ≡ 1 within its error: φ is positively homogeneous (ReLU, leaky ReLU, linear) and every q is
        # a fixed point of V at σ_w² = 1/E[φ(z)²] = 2/(a₊² + a₋²), exact from φ(±1) when φ(2x) = 2φ(x).
        x = torch.tensor([1.0, -1.0, 2.0, -2.0], dtype=torch.float64)
        y = _call(a.fn, x)
        if torch.equal(y[2:], 2 * y[:2]):
            exact = 2.0 / float(y[0] ** 2 + y[1] ** 2)
            return found(exact, math.nan, float(np.max(err[ok])), "every_q")
        return found(float(np.median(sw[ok])), math.nan, float(np.max(err[ok])), "every_q")

    if sb == 0.0:
        # The limit q* → 0: with φ(0) = 0 and one-sided slopes d₊, d₋ at 0 (equal where φ is smooth),
        # E[φ(√q z)²] ≈ q(d₊² + d₋²)/2 and E[φ'²] → (d₊² + d₋²)/2, so χ₁ → 1 at σ_w² = 2/(d₊² + d₋²).
        x0 = torch.tensor([0.0, 1e-150, -1e-150], dtype=torch.float64)
        phi0 = float(_call(a.fn, x0[:1])[0])
        d = _call(derivative(a.fn), x0[1:])
        slopes2 = float(d[0] ** 2 + d[1] ** 2)
        if phi0 == 0.0 and slopes2 > 0 and math.isfinite(slopes2):
            sw0 = 2.0 / slopes2
            if _decays_to_zero(VarianceMap(a, sw0, 0.0)):
                return found(sw0, 0.0, float(err[0]), "q_to_0")
            unstable.append(f"q* → 0 with σ_w² = 2/(φ'(0₊)² + φ'(0₋)²) = {sw0:.6g} (V(q) > q just above 0)")

    s = np.sign(f)
    idx = np.nonzero(resolved)[0]
    crossings = [(int(i), int(j)) for i, j in itertools.pairwise(idx) if s[i] != s[j]]
    for i, j in crossings:
        if j == i + 1 and min(v_slope[i], v_slope[j]) > 1.0 + 1e-6:
            unstable.append(f"q* ≈ {sb + t[i]:.4g}, σ_w² ≈ {sw[i]:.6g} (V'(q*) ≈ {v_slope[i]:.3g})")
            continue  # plainly repelling at both ends of the bracket: no need to refine it
        t_c = curve.refine(float(t[i]), float(t[j]), float(s[i]), float(max(err[i], err[j])))
        sw_c, _, err_c, slope_c = (float(v[0]) for v in curve.at(np.array([t_c])))
        q_c = sb + t_c
        if slope_c < 1.0 and _returns(VarianceMap(a, sw_c, sb), q_c):
            return found(sw_c, q_c, err_c, "crossing")
        unstable.append(f"q* = {q_c:.4g}, σ_w² = {sw_c:.6g} (V'(q*) = {slope_c:.3g})")

    asymptote = _slopes_at_infinity(a)
    tail = ""
    if asymptote is not None:
        ap, am = asymptote
        tail = (f" As q* → ∞, χ₁ → 1 without crossing it (φ grows like ReLU with slopes {ap:g}, {am:g}: "
                f"σ_w² → {2.0 / (ap * ap + am * am):.6g}).")
    if unstable:
        raise NoCriticalPointError(
            f"act: {a.label} at sigma_b2={sb:g} reaches χ₁ = 1 only at an unstable fixed point: "
            + "; ".join(unstable) + ". Layers move away from it, so there is no usable edge of chaos here."
            + tail + " Try another sigma_b2.",
            "unstable",
        )
    if ok.any():
        lo_f, hi_f = float(np.min(f[ok])), float(np.max(f[ok]))
        rng = f"χ₁ − 1 stays in [{lo_f:.3g}, {hi_f:.3g}] (error ≤ {float(np.max(err[ok])):.2g})"
    else:
        rng = "χ₁ is not finite"
    hint = ("For ReLU-like and linear activations the edge of chaos needs sigma_b2=0 (σ_w² = 2/(1+slope²) "
            "resp. 1)." if a.family in ("relu", "linear") else "Try another sigma_b2.")
    raise NoCriticalPointError(
        f"act: {a.label} has no critical point at sigma_b2={sb:g}: {rng} for every finite q* in "
        f"[{sb + t[0]:.3g}, {sb + t[-1]:.3g}], never crossing 0.{tail} {hint}",
        "none",
    )


def _with_basin(a: Activation, sw: float, sb: float, q_star: float) -> CriticalPoint:
    """Add q*'s basin of attraction: up to the first q > q* where V(q) > q again (then q grows forever),
    down to the last q < q* where V(q) < q (below it layers settle at a smaller fixed point)."""
    vmap = VarianceMap(a, sw, sb)
    q_min = 0.0
    below = _Q_GRID[(q_star * (1 - 1e-6) > _Q_GRID) & (_Q_GRID > 0)]
    if below.size:
        gb = np.asarray(vmap(below)) - below
        # |V(q) − q| within rounding is no sign: φ exactly linear near 0 (hardtanh) makes V(q) = q there.
        down = np.nonzero(gb < -1e-12 * below)[0]
        if down.size:
            k = int(down[-1])
            hi = float(below[k + 1]) if k + 1 < below.size else q_star * (1 - 1e-6)
            q_min = math.exp(_refine_root(lambda t: np.asarray(vmap(np.exp(t))) - np.exp(t),
                                          math.log(below[k]), math.log(hi)))
    grid = _Q_GRID[q_star * (1 + 1e-6) + 1e-12 < _Q_GRID]
    g = np.asarray(vmap(grid)) - grid
    up = np.nonzero(g > 1e-12 * grid)[0]
    if up.size == 0:
        return CriticalPoint(sw, q_star, math.inf, q_min)
    k = int(up[0])
    lo = float(grid[k - 1]) if k > 0 else q_star * (1 + 1e-6) + 1e-12
    edge = math.exp(_refine_root(lambda t: np.asarray(vmap(np.exp(t))) - np.exp(t), math.log(lo), math.log(grid[k])))
    return CriticalPoint(sw, q_star, edge, q_min)
