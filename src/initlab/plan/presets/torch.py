"""The ``torch`` preset: exactly what each module's ``reset_parameters`` draws (frameworks.md §4)."""

from __future__ import annotations

from ...initializers import Constant, Ones, RandomNormal, TorchDefault, XavierNormal, XavierUniform, Zeros
from ..context import PresetContext
from ..registry import register_preset
from ..sites import ParamSite
from .common import _bound, _padding_fixup, _torch_transformer_paths, _traced_role

__all__ = ["torch_preset"]


def torch_preset(ctx: PresetContext) -> None:
    """What each module's ``reset_parameters`` draws (distributions; frameworks.md §4)."""
    transformer = _torch_transformer_paths(ctx)
    for site in ctx.known_sites:
        layer, info = site.layer, site.info
        role, kind = info.role, layer.kind
        tf = info.fans["torch"]
        name = layer.attrs.get("as") or (layer.type_name if layer.framework == "torch"
                                         else f"(torch's equivalent of Keras {layer.type_name})")
        if site.path in transformer:
            ctx.set(site, XavierUniform(), "nn.Transformer._reset_parameters: xavier_uniform_ on every "
                    "parameter with dim > 1, after the submodules' own defaults", fans=tf)
        elif kind == "mha":
            _torch_mha(ctx, site)
        elif kind in ("rnn", "lstm", "gru"):
            h = info.meta["hidden_size"]
            ctx.set(site, _bound(h), f"{name}.reset_parameters: every weight and both biases "
                    f"U(±1/√hidden_size) = U(±1/√{h})", fans=tf)
        elif role == "kernel" and kind == "bilinear":
            ctx.set(site, _bound(tf.fan_in), f"nn.Bilinear.reset_parameters: U(±1/√in1_features) = "
                    f"U(±1/√{tf.fan_in})", fans=tf)
        elif role == "kernel":
            extra = " (ConvTranspose: torch reads fan_in from the output channels, PR #30079)" \
                if kind == "conv_transpose" else ""
            ctx.set(site, TorchDefault(), f"{name}.reset_parameters: kaiming_uniform_(a=√5) = "
                    f"U(±1/√fan_in), fan_in {tf.fan_in}{extra}", fans=tf)
        elif role == "bias":
            ctx.set(site, _bound(tf.fan_in), f"{name}.reset_parameters: bias U(±1/√fan_in) with "
                    f"the weight's fan_in {tf.fan_in}", fans=tf)
        elif role == "embedding":
            ctx.set(site, RandomNormal(0.0, 1.0), f"{name}.reset_parameters: normal_ = N(0, 1)", fans=None)
            _padding_fixup(ctx, site)
        elif role in ("norm_scale", "norm_moving_var"):
            ctx.set(site, Ones(), "normalization scale (running variance): ones", fans=None)
        elif role in ("norm_shift", "norm_moving_mean"):
            ctx.set(site, Zeros(), "normalization shift (running mean): zeros", fans=None)
        elif role == "prelu":
            v = float(info.meta.get("init", 0.25))
            ctx.set(site, Constant(v), f"nn.PReLU: init={v:g}", fans=None)
        elif _traced_role(ctx, site):
            pass
        else:
            ctx.leave(site, f"the torch preset has no rule for role {role!r} of {layer.type_name}")


def _torch_mha(ctx: PresetContext, site: ParamSite) -> None:
    info = site.info
    role = info.role
    if role == "attn_in":
        if info.meta.get("packed"):
            f = info.fans["torch"]
            ctx.set(site, XavierUniform(), "MultiheadAttention._reset_parameters: xavier_uniform_ on the packed "
                    f"(3E, E) matrix, fans ({f.fan_in}, {f.fan_out}): half the per-projection variance "
                    "(pytorch/pytorch#166378)", fans=f)
        else:
            ctx.set(site, XavierUniform(), "MultiheadAttention._reset_parameters: xavier_uniform_ on each "
                    "separate projection", fans=info.fans["torch"])
    elif role in ("attn_in_bias", "attn_out_bias"):
        ctx.set(site, Zeros(), "MultiheadAttention._reset_parameters: constant_(0) on in_proj_bias and "
                "out_proj.bias", fans=None)
    elif role == "attn_out":
        ctx.set(site, TorchDefault(), "out_proj keeps nn.Linear's U(±1/√E) (MultiheadAttention never resets "
                "out_proj.weight)", fans=info.fans["torch"])
    elif role == "attn_bias_kv":
        ctx.set(site, XavierNormal(), "MultiheadAttention._reset_parameters: xavier_normal_ on bias_k/bias_v "
                "(std 1/√E)", fans=info.fans["torch"])




register_preset("torch", torch_preset, description="what each module's reset_parameters draws")
