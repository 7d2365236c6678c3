"""gain(): forward g²·E[φ(z)²] = 1, backward g²·E[φ'(z)²] = 1 (z ~ N(0,1)), and torch's table."""

import math

import numpy as np
import pytest
import torch

import initlab

scipy_integrate = pytest.importorskip("scipy.integrate")
scipy_special = pytest.importorskip("scipy.special")

REL = 1e-6  # the issue's accuracy target


def _gaussian_mean(f):
    """E[f(z)], z ~ N(0,1), by scipy's adaptive quadrature (independent of initlab's quadrature)."""
    val, err = scipy_integrate.quad(lambda z: f(z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi),
                                    -math.inf, math.inf, epsabs=1e-14, epsrel=1e-12, limit=400)
    assert err < 1e-10
    return val


def _sig(z):
    return scipy_special.expit(z)


#: Closed-form φ and φ' in numpy, for an independent reference.
REFERENCE = {
    "tanh": (math.tanh, lambda z: 1 - math.tanh(z) ** 2),
    "sigmoid": (_sig, lambda z: _sig(z) * (1 - _sig(z))),
    "silu": (lambda z: z * _sig(z), lambda z: _sig(z) * (1 + z * (1 - _sig(z)))),
    "gelu": (lambda z: z * scipy_special.ndtr(z),
             lambda z: scipy_special.ndtr(z) + z * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)),
    "softplus": (lambda z: np.logaddexp(0.0, z), _sig),
    "elu": (lambda z: z if z > 0 else math.expm1(z), lambda z: 1.0 if z > 0 else math.exp(z)),
    "softsign": (lambda z: z / (1 + abs(z)), lambda z: 1 / (1 + abs(z)) ** 2),
}


def test_issue_checks():
    assert initlab.gain("relu") == pytest.approx(math.sqrt(2), rel=REL)
    assert initlab.gain("relu", mode="backward") == pytest.approx(math.sqrt(2), rel=REL)
    assert initlab.gain("linear") == pytest.approx(1.0, rel=REL)
    assert initlab.gain("linear", mode="backward") == pytest.approx(1.0, rel=REL)
    assert initlab.gain("tanh") == pytest.approx(1.5925374, rel=REL)
    assert round(initlab.gain("tanh"), 3) == 1.593


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_forward_and_backward_against_independent_quadrature(name):
    phi, dphi = REFERENCE[name]
    forward = 1 / math.sqrt(_gaussian_mean(lambda z: phi(z) ** 2))
    backward = 1 / math.sqrt(_gaussian_mean(lambda z: dphi(z) ** 2))
    assert initlab.gain(name) == pytest.approx(forward, rel=REL)
    assert initlab.gain(name, mode="backward") == pytest.approx(backward, rel=REL)


def test_modules_and_callables_give_the_same_gain_as_names():
    assert initlab.gain(torch.nn.GELU()) == pytest.approx(initlab.gain("gelu"), rel=1e-12)
    assert initlab.gain(torch.nn.Tanh(), mode="backward") == pytest.approx(initlab.gain("tanh", mode="backward"), rel=1e-12)
    swish = initlab.gain(lambda x: x * torch.sigmoid(x), mode="backward")
    assert swish == pytest.approx(initlab.gain("silu", mode="backward"), rel=REL)
    assert initlab.gain(torch.nn.LeakyReLU(0.2)) == pytest.approx(math.sqrt(2 / (1 + 0.04)), rel=REL)


def test_leaky_relu_slope_both_ways():
    for slope in (0.01, 0.2, 1.0):
        expected = math.sqrt(2 / (1 + slope**2))
        assert initlab.gain("leaky_relu", param=slope) == pytest.approx(expected, rel=REL)
        assert initlab.gain("leaky_relu", mode="backward", param=slope) == pytest.approx(expected, rel=REL)


@pytest.mark.parametrize(
    ("name", "param"), [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None),
                        ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None)]
)
def test_torch_mode_is_calculate_gain(name, param):
    assert initlab.gain(name, mode="torch", param=param) == torch.nn.init.calculate_gain(name, param)


def test_forward_and_backward_differ_outside_the_relu_family():
    assert initlab.gain("tanh", mode="backward") == pytest.approx(1.4674, abs=1e-4)
    assert initlab.gain("tanh", mode="torch") == pytest.approx(5 / 3)


def test_torch_mode_without_an_entry_says_what_to_use():
    with pytest.raises(ValueError, match=r"mode.*gelu.*forward"):
        initlab.gain("gelu", mode="torch")


def test_bad_mode_and_zero_activation():
    with pytest.raises(ValueError, match="mode: expected 'forward', 'backward' or 'torch', got 'sideways'"):
        initlab.gain("relu", mode="sideways")
    with pytest.raises(ValueError, match="act"):
        initlab.gain(lambda x: torch.zeros_like(x))
