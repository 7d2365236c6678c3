"""The ``flax`` preset: Flax linen/nnx defaults (frameworks.md §5.2) — LeCun-normal kernels, zero biases,
orthogonal recurrent kernels per gate."""

from __future__ import annotations

from ...initializers import Constant, LecunNormal, Ones, Orthogonal, VarianceScaling, Zeros
from ..context import PresetContext
from ..registry import register_preset
from .common import _padding_fixup, _parts_or_whole, _traced_role

__all__ = ["flax_preset"]


def flax_preset(ctx: PresetContext) -> None:
    """Flax linen/nnx defaults (frameworks.md §5.2): lecun_normal kernels, zero biases."""
    for site in ctx.known_sites:
        layer, info = site.layer, site.info
        role, kind = info.role, layer.kind
        ff = info.fans["flax"]
        if kind == "mha":
            if role == "attn_in":
                _parts_or_whole(ctx, site, lambda f: LecunNormal(), "Flax MultiHeadDotProductAttention: "
                                "lecun_normal per projection, fan_in = the input features", "flax")
            elif role == "attn_out":
                ctx.set(site, LecunNormal(), "Flax MultiHeadDotProductAttention out: lecun_normal, fan_in = H·Dh",
                        fans=ff)
            else:
                ctx.set(site, Zeros(), "Flax attention biases: zeros", fans=None)
        elif kind in ("rnn", "lstm", "gru"):
            if role in ("kernel", "projection"):
                _parts_or_whole(ctx, site, lambda f: LecunNormal(), "Flax recurrent cell: one Dense per gate, "
                                "lecun_normal (fan_in = input features)", "flax")
            elif role == "recurrent_kernel":
                _parts_or_whole(ctx, site, lambda f: Orthogonal(), "Flax recurrent cell: orthogonal per H×H gate "
                                "(Keras treats the whole block)", "flax")
            else:
                ctx.set(site, Zeros(), "Flax recurrent cell: zero bias (no forget-gate offset)", fans=None)
        elif role == "kernel":
            ctx.set(site, LecunNormal(), f"Flax {'Conv' if 'conv' in kind else 'Dense'} default lecun_normal: "
                    f"truncated normal, var 1/fan_in, fan_in {ff.fan_in}", fans=ff)
        elif role == "bias":
            ctx.set(site, Zeros(), "Flax default bias_init: zeros", fans=None)
        elif role == "embedding":
            ctx.set(site, VarianceScaling(1.0, "fan_in", "untruncated_normal"),
                    f"Flax Embed: variance_scaling(1, 'fan_in', 'normal', out_axis=0) = N(0, 1/√features), "
                    f"features {ff.fan_in}", fans=ff)
            _padding_fixup(ctx, site)
        elif role in ("norm_scale", "norm_moving_var"):
            ctx.set(site, Ones(), "Flax norm scale: ones", fans=None)
        elif role in ("norm_shift", "norm_moving_mean"):
            ctx.set(site, Zeros(), "Flax norm bias: zeros", fans=None)
        elif role == "prelu":
            ctx.set(site, Constant(0.01), "Flax PReLU negative_slope_init: 0.01", fans=None)
        elif _traced_role(ctx, site):
            pass
        else:
            ctx.leave(site, f"the flax preset has no rule for role {role!r} of {layer.type_name}")




register_preset("flax", flax_preset, description="Flax linen/nnx defaults: lecun_normal kernels, zero biases")
