"""The ``keras`` preset: what Keras 3 gives the same architecture, with Keras's fans (frameworks.md §2);
a Keras layer keeps its own configured initializers."""

from __future__ import annotations

from ...initializers import GlorotUniform, Ones, Orthogonal, RandomUniform, Zeros
from ..context import PresetContext
from ..registry import register_preset
from ..sites import ParamSite
from .common import _forget_bias, _keras_init, _padding_fixup, _parts_or_whole, _traced_role

__all__ = ["keras_preset"]


def keras_preset(ctx: PresetContext) -> None:
    """What Keras 3 gives the same architecture (frameworks.md §2), with Keras's fans."""
    for site in ctx.known_sites:
        layer, info = site.layer, site.info
        role, kind = info.role, layer.kind
        if layer.framework == "keras":
            _keras_layer_own(ctx, site)
            continue
        kf = info.fans["keras"]
        if kind == "mha":
            if role == "attn_in":
                _parts_or_whole(ctx, site, lambda f: GlorotUniform(),
                                "Keras MultiHeadAttention: glorot_uniform on each of the query/key/value kernels "
                                "(d, H, Dk), fans (d, H·Dk) as Keras 3.15 derives them from the einsum")
            elif role == "attn_out":
                ctx.set(site, GlorotUniform(), "Keras MultiHeadAttention output kernel (H, Dv, d): glorot_uniform, "
                        "fans (H·Dv, d)", fans=kf)
            else:
                ctx.set(site, Zeros(), "Keras MultiHeadAttention biases: zeros (bias_k/bias_v have no Keras "
                        "counterpart: zeros as well)", fans=None)
        elif kind in ("rnn", "lstm", "gru"):
            keras_name = {"rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}[kind]
            if role == "kernel":
                ctx.set(site, GlorotUniform(), f"Keras {keras_name}: glorot_uniform on the whole (in, "
                        f"{len(info.meta['gates'])}·units) kernel", fans=kf)
            elif role == "recurrent_kernel":
                ctx.set(site, Orthogonal(), f"Keras {keras_name}: orthogonal on the whole (units, "
                        f"{len(info.meta['gates'])}·units) recurrent kernel", fans=kf)
            elif role == "projection":
                ctx.set(site, GlorotUniform(), "LSTM projection (proj_size): no Keras counterpart; glorot_uniform "
                        "like a Dense kernel", fans=kf)
            else:
                ctx.set(site, Zeros(), f"Keras {keras_name}: zero bias", fans=None)
                if kind == "lstm" and role == "bias":
                    _forget_bias(ctx, site, 1.0, "Keras LSTM unit_forget_bias=True: forget gate bias 1; torch "
                                 "adds bias_ih and bias_hh, so bias_ih[f] = 1 and bias_hh[f] = 0")
        elif role == "kernel":
            note = {"conv": " (Keras's fans: a depthwise kernel counts fan_in = in·∏k, grouped fan_out ignores "
                            "groups)", "conv_transpose": " (Keras's fans: fan_in from the filters)"}.get(kind, "")
            ctx.set(site, GlorotUniform(), f"Keras default kernel_initializer glorot_uniform{note}", fans=kf)
        elif role == "bias":
            ctx.set(site, Zeros(), "Keras default bias_initializer: zeros", fans=None)
        elif role == "embedding":
            ctx.set(site, RandomUniform(-0.05, 0.05), "Keras Embedding default 'uniform' = U(±0.05)", fans=None)
            _padding_fixup(ctx, site)
        elif role in ("norm_scale", "norm_moving_var"):
            ctx.set(site, Ones(), "Keras normalization gamma (moving variance): ones", fans=None)
        elif role in ("norm_shift", "norm_moving_mean"):
            ctx.set(site, Zeros(), "Keras normalization beta (moving mean): zeros", fans=None)
        elif role == "prelu":
            ctx.set(site, Zeros(), "Keras PReLU alpha_initializer: zeros (torch uses 0.25)", fans=None)
        elif _traced_role(ctx, site):
            pass
        else:
            ctx.leave(site, f"the keras preset has no rule for role {role!r} of {layer.type_name}")


def _keras_layer_own(ctx: PresetContext, site: ParamSite) -> None:
    """A Keras layer: its own configured initializer (what Keras itself gives this model)."""
    info = site.info
    try:
        init = _keras_init(site)
    except (ValueError, TypeError) as e:
        ctx.leave(site, f"its Keras initializer cannot be read as an initlab initializer: {e}")
        return
    if init is None:
        ctx.leave(site, f"{site.layer.type_name} has no initializer attribute for {site.path!r}")
        return
    name = type(info.meta.get("initializer")).__name__
    ctx.set(site, init, f"the layer's own {name} (what Keras gives this layer)", fans=info.fans["keras"])
    if site.layer.kind == "lstm" and info.role == "bias" and info.meta.get("unit_forget_bias"):
        _forget_bias(ctx, site, 1.0, "Keras LSTM unit_forget_bias=True: forget gate bias 1")




register_preset("keras", keras_preset, description="what Keras 3 gives the same architecture")
