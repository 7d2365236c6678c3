"""Small models for the inspection tests (the known cases of experiments.md §2.4, narrowed)."""

from __future__ import annotations

import torch
from torch import nn

WIDTH = 96
N_IN = 64
BATCH = 128


def mlp(depth: int, act: type[nn.Module], init: str, *, width: int = WIDTH, seed: int = 0) -> nn.Sequential:
    """``depth`` hidden Linear+act layers and a Linear readout (10), every layer initialized by ``init``:
    ``default`` (PyTorch's U(±1/√fan_in), biases too), ``he`` N(0, 2/fan_in), ``glorot`` N(0, 2/(in+out)),
    ``n1`` N(0, 1), ``n001`` N(0, 0.01²); biases zero except for ``default``."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    d = N_IN
    for i in range(depth + 1):
        out = width if i < depth else 10
        lin = nn.Linear(d, out)
        if init == "he":
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        elif init == "glorot":
            nn.init.xavier_normal_(lin.weight)
        elif init == "n1":
            nn.init.normal_(lin.weight, 0.0, 1.0)
        elif init == "n001":
            nn.init.normal_(lin.weight, 0.0, 0.01)
        elif init != "default":
            raise ValueError(init)
        if init != "default":
            nn.init.zeros_(lin.bias)
        layers.append(lin)
        if i < depth:
            layers.append(act())
        d = out
    return nn.Sequential(*layers)


def batch(seed: int = 1, n: int = BATCH) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, N_IN, generator=g)


# name: (depth, activation, init, expected verdict kinds that must appear)
KNOWN = {
    "relu_default_30": (30, nn.ReLU, "default", {"vanishing_gradients"}),
    "relu_he_50": (50, nn.ReLU, "he", {"healthy"}),
    "tanh_glorot_20": (20, nn.Tanh, "glorot", {"healthy"}),
    "tanh_n001_10": (10, nn.Tanh, "n001", {"vanishing_gradients", "vanishing_activations"}),
    "relu_n1_10": (10, nn.ReLU, "n1", {"exploding_gradients", "exploding_activations"}),
    "sigmoid_n1_20": (20, nn.Sigmoid, "n1", {"saturation"}),
}


def test_model_inits_have_the_stated_variance():
    # PyTorch's default U(±1/√n) has variance 1/(3n); N(0, 2/n) for He. With n·m = 96·96 = 9216 draws
    # the relative standard error of a sample variance is √(2/9216) ≈ 1.5 % (×√(9/5) for the uniform's
    # lower kurtosis ≈ 2 %), so 10 % is > 5 standard errors.
    for init, var in (("default", 1 / (3 * WIDTH)), ("he", 2 / WIDTH), ("n001", 1e-4)):
        w = mlp(2, nn.ReLU, init)[2].weight.detach()
        assert abs(float(w.var()) / var - 1) < 0.1, init
