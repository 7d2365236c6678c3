"""Which modules inspection hooks and how it classifies them: every module of a torch model (Keras 3
layers through Keras's own tree), its own parameters, and its kind (``layer``, ``activation``, ``norm``,
``other``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..initializers.activations import _MODULE_TYPES, Activation, activation

_ACT_TYPES = tuple(_MODULE_TYPES)
_NORM_TYPES: tuple[type, ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def _is_keras(model: Any) -> bool:
    return type(model).__module__.startswith("keras") and hasattr(model, "_flatten_layers")


def _discover(model: Any) -> list[tuple[str, nn.Module, bool]]:
    """(path, module, is_leaf) for every module to hook, each once (shared modules fire per call)."""
    if _is_keras(model):
        out = []
        for layer in model._flatten_layers(include_self=False, recursive=True):
            if not isinstance(layer, nn.Module):
                continue
            leaf = not list(layer._flatten_layers(include_self=False, recursive=False))
            out.append((getattr(layer, "path", None) or layer.name, layer, leaf))
        return out
    out = []
    for name, m in model.named_modules():
        leaf = not any(c is not None for c in m._modules.values())  # what children() yields
        if not name and not leaf:
            continue  # the root container: its input and output are the model's
        own = any(p is not None for p in m._parameters.values())
        out.append((name or type(m).__name__, m, leaf or own))
    return out


def _own_params(module: nn.Module, keras: bool) -> list[tuple[str, torch.Tensor]]:
    if keras:
        return [
            (v.path, v.value) for v in getattr(module, "weights", []) if isinstance(v.value, torch.Tensor)
        ]
    return [(n, p) for n, p in module._parameters.items() if p is not None]


def _kind(module: nn.Module, keras: bool) -> str:
    params = _own_params(module, keras)
    if any(p.dim() >= 2 for _, p in params):
        return "layer"
    if isinstance(module, _ACT_TYPES) and not isinstance(module, nn.Identity):
        return "activation"
    if isinstance(module, _NORM_TYPES) or "Normalization" in type(module).__name__:
        return "norm"
    return "other"


def _keras_activation(layer: Any) -> Activation | None:
    fn = getattr(layer, "activation", None)
    if fn is None or not callable(fn):
        return None
    name = getattr(fn, "__name__", "") or ""
    try:
        act = activation(name) if name else activation(fn)
    except (ValueError, TypeError):
        act = Activation(name or type(fn).__name__, fn, "smooth")
    if act.family == "linear":
        return None
    return Activation(act.name, fn, act.family, act.torch_gain, act.params, act.kinks)
