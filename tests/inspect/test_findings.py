"""Findings: depth-relative rules, their evidence, and the recommended plan."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

import initlab
from initlab.inspect import trends
from initlab.inspect.findings import FINDING_KINDS, expected_dead, judge
from tests.inspect.test_inspect_models import batch, mlp


def test_expected_dead_fraction_of_equicorrelated_relu_units():
    # c = 0: B independent signs, all negative with probability 2^-B; c → 1: one sign for all, ½.
    assert expected_dead("relu", 0.0, 8) == pytest.approx(2**-8)
    assert expected_dead("relu", 1.0, 64) == 0.5
    # B = 2: P(z1 < 0, z2 < 0) = ¼ + arcsin(c)/(2π) (Sheppard's formula).
    for c in (0.2, 0.5, 0.9):
        assert expected_dead("relu", c, 2) == pytest.approx(0.25 + math.asin(c) / (2 * math.pi), abs=1e-6)
    assert expected_dead("tanh", 0.9, 64) == 0.0  # tanh is never exactly zero


def test_rules_are_depth_relative_not_absolute():
    """The same per-layer shrink is healthy in a shallow net and vanishing in a deep one."""
    shallow = initlab.inspect(mlp(3, nn.Tanh, "glorot", width=64), batch(n=64), recommend=False)
    assert shallow.verdict == ["healthy"]
    # Scale every ‖dL/dz‖ by 1e-9: absolute cut-offs would fire, a depth-relative rule must not.
    tiny = replace(
        shallow,
        calls=[
            replace(c, grad_norm=None if c.grad_norm is None else c.grad_norm * 1e-9) for c in shallow.calls
        ],
    )
    tiny.trends = trends(tiny.calls, tiny.blocks)
    assert [f.kind for f in judge(tiny, recommend=False)] == ["healthy"]
    # A tighter tolerance flags the same model (Glorot tanh shrinks ‖dL/dz‖ ~×0.9 per layer).
    strict = initlab.inspect(
        mlp(3, nn.Tanh, "glorot", width=64), batch(n=64), recommend=False, tolerance=1.01
    )
    assert strict.verdict != ["healthy"]


def test_unhealthy_findings_carry_the_auto_plan_and_serialize():
    model = mlp(10, nn.Tanh, "n001", width=64)
    r = initlab.inspect(model, batch(n=64))
    f = r.finding("vanishing_gradients")
    assert f is not None and f.fix is not None
    assert f.fix.preset == "auto" and len(f.fix.entries) == 22
    assert {k for k in ("dz_ratio", "grad_rate_per_layer", "grad_rate_over_depth")} <= set(f.evidence)
    d = f.to_dict()
    assert d["kind"] == "vanishing_gradients" and d["fix"]["preset"] == "auto"
    assert all(k in d["fix"]["entries"][0] for k in ("path", "shape", "initializer", "std", "why"))
    assert "vanishing_gradients" in repr(f) and "Plan" in repr(f)
    assert {f.kind for f in r.findings} <= set(FINDING_KINDS)


def test_healthy_finding_has_no_fix():
    r = initlab.inspect(mlp(4, nn.ReLU, "he", width=64), batch(n=64))
    assert r.healthy and r.findings[0].fix is None
    assert r.findings[0].evidence["tolerance"] == 10.0


def test_correlation_collapse_in_the_ordered_phase():
    # tanh with PyTorch's default init is deep in the ordered phase (experiments.md §2.4: dz ratio
    # 1e-7 at L = 30): every input is mapped to the same vector exponentially fast.
    torch.manual_seed(0)
    r = initlab.inspect(mlp(30, nn.Tanh, "default", width=64), batch(n=64), recommend=False)
    f = r.finding("correlation_collapse")
    assert f is not None and f.evidence["one_minus_cosine_last"] < f.evidence["polynomial_bound"]
    assert f.evidence["depth_scale"] < 30 / 6


def test_a_signal_that_underflows_to_zero_is_vanishing():
    # ReLU with N(0, 0.01²): std shrinks ×0.01·√(64/2) ≈ 0.057 per layer and falls below float32's
    # range (~1e-38; denormals are flushed during inspect) after ~30 layers: exact zeros, which a log
    # fit cannot see, must still be called vanishing.
    model = mlp(40, nn.ReLU, "n001", width=64)
    with torch.no_grad():
        model[-1].bias.fill_(0.5)  # a readout bias keeps the output, so dL/dz_L ≠ 0
    r = initlab.inspect(model, batch(n=64), recommend=False)
    assert r.trends.zero_act_layers and r.trends.zero_grad_layers
    assert {"vanishing_gradients", "vanishing_activations"} <= set(r.verdict)
    assert r.finding("vanishing_activations").evidence["zero_at_depth"][0] > 20
