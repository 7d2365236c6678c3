"""μP's bookkeeping (Yang et al. 2022, "Tensor Programs V", arXiv:2203.03466): which dimensions of each parameter
are *width*, read from a base model as the ``mup`` package reads them, the per-parameter learning-rate
multipliers of μP's Adam and SGD, and the optimizer parameter groups built from them.

The rules are the ``mup`` package's (1.0.0), computed here so that initlab needs no ``mup``:

- ``set_base_shapes(model, base, delta=None)``: a dimension is a width dimension when it differs between
  ``base`` and ``delta`` (without ``delta``: between ``base`` and the model); its base size is ``base``'s.
  A parameter with two width dimensions is *matrix-like* (a hidden weight), with one *vector-like* (biases,
  norm scales, input and readout weights), with none *finite*.
- ``MuAdam``/``MuAdamW``: a matrix-like parameter's learning rate ÷ its fan-in width multiplier m = fan_in /
  base fan_in, its weight decay × m; everything else as given.
- ``MuSGD``: vector-like lr × m (m of its one width dimension), matrix-like lr ÷ (m_in / m_out), weight decay
  the other way round; finite ones as given.
- A readout (fan-in a width dimension, fan-out not: the layer ``mup`` insists be a ``MuReadout``) that is a
  plain layer, whose forward initlab cannot divide by m, gets the same function as ``MuReadout`` through its
  init and learning rate: W_plain = W_MuReadout / m, so its Adam and SGD lr are ÷ m (see
  :mod:`initlab.plan.presets.mup`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["BaseShapes", "LrScale", "WidthShape", "base_shapes", "param_groups", "width_shapes"]


class BaseShapes(dict):
    """``{parameter name: base shape}``: the shapes of the base model (and, for a delta, which dimensions
    are width), as :func:`base_shapes` read them; a dict, so a plan's ``as_dict()`` stays JSON-friendly.
    ``widths`` (when a delta was given): ``{name: tuple of bools}``, which dimensions are width."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], widths: Mapping[str, tuple[bool, ...]] | None,
                 source: str) -> None:
        super().__init__({k: list(v) for k, v in shapes.items()})
        self.widths = None if widths is None else dict(widths)
        self.source = source

    def __repr__(self) -> str:
        delta = ", with a delta" if self.widths is not None else ""
        return f"BaseShapes({len(self)} parameters, from {self.source}{delta})"


def _shapes_of(x: Any, what: str) -> tuple[dict[str, tuple[int, ...]], str]:
    if isinstance(x, nn.Module):
        return {n: tuple(int(d) for d in p.shape) for n, p in x.named_parameters()}, type(x).__name__
    if isinstance(x, Mapping):
        out = {}
        for k, v in x.items():
            if not isinstance(k, str):
                raise TypeError(f"{what}: a dict of shapes needs parameter names as keys, got {k!r}.")
            try:
                out[k] = tuple(int(d) for d in v)
            except TypeError:
                raise TypeError(f"{what}: the shape of {k!r} must be a sequence of ints (torch.Size, tuple, "
                                f"list), got {v!r}.") from None
        return out, "a dict of shapes"
    if isinstance(x, str):
        raise TypeError(f"{what}: a base-shape file ({x!r}) is not read; pass the base model itself (it can be "
                        "built on torch.device('meta')) or a dict {name: shape}.")
    raise TypeError(f"{what}: expected the base model (an nn.Module of the same architecture at the base width; "
                    f"torch.device('meta') is enough) or a dict {{name: shape}}, got {type(x).__name__}.")


def _same_names(a: Mapping[str, Any], b: Mapping[str, Any], what: str, other: str) -> None:
    extra, missing = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if extra or missing:
        raise ValueError(
            f"{what}: its parameter names must be {other}'s (the same architecture at another width); "
            + (f"it has {len(extra)} that {other} lacks, e.g. {', '.join(map(repr, extra[:3]))}" if extra else "")
            + ("; " if extra and missing else "")
            + (f"it lacks {len(missing)}, e.g. {', '.join(map(repr, missing[:3]))}" if missing else "") + "."
        )
    for k, v in a.items():
        if len(v) != len(b[k]):
            raise ValueError(f"{what}: {k!r} has shape {tuple(v)} there but {tuple(b[k])} in {other}; only sizes "
                             "may differ between widths, not the number of dimensions.")


def base_shapes(base: Any, delta: Any = None) -> BaseShapes:
    """The base shapes of ``base`` (a model or ``{name: shape}``), with the width dimensions fixed by
    ``delta`` (another width of the same model: every dimension that differs from ``base``) if given —
    ``mup.set_base_shapes(model, base, delta=delta)``'s reading.

    >>> import torch
    >>> mlp = lambda w: torch.nn.Sequential(torch.nn.Linear(3, w), torch.nn.ReLU(), torch.nn.Linear(w, 2))
    >>> base_shapes(mlp(8))
    BaseShapes(4 parameters, from Sequential)
    """
    if isinstance(base, BaseShapes) and delta is None:
        return base
    shapes, source = _shapes_of(base, "options['base']")
    source = base.source if isinstance(base, BaseShapes) else source
    if delta is None:
        return BaseShapes(shapes, None, source)
    dshapes, _ = _shapes_of(delta, "options['delta']")
    _same_names(dshapes, shapes, "options['delta']", "the base")
    widths = {k: tuple(a != b for a, b in zip(shapes[k], dshapes[k], strict=True)) for k in shapes}
    return BaseShapes(shapes, widths, source)


@dataclass(frozen=True)
class WidthShape:
    """One parameter's dimensions against its base: ``dims`` (now), ``base`` (the base size of each width
    dimension, ``None`` for a finite one) — mup's ``InfShape``."""

    dims: tuple[int, ...]
    base: tuple[int | None, ...]

    @property
    def ninf(self) -> int:
        return sum(b is not None for b in self.base)

    def mult(self, i: int) -> float:
        """The width multiplier of dimension ``i``: dims[i] / base[i], 1 for a finite dimension."""
        b = self.base[i]
        return 1.0 if b is None else self.dims[i] / b

    def is_width(self, i: int) -> bool:
        return self.base[i] is not None

    @property
    def main(self) -> int | None:
        """The last width dimension (mup's ``main``: the fan-in of a torch-layout matrix)."""
        return next((i for i in range(len(self.base) - 1, -1, -1) if self.base[i] is not None), None)


def width_shapes(model: nn.Module, bases: BaseShapes) -> dict[str, WidthShape]:
    """Every parameter of ``model`` (each tensor once) against ``bases`` (:func:`base_shapes`)."""
    shapes = {n: tuple(int(d) for d in p.shape) for n, p in model.named_parameters()}
    _same_names(bases, shapes, "options['base']", "the model")
    out = {}
    for k, dims in shapes.items():
        b = tuple(bases[k])
        # without a delta, what differs from the base is width (mup's zip_infshape, fin_if_same=True)
        inf = tuple(x != y for x, y in zip(b, dims, strict=True)) if bases.widths is None else bases.widths[k]
        ws = WidthShape(dims, tuple(x if w else None for x, w in zip(b, inf, strict=True)))
        if ws.ninf > 2:
            raise ValueError(f"options['base']: {k!r} has {ws.ninf} width dimensions (shape {dims}, base {b}); μP "
                             "(and the mup package) define at most 2 — a kernel size or a head count that grows "
                             "with width is not a width dimension: keep it equal in the base model.")
        out[k] = ws
    return out


@dataclass(frozen=True)
class LrScale:
    """μP's factors for one parameter: Adam's and SGD's learning-rate multipliers; weight decay is multiplied
    by the inverse (so that lr × weight decay stays as given, as ``mup`` does); ``why`` says which rule."""

    adam: float
    sgd: float
    why: str


_OPTIMIZERS = ("adam", "sgd")


def param_groups(plan: Any, base_lr: float, *, weight_decay: float = 0.0, optimizer: str = "adam",
                 params: Mapping[str, torch.Tensor] | None = None) -> list[dict[str, Any]]:
    """See :meth:`initlab.plan.Plan.param_groups`."""
    scales = getattr(plan, "lr_scales", None)
    if not scales:
        raise ValueError(
            f"param_groups: the plan of preset {plan.preset!r} sets no per-layer learning rates (only preset 'mup' "
            "does: μP's learning rates scale with width); for one group pass model.parameters() to the optimizer, "
            "or plan with initlab.plan(model, 'mup', options={'base': base_model})."
        )
    for name, v in (("base_lr", base_lr), ("weight_decay", weight_decay)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}.")
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer: expected 'adam' (Adam, AdamW and other entrywise-normalized optimizers: "
                         f"MuAdam's rule) or 'sgd' (MuSGD's rule), got {optimizer!r}.")
    groups: dict[float, dict[str, Any]] = {}
    for name, p in (params or {}).items():
        s = scales[name]
        k = s.adam if optimizer == "adam" else s.sgd
        g = groups.get(k)
        if g is None:
            g = groups[k] = {"params": [], "param_names": [], "lr": base_lr * k, "weight_decay": weight_decay / k,
                             "lr_mult": k}
        g["params"].append(p)
        g["param_names"].append(name)
    return list(groups.values())
