"""The gain of any activation: the factor g that keeps signal variance constant through a layer.

With weights of variance g²/fan and z ~ N(0, 1):

- forward mode, g² · E[φ(z)²] = 1: the second moment of the activations is preserved going up;
- backward mode, g² · E[φ'(z)²] = 1: the gradient's second moment is preserved going down;
- ``mode="torch"``: ``torch.nn.init.calculate_gain``'s table value (7 entries; tanh 5/3, sigmoid 1).

Outside the ReLU family the two modes differ (tanh: 1.593 forward, 1.467 backward), so no single
number serves both directions; ``describe`` in the catalogue and the ``auto`` preset say which one
they use.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from .activations import ActivationLike, activation
from .quadrature import derivative, gaussian_expectation

__all__ = ["gain"]

GainMode = Literal["forward", "backward", "torch"]


def gain(act: ActivationLike, mode: GainMode | str = "forward", *, param: float | None = None) -> float:
    """Gain of ``act`` (a name, torch module or callable on tensors).

    ``forward``: 1/√E[φ(z)²]; ``backward``: 1/√E[φ'(z)²] (φ' by autograd), both over z ~ N(0,1)
    by adaptive Gauss–Legendre quadrature of the Gaussian integral (absolute error ~1e-12).
    ``torch``: exactly ``torch.nn.init.calculate_gain(name, param)``, an error where torch has none.
    ``param``: the slope for ``"leaky_relu"`` (torch's default 0.01) or alpha for ``"elu"``.

    >>> round(gain("relu"), 6), round(gain("tanh"), 4), gain("tanh", mode="torch")
    (1.414214, 1.5925, 1.6666666666666667)

    References: Glorot & Bengio (2010); He et al. (2015), "Delving Deep into Rectifiers".
    """
    a = activation(act, param)
    if mode == "torch":
        if a.torch_gain is None:
            raise ValueError(
                f"mode: torch.nn.init.calculate_gain has no entry for {a.label!r} (it knows linear, conv*, "
                "sigmoid, tanh, relu, leaky_relu, selu); use mode='forward' or 'backward' for any activation."
            )
        name, p = a.torch_gain
        return float(torch.nn.init.calculate_gain(name, p))
    if mode == "forward":
        second_moment = gaussian_expectation(lambda x: a(x) ** 2)
    elif mode == "backward":
        d = derivative(a.fn)
        second_moment = gaussian_expectation(lambda x: d(x) ** 2)
    else:
        raise ValueError(f"mode: expected 'forward', 'backward' or 'torch', got {mode!r}.")
    if not second_moment > 0 or not math.isfinite(second_moment):
        raise ValueError(
            f"act: E[{'φ' if mode == 'forward' else 'φ′'}(z)²] = {second_moment!r} for {a.label!r}; "
            "a gain needs a finite positive second moment (is the activation identically zero?)."
        )
    return 1.0 / math.sqrt(second_moment)
