"""Activations as first-class objects: a name, a torch module or any callable on tensors.

Everything that reasons about an activation (gains, mean-field theory, the ``auto`` preset,
saturation in inspection) resolves it here, so "gelu", ``nn.GELU()`` and ``F.gelu`` all mean the same.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Activation", "ActivationLike", "activation", "known_activations"]

ActivationLike = Any  # str | nn.Module | Callable[[Tensor], Tensor] | Activation


@dataclass(frozen=True)
class Activation:
    """An elementwise activation φ with what initlab knows about it.

    ``fn`` maps a tensor to a tensor of the same shape. ``torch_gain`` is the argument pair for
    ``torch.nn.init.calculate_gain`` when torch has an entry for it, else ``None``.
    ``kinks`` lists the inputs x ≠ 0 where φ or φ' jumps (ReLU6 at 6, hardtanh at ±1): quadrature
    over Gaussian inputs places panel edges there (x = 0 is always an edge).
    ``family`` is one of ``"relu"`` (positively homogeneous: ReLU, leaky ReLU, PReLU), ``"linear"``,
    ``"tanh"`` (odd, saturating, φ'(0)=1: tanh, softsign, hardtanh), ``"sigmoid"`` or ``"smooth"``
    (GELU, SiLU, Mish, ELU, SELU, softplus and any callable).
    """

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor] = field(compare=False, repr=False)
    family: str = "smooth"
    torch_gain: tuple[str, float | None] | None = None
    params: tuple[tuple[str, float], ...] = ()
    kinks: tuple[float, ...] = ()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    @property
    def label(self) -> str:
        if not self.params:
            return self.name
        inner = ", ".join(f"{k}={v:g}" for k, v in self.params)
        return f"{self.name}({inner})"


def _leaky(slope: float) -> Activation:
    return Activation(
        "leaky_relu",
        lambda x: F.leaky_relu(x, slope),
        "relu",
        ("leaky_relu", slope),
        (("negative_slope", slope),),
    )


def _elu(alpha: float) -> Activation:
    return Activation("elu", lambda x: F.elu(x, alpha), "smooth", None, (("alpha", alpha),))


_NAMED: dict[str, Callable[[], Activation]] = {
    "linear": lambda: Activation("linear", lambda x: x, "linear", ("linear", None)),
    "relu": lambda: Activation("relu", F.relu, "relu", ("relu", None)),
    "leaky_relu": lambda: _leaky(0.01),
    "tanh": lambda: Activation("tanh", torch.tanh, "tanh", ("tanh", None)),
    "sigmoid": lambda: Activation("sigmoid", torch.sigmoid, "sigmoid", ("sigmoid", None)),
    "selu": lambda: Activation("selu", F.selu, "smooth", ("selu", None)),
    "gelu": lambda: Activation("gelu", F.gelu, "smooth"),
    "gelu_tanh": lambda: Activation("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), "smooth"),
    "silu": lambda: Activation("silu", F.silu, "smooth"),
    "mish": lambda: Activation("mish", F.mish, "smooth"),
    "elu": lambda: _elu(1.0),
    "celu": lambda: Activation("celu", F.celu, "smooth"),
    "softplus": lambda: Activation("softplus", F.softplus, "smooth"),
    "softsign": lambda: Activation("softsign", F.softsign, "tanh"),
    "hardtanh": lambda: Activation("hardtanh", F.hardtanh, "tanh", kinks=(-1.0, 1.0)),
    "relu6": lambda: Activation("relu6", F.relu6, "relu", kinks=(6.0,)),
    "hardswish": lambda: Activation("hardswish", F.hardswish, "smooth", kinks=(-3.0, 3.0)),
    "hardsigmoid": lambda: Activation("hardsigmoid", F.hardsigmoid, "sigmoid", kinks=(-3.0, 3.0)),
    "logsigmoid": lambda: Activation("logsigmoid", F.logsigmoid, "smooth"),
    "tanhshrink": lambda: Activation("tanhshrink", F.tanhshrink, "smooth"),
    "sin": lambda: Activation("sin", torch.sin, "smooth"),
    "exponential": lambda: Activation("exponential", torch.exp, "smooth"),
}

# Keras and common spellings of the same functions.
_ALIASES = {
    "identity": "linear",
    "none": "linear",
    "swish": "silu",
    "leakyrelu": "leaky_relu",
    "hard_tanh": "hardtanh",
    "hard_swish": "hardswish",
    "hard_silu": "hardswish",
    "hard_sigmoid": "hardsigmoid",
    "log_sigmoid": "logsigmoid",
    "gelu_approximate": "gelu_tanh",
    "exp": "exponential",
}

# torch modules that have a module-level parameter we must read.
_MODULE_TYPES: dict[type, Callable[[nn.Module], Activation]] = {
    nn.Identity: lambda m: _NAMED["linear"](),
    nn.ReLU: lambda m: _NAMED["relu"](),
    nn.LeakyReLU: lambda m: _leaky(float(m.negative_slope)),
    nn.Tanh: lambda m: _NAMED["tanh"](),
    nn.Sigmoid: lambda m: _NAMED["sigmoid"](),
    nn.SELU: lambda m: _NAMED["selu"](),
    nn.GELU: lambda m: _NAMED["gelu_tanh" if m.approximate == "tanh" else "gelu"](),
    nn.SiLU: lambda m: _NAMED["silu"](),
    nn.Mish: lambda m: _NAMED["mish"](),
    nn.ELU: lambda m: _elu(float(m.alpha)),
    nn.CELU: lambda m: Activation(
        "celu", lambda x: F.celu(x, float(m.alpha)), "smooth", None, (("alpha", float(m.alpha)),)
    ),
    nn.Softplus: lambda m: Activation(
        "softplus",
        lambda x: F.softplus(x, float(m.beta), float(m.threshold)),
        "smooth",
        None,
        (("beta", float(m.beta)),),
    ),
    nn.Softsign: lambda m: _NAMED["softsign"](),
    nn.Hardtanh: lambda m: Activation(
        "hardtanh",
        lambda x: F.hardtanh(x, float(m.min_val), float(m.max_val)),
        "tanh",
        None,
        (("min_val", float(m.min_val)), ("max_val", float(m.max_val))),
        (float(m.min_val), float(m.max_val)),
    ),
    nn.ReLU6: lambda m: _NAMED["relu6"](),
    nn.Hardswish: lambda m: _NAMED["hardswish"](),
    nn.Hardsigmoid: lambda m: _NAMED["hardsigmoid"](),
    nn.LogSigmoid: lambda m: _NAMED["logsigmoid"](),
    nn.Tanhshrink: lambda m: _NAMED["tanhshrink"](),
    nn.PReLU: lambda m: _leaky(float(m.weight.detach().float().mean()))
    if m.weight.device.type != "meta"
    else _leaky(0.25),
}

# Functional forms, so `F.relu` or `torch.tanh` resolve to the named activation.
_FUNCTIONS: dict[Any, str] = {
    F.relu: "relu",
    torch.relu: "relu",
    torch.tanh: "tanh",
    F.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    F.gelu: "gelu",
    F.silu: "silu",
    F.mish: "mish",
    F.elu: "elu",
    F.selu: "selu",
    torch.selu: "selu",
    F.softplus: "softplus",
    F.softsign: "softsign",
    F.hardtanh: "hardtanh",
    F.relu6: "relu6",
    F.hardswish: "hardswish",
    F.hardsigmoid: "hardsigmoid",
    F.leaky_relu: "leaky_relu",
    F.logsigmoid: "logsigmoid",
    torch.sin: "sin",
    torch.exp: "exponential",
}


def known_activations() -> list[str]:
    """Every activation name :func:`activation` accepts (aliases included)."""
    return sorted(set(_NAMED) | set(_ALIASES))


def _normalize(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def activation(spec: ActivationLike, param: float | None = None) -> Activation:
    """Resolve ``spec`` to an :class:`Activation`.

    ``spec`` may be a name (``"relu"``, ``"gelu"``, Keras's ``"swish"``; case-insensitive), a torch
    module (``nn.LeakyReLU(0.2)``; its parameters are read), an :class:`Activation`, or any callable
    mapping a tensor to a tensor of the same shape (then it is named after the callable).
    ``param`` sets the slope of ``"leaky_relu"`` or the alpha of ``"elu"`` given by name.

    >>> activation("swish").name
    'silu'
    >>> activation(nn.LeakyReLU(0.2)).label
    'leaky_relu(negative_slope=0.2)'
    """
    if isinstance(spec, Activation):
        return spec
    if spec is None:
        return _NAMED["linear"]()
    if isinstance(spec, str):
        key = _normalize(spec)
        key = _ALIASES.get(key, key)
        if key not in _NAMED:
            close = difflib.get_close_matches(key, known_activations(), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(
                f"activation: unknown name {spec!r}.{hint} Known names: {', '.join(known_activations())}; "
                "or pass a torch module or a callable on tensors."
            )
        if param is not None:
            if isinstance(param, bool) or not math.isfinite(float(param)):
                raise ValueError(f"activation: param must be a finite number, got {param!r}.")
            if key == "leaky_relu":
                return _leaky(float(param))
            if key == "elu":
                return _elu(float(param))
            raise ValueError(
                f"activation: param={param!r} is only meaningful for 'leaky_relu' (slope) or 'elu' "
                f"(alpha), not {key!r}."
            )
        return _NAMED[key]()
    if isinstance(spec, nn.Module):
        for cls in type(spec).__mro__:
            if cls in _MODULE_TYPES:
                return _MODULE_TYPES[cls](spec)
        # An unknown module: treat it as an elementwise callable, named after its class.
        return Activation(type(spec).__name__, spec, "smooth")
    if callable(spec):
        try:
            known = _FUNCTIONS.get(spec)
        except TypeError:  # unhashable callables
            known = None
        if known is not None:
            return _NAMED[known]()
        name = getattr(spec, "__name__", None) or type(spec).__name__
        return Activation(name, spec, "smooth")
    raise TypeError(
        f"activation: expected a name, a torch module or a callable on tensors, got {type(spec).__name__} "
        f"({spec!r})."
    )
