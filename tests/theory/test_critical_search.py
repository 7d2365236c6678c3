"""The critical-point search is exact: a property over every built-in activation, checked against an
independent oracle, and decisions that survive noise of the size that separates numpy/scipy versions.

The oracle is :func:`initlab.initializers.quadrature.gaussian_expectation` (adaptive Gauss–Legendre, bisecting until
its own error is below 1e-12 per unit mass): a different rule from the fixed panels the search uses, so
agreement is not agreement of the code with itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from initlab import theory
from initlab.initializers.activations import activation, known_activations
from initlab.initializers.quadrature import derivative, gaussian_expectation

SIGMA_B2 = (0.0, 1e-4, 0.01, 0.05, 0.3, 1.0)
# Spellings of one function (aliases) would repeat a case; one name per distinct activation.
ACTIVATIONS = sorted({activation(n).label: n for n in known_activations()}.values())


def _oracle_v(act, sw: float, sb: float, q):
    """V(q) for a float or an array of q (one vectorized adaptive quadrature)."""
    out = sw * np.asarray(gaussian_expectation(lambda x: act.fn(x) ** 2, np.sqrt(np.atleast_1d(q)))) + sb
    return float(out[0]) if np.ndim(q) == 0 else out


def _oracle_chi1(act, sw: float, q: float) -> float:
    dphi = derivative(act.fn)
    return sw * float(gaussian_expectation(lambda x: dphi(x) ** 2, math.sqrt(q)))


def _confirm(act, p: theory.CriticalPoint, sb: float) -> None:
    """What a returned point promises, checked with the oracle."""
    sw = p.sigma_w2
    assert math.isfinite(sw) and sw > 0
    if p.regime == "every_q":
        # χ₁ ≡ 1: every q is a fixed point (ReLU-like or linear φ at σ_b² = 0).
        assert sb == 0.0
        for q in (0.1, 1.0, 10.0):
            assert _oracle_v(act, sw, sb, q) == pytest.approx(q, rel=1e-9)
            assert _oracle_chi1(act, sw, q) == pytest.approx(1.0, abs=1e-9)
        return
    if p.regime == "q_to_0":
        # q* = 0 at σ_b² = 0: iterates from small q never grow, and χ₁ → 1 as q → 0.
        assert sb == 0.0 and p.q_star == 0.0
        q = 1e-3
        for _ in range(50):
            nxt = _oracle_v(act, sw, sb, q)
            assert nxt <= q * (1 + 1e-9)
            q = nxt
        # (χ₁ − 1 ~ √q where φ' has a kink at 0, as for ELU: at q = 1e-14 that is ~1e-7.)
        assert _oracle_chi1(act, sw, 1e-14) == pytest.approx(1.0, abs=1e-6)
        return
    assert p.regime == "crossing"
    qs = p.q_star
    # q* is a fixed point of the oracle's map, to 1e-6 relative: one Newton step δ = g/(1 − V') from q*
    # lands on the oracle's own fixed point, and it must be that close.
    h = 1e-4 * qs
    v, v_hi, v_lo = _oracle_v(act, sw, sb, np.array([qs, qs + h, qs - h]))
    slope = (v_hi - v_lo) / (2 * h)
    assert slope < 1.0, f"V'(q*) = {slope} >= 1: not an attracting fixed point"
    delta = (v - qs) / (1.0 - slope)
    assert abs(delta) <= 1e-6 * qs
    # ... χ₁ = 1 there, within 1e-6 (the search's own error bound is far smaller) ...
    assert _oracle_chi1(act, sw, qs) == pytest.approx(1.0, abs=1e-6)
    assert p.chi1_error < 1e-6
    # ... and iterates started 1 % off come back: every step moves them closer, from both sides, until
    # they are within rounding of q*.
    q = np.array([0.99 * qs, 1.01 * qs])
    dist = np.abs(q - qs)
    for _ in range(20):
        q = _oracle_v(act, sw, sb, q)
        new = np.abs(q - qs)
        assert np.all((new < dist) | (new <= 1e-12 * qs))
        dist = new


def _check(name: str, sb: float) -> None:
    act = activation(name)
    try:
        p = theory.critical_point(name, sb)
    except theory.NoCriticalPointError as err:
        assert err.reason in ("none", "unstable")
        assert f"sigma_b2={sb:g}" in str(err)
        return
    _confirm(act, p, sb)


@pytest.mark.parametrize("sb", SIGMA_B2)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_builtin_activation_returns_a_confirmed_point_or_the_documented_error(name, sb):
    _check(name, sb)


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(ACTIVATIONS), sb=st.floats(min_value=0.0, max_value=2.0, allow_nan=False))
def test_random_sigma_b2(name, sb):
    _check(name, sb)


@pytest.mark.parametrize("name", ["gelu", "silu", "mish"])
def test_relu_like_smooth_activations_have_no_edge_of_chaos_at_zero_bias(name):
    # χ₁ > 1 at every finite q* (mpmath: ≥ 1.1e-4 for GELU on q* ∈ [1e-4, 1e6]), and χ₁ = 1 only in the
    # limits q* → 0, where the fixed point repels, and q* → ∞ (the ReLU limit, σ_w² → 2).
    with pytest.raises(theory.NoCriticalPointError, match="only at an unstable fixed point: q\\* → 0") as err:
        theory.critical(name, 0.0)
    assert err.value.reason == "unstable"
    assert "As q* → ∞, χ₁ → 1 without crossing it" in str(err.value)


class _Noisy:
    """φ times (1 + ε·u(x)), u a fixed pseudo-random ±1 pattern per input: rounding-level disagreement
    like that between numpy/scipy/CPU versions, but 1,000× larger (ε = 1e-13 against ~1e-16)."""

    def __init__(self, fn, eps: float) -> None:
        self.fn, self.eps = fn, eps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        bits = torch.frac(torch.sin(x * 12.9898) * 43758.5453)
        return self.fn(x) * (1 + self.eps * torch.sign(bits - 0.5))


@pytest.mark.parametrize(("name", "sb"), [("gelu", 0.0), ("silu", 0.0), ("mish", 0.0), ("gelu", 0.05),
                                          ("tanh", 0.05), ("gelu", 0.3), ("relu", 0.0), ("relu", 0.05)])
def test_decisions_survive_rounding_noise(name, sb):
    base = activation(name)
    noisy = _Noisy(base.fn, 1e-13)
    try:
        clean = theory.critical_point(base, sb)
    except theory.NoCriticalPointError as err:
        with pytest.raises(theory.NoCriticalPointError) as again:
            theory.critical_point(noisy, sb)
        assert again.value.reason == err.reason
        return
    p = theory.critical_point(noisy, sb)
    assert p.regime == clean.regime
    # The point moves by about the injected noise divided by χ₁'s slope, nowhere near a tolerance.
    assert p.sigma_w2 == pytest.approx(clean.sigma_w2, rel=1e-8)


def test_the_error_estimate_is_reported_and_bounds_the_true_error():
    p = theory.critical_point("tanh", 0.05)
    assert 0 < p.chi1_error < 1e-10
    # Against the oracle, the returned point's χ₁ is within its stated error (plus the oracle's 1e-12).
    assert abs(_oracle_chi1(activation("tanh"), p.sigma_w2, p.q_star) - 1.0) <= p.chi1_error + 2e-12
