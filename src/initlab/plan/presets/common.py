"""Helpers the built-in presets share: torch's U(±1/√fan_in) bound, per-slice choices, the padding row,
the LSTM forget-gate bias, ``nn.Transformer``'s matrices, a Keras layer's own initializer, and the roles
only a trace of the forward pass finds (:func:`_traced_role`)."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from ...initializers import Constant, Initializer, Ones, RandomUniform, Zeros
from ...initializers.fans import Fans
from ..context import PresetContext
from ..sites import ParamSite


def _bound(fan_in: int) -> Initializer:
    return Zeros() if fan_in <= 0 else RandomUniform(-1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in))


def _parts_or_whole(ctx: PresetContext, site: ParamSite, make: Callable[[Fans | None], Initializer], why: str,
                    fans_key: str = "true") -> None:
    info = site.info
    if info.parts:
        for p in info.parts:
            ctx.set(site, make(p.fans.get(fans_key)), why, part=p, fans=p.fans.get(fans_key))
    else:
        f = info.fans.get(fans_key)
        ctx.set(site, make(f), why, fans=f)


def _padding_fixup(ctx: PresetContext, site: ParamSite) -> None:
    pad = site.info.meta.get("padding_idx")
    if pad is None:
        return
    n = site.info.shape[0]
    row = pad % n
    ctx.set(site, Zeros(), "padding_idx row: zero, as torch's reset_parameters leaves it (its gradient is "
            "masked, so it keeps this value)", label=f"padding_idx={pad}", index=(slice(row, row + 1),),
            shape=(1, *site.info.shape[1:]), fixed=True)


def _forget_bias(ctx: PresetContext, site: ParamSite, value: float, why: str) -> None:
    """Set the forget-gate slice of an LSTM bias."""
    for p in site.info.parts:
        if p.label == "f":
            ctx.set(site, Constant(value) if value else Zeros(), why, part=p)


def _torch_transformer_paths(ctx: PresetContext) -> set[str]:
    """Paths of every >1-D parameter under an ``nn.Transformer`` (its ``_reset_parameters`` applies
    ``xavier_uniform_`` to all of them after construction)."""
    out: set[str] = set()
    if not isinstance(ctx.model, nn.Module):
        return out
    for mpath, m in ctx.model.named_modules():
        if isinstance(m, nn.Transformer):
            prefix = f"{mpath}." if mpath else ""
            for n, p in m.named_parameters():
                if p.dim() > 1:
                    out.add(prefix + n)
    return out


def _keras_init(site: ParamSite) -> Initializer | None:
    from ..keras import keras_initializer

    init = site.info.meta.get("initializer")
    return None if init is None else keras_initializer(init)


def _traced_role(ctx: PresetContext, site: ParamSite) -> bool:
    """The roles no torch module has, which a trace of the forward pass reads (:mod:`initlab.plan.trace`);
    every built-in preset treats them alike, since none of the frameworks they copy has such a layer:

    - ``norm_offset_scale`` (``(1 + w)·z``, Gemma): the value that makes the scale the identity, 1 − c;
    - ``shift`` (a 1-D parameter added to an activation with no kernel before it): zeros, like a bias;
    - ``branch_scale`` (``gamma · branch`` on a residual branch, a layer scale): the model's own value when
      the tensor holds one constant (what its constructor gave it, e.g. ConvNeXt's 1e-6), else ones.

    Returns whether ``site`` had one of these roles (and is now set)."""
    info = site.info
    role = info.role
    if role == "norm_offset_scale":
        v = float(info.meta.get("identity") or 0.0)
        ctx.set(site, Constant(v) if v else Zeros(), f"w = {v:g} makes the scale the identity at init (as ones "
                "do for a plain norm scale)", fans=None)
    elif role == "shift":
        ctx.set(site, Zeros(), "zeros, as every preset gives a bias", fans=None)
    elif role == "branch_scale":
        value, why_not = _constant_value(site.param)
        if value is not None:
            ctx.set(site, Constant(value) if value else Zeros(), f"the model's own value {value:g} (the tensor holds "
                    "one constant, what its constructor gave it: a small layer scale starts each block near the "
                    "identity, Touvron et al. 2021)", fans=None)
        else:
            ctx.set(site, Ones(), f"ones, the branch at full strength ({why_not}, so the model's own value is "
                    "unknown)", fans=None)
    else:
        return False
    return True


def _constant_value(param) -> tuple[float | None, str]:
    if param.is_meta:
        return None, "the tensor is on the meta device"
    if param.numel() == 0:
        return None, "the tensor is empty"
    flat = param.detach().reshape(-1)
    first = flat[0]
    if not bool((flat == first).all()):
        return None, "the tensor is not one constant"
    return float(first), ""
