"""Module knowledge: which parameters each PyTorch module type has, their layout and their fans.

Every parameter of a known module is described by a :class:`ParamInfo`: its *role* (``kernel``,
``bias``, ``recurrent_kernel``, ``embedding``, ``attn_in``, …), its layout, and its fans as each
framework computes them — ``"true"`` (per output unit, groups respected; :func:`initlab.fans`),
``"torch"`` (what ``reset_parameters`` reads), ``"keras"`` (what Keras 3's ``compute_fans`` gives the same
architecture) and ``"flax"``. A parameter that packs several blocks (an LSTM weight's gates, the packed
q/k/v projection of ``nn.MultiheadAttention``) lists them as :class:`Part` slices, each with its own fans.

Gate orders (frameworks.md §2 and §4): torch LSTM **i, f, g, o** = Keras **i, f, c, o**; torch GRU
**r, z, n** against Keras **z, r, h**. Slices are labelled in torch's order for torch modules.

A module type that is not listed here (a custom module) has no :class:`LayerInfo`; its parameters are
left as is in a plan, with the reason, unless a rule covers them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import nn

from ..initializers.fans import Fans
from ..initializers.fans import fans as compute_fans
from .layers import GATES, KERAS_GATES, FansBy, LayerInfo, ParamInfo, Part

__all__ = [
    "GATES",
    "KERAS_GATES",
    "LayerInfo",
    "ParamInfo",
    "Part",
    "conv_fans",
    "embedding_fans",
    "known_module_types",
    "module_info",
]

def _same(f: Fans | None) -> FansBy:
    return {"true": f, "torch": f, "keras": f, "flax": f}


def _linear(m: nn.Linear) -> LayerInfo:
    out_f, in_f = m.weight.shape
    f = _same(Fans(int(in_f), int(out_f), 1))
    params = [ParamInfo("weight", "kernel", tuple(m.weight.shape), "torch", f)]
    if m.bias is not None:
        params.append(ParamInfo("bias", "bias", tuple(m.bias.shape), "torch", f))
    return LayerInfo("linear", "torch", m, tuple(params))


def _bilinear(m: nn.Bilinear) -> LayerInfo:
    out_f, in1, in2 = (int(d) for d in m.weight.shape)
    true = Fans(in1 * in2, out_f, 1)
    # torch: bound = 1/√in1 for weight and bias (nn.Bilinear.reset_parameters reads weight.size(1)).
    f = {"true": true, "torch": Fans(in1, out_f, 1), "keras": true, "flax": true}
    params = [ParamInfo("weight", "kernel", (out_f, in1, in2), "torch", f)]
    if m.bias is not None:
        params.append(ParamInfo("bias", "bias", tuple(m.bias.shape), "torch", f))
    return LayerInfo("bilinear", "torch", m, tuple(params))


def conv_fans(shape: tuple[int, ...], groups: int, transposed: bool) -> FansBy:
    """The fans of a convolution kernel stored as torch stores it — (out, in/g, *k), or (in, out/g, *k)
    when ``transposed`` — as each convention reads them (see the module docstring)."""
    g = groups
    rf = math.prod(shape[2:])
    if transposed:
        # (in, out/g, *k). torch reads fan_in from the output channels (PR #30079); Keras's
        # ConvNDTranspose kernel (*k, filters, in) gives fi = filters·∏k, fo = in·∏k — the same numbers.
        in_ch, out_per = shape[0], shape[1]
        true = compute_fans(shape, "torch_transposed", groups=g)
        torch_f = Fans(out_per * rf, in_ch * rf, rf)
        keras_f = Fans(out_per * rf, in_ch * rf, rf)
    else:
        out_ch, in_per = shape[0], shape[1]
        in_ch = in_per * g
        true = compute_fans(shape, "torch", groups=g)
        torch_f = Fans(in_per * rf, out_ch * rf, rf)  # fan_out too large by ×g (pytorch/pytorch#23854)
        if g > 1 and g == in_ch and out_ch % in_ch == 0:
            # Keras DepthwiseConvND kernel (*k, in, multiplier): fi = in·∏k, fo = multiplier·∏k.
            keras_f = Fans(in_ch * rf, out_ch // in_ch * rf, rf)
        else:
            keras_f = Fans(in_per * rf, out_ch * rf, rf)  # Keras ConvND(groups=g): fo ignores groups
    return {"true": true, "torch": torch_f, "keras": keras_f, "flax": true}


def _conv(m: nn.modules.conv._ConvNd) -> LayerInfo:
    shape = tuple(int(d) for d in m.weight.shape)
    g = int(m.groups)
    kind, layout = ("conv_transpose", "torch_transposed") if m.transposed else ("conv", "torch")
    f = conv_fans(shape, g, bool(m.transposed))
    depthwise = (not m.transposed) and g > 1 and g == int(m.in_channels)
    params = [ParamInfo("weight", "kernel", shape, layout, f, meta={"groups": g})]
    if m.bias is not None:
        params.append(ParamInfo("bias", "bias", tuple(m.bias.shape), layout, f, meta={"groups": g}))
    return LayerInfo(kind, "torch", m, tuple(params), attrs={"groups": g, "depthwise": depthwise})


def _gate_parts(shape: tuple[int, ...], gates: tuple[str, ...], hidden: int, in_dim: int | None) -> tuple[Part, ...]:
    if len(gates) == 1:
        return ()
    parts = []
    for k, gname in enumerate(gates):
        idx = (slice(k * hidden, (k + 1) * hidden),)
        pshape = (hidden, *shape[1:])
        pf = Fans(in_dim, hidden, 1) if in_dim is not None else Fans(hidden, hidden, 1)
        parts.append(Part(gname, idx, pshape, _same(pf)))
    return tuple(parts)


def _rnn(m: nn.RNNBase | nn.RNNCellBase) -> LayerInfo:
    kind = {nn.LSTM: "lstm", nn.LSTMCell: "lstm", nn.GRU: "gru", nn.GRUCell: "gru"}.get(type(m))
    if kind is None:
        kind = "lstm" if isinstance(m, (nn.LSTM, nn.LSTMCell)) else "gru" if isinstance(m, (nn.GRU, nn.GRUCell)) else "rnn"
    gates = GATES[kind]
    hidden = int(m.hidden_size)
    params = []
    for name, p in m.named_parameters(recurse=False):
        shape = tuple(int(d) for d in p.shape)
        meta: dict[str, Any] = {"hidden_size": hidden, "gates": gates}
        if name.startswith("weight_ih"):
            in_dim = shape[1]
            whole = Fans(in_dim, shape[0], 1)
            params.append(ParamInfo(name, "kernel", shape, "torch", _same(whole),
                                    _gate_parts(shape, gates, hidden, in_dim), meta))
        elif name.startswith("weight_hh"):
            in_dim = shape[1]  # the projection size when proj_size > 0
            whole = Fans(in_dim, shape[0], 1)
            params.append(ParamInfo(name, "recurrent_kernel", shape, "torch", _same(whole),
                                    _gate_parts(shape, gates, hidden, in_dim), meta))
        elif name.startswith("weight_hr"):
            params.append(ParamInfo(name, "projection", shape, "torch", _same(Fans(shape[1], shape[0], 1)), (), meta))
        elif name.startswith("bias_ih") or name.startswith("bias_hh"):
            role = "bias" if name.startswith("bias_ih") else "recurrent_bias"
            params.append(ParamInfo(name, role, shape, "torch", _same(Fans(hidden, hidden, 1)),
                                    _gate_parts(shape, gates, hidden, None), meta))
    attrs = {"hidden_size": hidden, "gates": gates, "nonlinearity": getattr(m, "nonlinearity", None)}
    return LayerInfo(kind, "torch", m, tuple(params), attrs=attrs)


def embedding_fans(num: int, dim: int) -> FansBy:
    """The fans of a (num, dim) embedding table as each convention reads them."""
    # Keras compute_fans((num, dim)) = (num, dim); Flax's Embed reads fan_in = features (out_axis=0).
    return {"true": Fans(num, dim, 1), "torch": Fans(dim, num, 1), "keras": Fans(num, dim, 1),
            "flax": Fans(dim, num, 1)}


def _embedding(m: nn.Embedding | nn.EmbeddingBag) -> LayerInfo:
    num, dim = (int(d) for d in m.weight.shape)
    f = embedding_fans(num, dim)
    pad = m.padding_idx
    return LayerInfo("embedding", "torch", m,
                     (ParamInfo("weight", "embedding", (num, dim), "torch", f, meta={"padding_idx": pad}),),
                     attrs={"padding_idx": pad})


def _mha(m: nn.MultiheadAttention) -> LayerInfo:
    e = int(m.embed_dim)
    params: list[ParamInfo] = []
    meta = {"num_heads": int(m.num_heads), "embed_dim": e}
    if m._qkv_same_embed_dim:
        packed = Fans(e, 3 * e, 1)  # torch's fans of the packed (3E, E): what xavier_uniform_ reads
        parts = tuple(
            Part(lbl, (slice(k * e, (k + 1) * e),), (e, e), _same(Fans(e, e, 1))) for k, lbl in enumerate("qkv")
        )
        params.append(ParamInfo("in_proj_weight", "attn_in", (3 * e, e), "torch",
                                {"true": packed, "torch": packed, "keras": packed, "flax": packed}, parts,
                                {**meta, "packed": True}))
    else:
        for lbl, name in zip("qkv", ("q_proj_weight", "k_proj_weight", "v_proj_weight"), strict=True):
            shape = tuple(int(d) for d in getattr(m, name).shape)
            params.append(ParamInfo(name, "attn_in", shape, "torch", _same(Fans(shape[1], shape[0], 1)), (),
                                    {**meta, "packed": False, "projection": lbl}))
    if m.in_proj_bias is not None:
        parts = tuple(Part(lbl, (slice(k * e, (k + 1) * e),), (e,), _same(Fans(e, e, 1))) for k, lbl in enumerate("qkv"))
        params.append(ParamInfo("in_proj_bias", "attn_in_bias", (3 * e,), "torch", _same(Fans(e, e, 1)), parts, meta))
    out_f = _same(Fans(e, e, 1))
    params.append(ParamInfo("out_proj.weight", "attn_out", (e, e), "torch", out_f, (), meta))
    if m.out_proj.bias is not None:
        params.append(ParamInfo("out_proj.bias", "attn_out_bias", (e,), "torch", out_f, (), meta))
    for name in ("bias_k", "bias_v"):
        if getattr(m, name) is not None:
            # torch's fans of a (1, 1, E) tensor: fan_in = fan_out = E (xavier_normal_ gives std 1/√E).
            params.append(ParamInfo(name, "attn_bias_kv", (1, 1, e), "torch", _same(Fans(e, e, e)), (), meta))
    return LayerInfo("mha", "torch", m, tuple(params), covers=("out_proj",), attrs=meta)


def _norm(m: nn.Module) -> LayerInfo:
    params = []
    if getattr(m, "weight", None) is not None:
        params.append(ParamInfo("weight", "norm_scale", tuple(m.weight.shape), "torch", _same(None)))
    if getattr(m, "bias", None) is not None:
        params.append(ParamInfo("bias", "norm_shift", tuple(m.bias.shape), "torch", _same(None)))
    return LayerInfo("norm", "torch", m, tuple(params))


def _prelu(m: nn.PReLU) -> LayerInfo:
    return LayerInfo("prelu", "torch", m, (ParamInfo("weight", "prelu", tuple(m.weight.shape), "torch", _same(None),
                                                     meta={"init": float(m.init)}),))


_NORMS: tuple[type, ...] = (
    nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)

_TABLE: tuple[tuple[type | tuple[type, ...], Callable[[Any], LayerInfo]], ...] = (
    (nn.MultiheadAttention, _mha),
    (nn.Bilinear, _bilinear),
    (nn.Linear, _linear),
    (nn.modules.conv._ConvNd, _conv),
    ((nn.RNNBase, nn.RNNCellBase), _rnn),
    ((nn.Embedding, nn.EmbeddingBag), _embedding),
    (_NORMS, _norm),
    (nn.PReLU, _prelu),
)


def known_module_types() -> list[str]:
    """Names of the torch module families initlab knows (subclasses are known too)."""
    out = []
    for types, _ in _TABLE:
        for t in types if isinstance(types, tuple) else (types,):
            out.append(t.__name__.lstrip("_"))
    return out


def module_info(module: Any) -> LayerInfo | None:
    """The :class:`LayerInfo` of a torch module, or of a Keras 3 layer (see :mod:`initlab.plan.keras`);
    ``None`` for a module initlab does not know.

    Lazy modules that are not yet materialized (``nn.LazyLinear`` before its first call) have no shapes;
    they are reported as unknown, with that reason, by :func:`initlab.plan`.
    """
    from .keras import is_keras_layer, keras_layer_info

    if is_keras_layer(module):
        return keras_layer_info(module)
    if not isinstance(module, nn.Module):
        return None
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in module.parameters(recurse=False)):
        return None
    for types, fn in _TABLE:
        if isinstance(module, types):
            return fn(module)
    return None
