"""initlab.theory: closed forms, the published tanh table, Monte Carlo on wide random networks, bad input."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from initlab import theory

pytestmark = pytest.mark.usefixtures("one_thread")


def _relu_kernel(c):
    """E[relu(u1) relu(u2)] for unit variances and correlation c (Cho & Saul's arc-cosine kernel)."""
    th = np.arccos(c)
    return (np.sin(th) + (np.pi - th) * c) / (2 * np.pi)


# -- exact values ---------------------------------------------------------------------------------


def test_critical_points_tanh_relu_leaky_linear():
    # The anchors: tanh at σ_b² = 0.05 within 0.01 of 1.76; ReLU at σ_b² = 0 exactly 2.
    assert abs(theory.critical("tanh", 0.05) - 1.76) < 0.01
    assert theory.critical("relu", 0.0) == pytest.approx(2.0, abs=1e-9)
    assert theory.critical(nn.LeakyReLU(0.2), 0.0) == pytest.approx(2 / (1 + 0.2**2), abs=1e-9)
    assert theory.critical("linear", 0.0) == pytest.approx(1.0, abs=1e-9)
    # tanh with σ_b² = 0: critical at q* = 0, σ_w² = 1/φ'(0)² = 1.
    assert theory.critical("tanh", 0.0) == pytest.approx(1.0, abs=1e-6)
    # χ₁ = 1 at the returned point, which is an attracting fixed point, for callables too.
    for act in ("gelu", nn.ELU(), torch.sin):
        p = theory.critical_point(act, 0.3)
        assert theory.chi1(act, p.sigma_w2, 0.3, q=p.q_star) == pytest.approx(1.0, abs=1e-8)
        assert theory.variance_map(act, p.sigma_w2, 0.3).slope(p.q_star) < 1
        assert p.attracts(1.0)
        assert theory.fixed_point(act, p.sigma_w2, 0.3) == pytest.approx(p.q_star, rel=1e-6)
    # GELU at σ_b² = 0.05 crosses χ₁ = 1 once, at q* ≈ 0.681 where V'(q*) ≈ 1.08 (the fixed point repels;
    # mpmath at 25 digits: χ₁ − 1 = −0.0043 at q* = 0.681, +0.0184 at 1, +0.0026 at 1900, +0.00036 at 1e5,
    # so no crossing near the ReLU limit, where the old 0.5-wide panels found one at q* ≈ 1900).
    with pytest.raises(theory.NoCriticalPointError, match=r"unstable fixed point: q\* ≈ 0\.68") as err:
        theory.critical_point("gelu", 0.05)
    assert err.value.reason == "unstable"


@pytest.mark.parametrize(
    ("sw", "q_star", "chi1", "c_star", "xi_c"),
    # experiments.md §2.8 (tanh, σ_b² = 0.05), to the digits printed there.
    [(0.8, 0.138, 0.647, 1.0, 2.3), (1.5, 0.418, 0.939, 1.0, 15.8), (2.0, 0.722, 1.048, 0.744, 25.2),
     (2.5, 1.064, 1.134, 0.447, 11.8), (4.0, 2.195, 1.342, 0.165, 7.0)],
)
def test_tanh_table(sw, q_star, chi1, c_star, xi_c):
    s = theory.depth_scales("tanh", sw, 0.05)
    assert s.q_star == pytest.approx(q_star, abs=5e-4)
    assert s.chi1 == pytest.approx(chi1, abs=5e-4)
    assert s.c_star == pytest.approx(c_star, abs=5e-4)
    assert s.xi_c == pytest.approx(xi_c, abs=0.05)
    assert s.trainable_depth == pytest.approx(6 * s.xi_c)
    assert theory.correlation_fixed_point("tanh", sw, 0.05) == pytest.approx(s.c_star)


def test_relu_closed_forms():
    q = np.array([0.0, 0.3, 1.0, 7.0])
    np.testing.assert_allclose(theory.variance_map("relu", 1.7, 0.1, q), 1.7 * q / 2 + 0.1, rtol=1e-13, atol=1e-15)
    vmap = theory.variance_map("relu", 1.7, 0.1)
    assert vmap(2.0) == pytest.approx(1.8)
    assert vmap.slope(2.0) == pytest.approx(0.85, rel=1e-10)  # V'(q) = σ_w²/2
    assert theory.fixed_point("relu", 1.7, 0.1) == pytest.approx(0.1 / (1 - 0.85), rel=1e-10)
    assert theory.chi1("relu", 1.7, 0.1) == pytest.approx(0.85, rel=1e-12)
    assert theory.fixed_point("relu", 2.5, 0.1) == math.inf
    assert theory.fixed_point("relu", 2.0, 0.0, q0=3.0) == 3.0  # every q is a fixed point
    assert theory.fixed_point("tanh", 0.9, 0.0) == 0.0
    # Correlation map: the arc-cosine kernel, exact through the polar rule (kinks on panel edges).
    c = np.linspace(-1, 1, 11)
    np.testing.assert_allclose(theory.correlation_map("relu", 2.0, 0.0, c, q=1.3), 2 * _relu_kernel(c), atol=1e-12)
    np.testing.assert_allclose(theory.predict_std("relu", 2.0, 0.0, 4, q0=2.0), [2.0] * 4, rtol=1e-12)


def test_correlation_map_smooth_closed_form():
    # φ = erf(a x): E[φ(u1)φ(u2)] = (2/π)·arcsin(2a²qc / (1 + 2a²q)) (Williams 1997).
    a, q, sw = 1.5, 0.8, 1.3
    c = np.linspace(-0.95, 0.999, 9)
    exact = (sw * 2 / np.pi * np.arcsin(2 * a * a * q * c / (1 + 2 * a * a * q))) / q
    got = theory.correlation_map(lambda x: torch.erf(a * x), sw, 0.0, c, q=q)
    np.testing.assert_allclose(got, exact, atol=5e-6)  # measured max 2e-6, at c = 0.999


def test_any_activation_spelling_agrees():
    by_name = theory.chi1("silu", 2.0, 0.05)
    assert theory.chi1(nn.SiLU(), 2.0, 0.05) == pytest.approx(by_name, rel=1e-12)
    assert theory.chi1(torch.nn.functional.silu, 2.0, 0.05) == pytest.approx(by_name, rel=1e-12)
    assert theory.chi1(lambda x: x * torch.sigmoid(x), 2.0, 0.05) == pytest.approx(by_name, rel=1e-9)


# -- Monte Carlo on wide random networks ---------------------------------------------------------


def _propagate(x, sw, sb, depth, width, seed):
    """Pre-activations of every layer of a random tanh MLP (W ~ N(0, σ_w²/n), b ~ N(0, σ_b²))."""
    g = torch.Generator().manual_seed(seed)
    hs, a = [], x
    for _ in range(depth):
        w = torch.randn(width, a.shape[1], generator=g, dtype=torch.float64) * math.sqrt(sw / a.shape[1])
        b = torch.randn(width, generator=g, dtype=torch.float64) * math.sqrt(sb)
        h = a @ w.T + b
        hs.append(h)
        a = torch.tanh(h)
    return hs


def test_predict_std_and_fixed_point_against_monte_carlo():
    # B = 24 independent random tanh networks of width N = 512 (batched weights, one input each, with
    # q0 = 2, far from q* = 0.569). Given the previous layer, a layer's N pre-activations are iid with
    # variance V(q̂), so q̂ has relative sd √(2/N) = 0.0625; errors contract with slope V'(q*) ≈ 0.5,
    # so the accumulated sd is ≤ 0.0625/√(1 − 0.25) ≈ 0.072 in q, 0.036 in std, per network. The
    # mean over 24 independent networks has sd 0.036/√24 ≈ 0.0074 in std; tolerance 0.03 relative
    # (4σ). The finite-width bias is O(1/N) = 0.002. (One network with many inputs would not do: the
    # inputs share W and their correlation grows towards c* = 1, so they do not average out.)
    sw, sb, depth, n, b = 1.76, 0.05, 12, 512, 24
    g = torch.Generator().manual_seed(0)
    a = torch.randn(b, n, 1, generator=g, dtype=torch.float32) * math.sqrt(2.0)
    q0 = float(a.pow(2).mean())
    rms = []
    for _ in range(depth):
        w = torch.randn(b, n, n, generator=g, dtype=torch.float32) * math.sqrt(sw / n)
        h = w @ a + torch.randn(b, n, 1, generator=g, dtype=torch.float32) * math.sqrt(sb)
        rms.append(h.pow(2).mean(dim=(1, 2)).sqrt())
        a = torch.tanh(h)
    measured = torch.stack(rms).mean(dim=1).numpy()
    predicted = theory.predict_std("tanh", sw, sb, depth, q0=q0)
    np.testing.assert_allclose(measured, predicted, rtol=0.03)
    assert measured[-1] ** 2 == pytest.approx(theory.fixed_point("tanh", sw, sb), rel=0.06)  # 2 × the std tolerance


@pytest.mark.parametrize("sw", [1.2, 2.5])
def test_chi1_against_monte_carlo(sw):
    # χ₁ is the mean growth of a small perturbation's squared length per layer at the fixed point:
    # ‖J δ‖²/‖δ‖² with J = W·diag(φ'(h)). With N = 1024 and δ random, one layer's ratio has relative
    # sd ≈ √(2/N) ≈ 0.044; averaging the log-ratio over 8 layers × 8 inputs (independent W per layer,
    # near-independent inputs) gives sd ≈ 0.044/8 = 0.0055. Tolerance 0.025 relative (> 4σ).
    sb, n, b, burn, layers = 0.05, 1024, 8, 6, 8
    g = torch.Generator().manual_seed(3)
    x = torch.randn(b, n, generator=g, dtype=torch.float64)
    d = torch.randn(b, n, generator=g, dtype=torch.float64) * 1e-6
    logs, prev = [], None
    a1, a2 = x, x + d
    for layer in range(burn + layers):
        w = torch.randn(n, n, generator=g, dtype=torch.float64) * math.sqrt(sw / n)
        bias = torch.randn(n, generator=g, dtype=torch.float64) * math.sqrt(sb)
        h1, h2 = a1 @ w.T + bias, a2 @ w.T + bias
        dist = (h2 - h1).pow(2).sum(1)
        if layer > burn:
            logs.append(torch.log(dist / prev))  # ‖Δh_{l+1}‖²/‖Δh_l‖² → σ_w²·E[φ'(h)²] = χ₁
        prev = dist
        a1, a2 = torch.tanh(h1), torch.tanh(h2)
    est = float(torch.exp(torch.stack(logs).mean()))
    assert est == pytest.approx(theory.chi1("tanh", sw, sb), rel=0.025)


def test_correlation_fixed_point_against_monte_carlo():
    # Chaotic tanh (σ_w² = 2.5): two inputs' correlation converges to c* = 0.447 (ξ_c ≈ 12 layers);
    # the pairs start at c = 0.45 and q = 1 (q converges within ξ_q ≈ 1.2 layers), so 16 layers
    # suffice. With N = 1024, one pair's empirical correlation has sd ≈ (1 − c*²)/√N ≈ 0.025; the
    # mean of 16 pairs over the last 8 layers (strongly dependent across layers) has sd ≤ 0.025/4 ≈
    # 0.006. Tolerance 0.03 (5σ).
    sw, sb, n = 2.5, 0.05, 1024
    g = torch.Generator().manual_seed(5)
    u = torch.randn(16, n, generator=g, dtype=torch.float64)
    v = 0.45 * u + math.sqrt(1 - 0.45**2) * torch.randn(16, n, generator=g, dtype=torch.float64)
    hs = _propagate(torch.cat([u, v]), sw, sb, 16, n, seed=6)
    cs = [float(torch.nn.functional.cosine_similarity(h[:16], h[16:]).mean()) for h in hs[-8:]]
    assert float(np.mean(cs)) == pytest.approx(theory.depth_scales("tanh", sw, sb).c_star, abs=0.03)


# -- bad input -----------------------------------------------------------------------------------


def test_no_critical_point_is_a_clear_error():
    with pytest.raises(ValueError, match=r"relu has no critical point at sigma_b2=0.05.*sigma_b2=0"):
        theory.critical("relu", 0.05)
    with pytest.raises(ValueError, match="no critical point"):
        theory.critical("linear", 0.1)
    # GELU at σ_b² = 0: χ₁ = 1 only where the fixed point repels (V'(q*) >= 1) — no usable edge of chaos.
    with pytest.raises(ValueError, match="only at an unstable fixed point"):
        theory.critical("gelu", 0.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="sigma_w2: must be a finite number >= 0"):
        theory.fixed_point("tanh", -1.0, 0.05)
    with pytest.raises(ValueError, match="sigma_b2"):
        theory.critical("tanh", float("nan"))
    with pytest.raises(ValueError, match="depth: expected an int >= 1"):
        theory.predict_std("tanh", 1.0, 0.0, 0)
    with pytest.raises(ValueError, match=r"c: correlations must lie in \[-1, 1\]"):
        theory.correlation_map("tanh", 1.5, 0.05, 1.5)
    with pytest.raises(ValueError, match=r"unknown name 'tnah'.*'tanh'"):
        theory.chi1("tnah", 1.0, 0.0)
    with pytest.raises(ValueError, match="no finite fixed point"):
        theory.chi1("relu", 3.0, 0.1)
    with pytest.raises(ValueError, match="same shape"):
        theory.variance_map(lambda x: x.sum(), 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        theory.variance_map(lambda x: torch.exp(x * x), 1.0, 0.0, 4.0)
