"""Keras 3 models on the torch backend: find the Keras layers and describe their variables.

With ``KERAS_BACKEND=torch`` every Keras layer is a ``torch.nn.Module`` and every Keras variable holds a
``torch.nn.Parameter`` (``variable.value``). Keras does not register its layers as torch submodules
(a ``Sequential`` keeps them in a ``ParameterDict``), so the layers are found through Keras's own
tree (``Layer._flatten_layers``) and each variable is matched to its torch parameter by identity.

Layouts are Keras's (frameworks.md §2): ``Dense`` kernel (in, out); ``ConvND`` (*k, in/groups, out);
``ConvNDTranspose`` (*k, filters, in); ``DepthwiseConvND`` (*k, in, multiplier); ``EinsumDense`` (and so
``MultiHeadAttention``'s q/k/v (d, H, Dk) and output (H, Dv, d)) fans from the equation, as Keras 3.15
computes them; ``LSTMCell`` kernel (in, 4u) with gates **i, f, c, o** along the last axis, ``GRUCell``
(in, 3u) with **z, r, h**. keras is an optional dependency (``pip install initlab[keras]``); nothing here
imports it unless it is already imported.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from ..initializers.fans import Fans
from ..initializers.fans import fans as compute_fans
from .layers import KERAS_GATES, LayerInfo, ParamInfo, Part

__all__ = ["is_keras_layer", "keras_layer_info", "keras_layers", "keras_variables"]


def _keras() -> Any | None:
    return sys.modules.get("keras")


def is_keras_layer(obj: Any) -> bool:
    """Whether ``obj`` is a Keras 3 ``Layer`` (only if keras is already imported)."""
    keras = _keras()
    if keras is None:
        return False
    try:
        return isinstance(obj, keras.layers.Layer)
    except AttributeError:
        return False


def keras_layers(root: Any) -> list[Any]:
    """Every Keras layer under ``root`` (itself included), depth first, in Keras's tracking order."""
    return list(root._flatten_layers(include_self=True, recursive=True))


def keras_variables(layer: Any) -> list[Any]:
    """The variables a layer owns itself (not those of its sub-layers)."""
    own = list(getattr(layer, "_trainable_variables", [])) + list(getattr(layer, "_non_trainable_variables", []))
    return [v for v in own if hasattr(v, "value")]


def _same(f: Fans | None) -> dict[str, Fans | None]:
    return {"true": f, "torch": f, "keras": f, "flax": f}


def _shape(v: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in v.shape)


def _init_of(layer: Any, attr: str) -> Any:
    """The layer's configured initializer for ``attr`` (e.g. ``kernel_initializer``), or None."""
    return getattr(layer, attr, None)


def _einsum_fans(equation: str, kshape: tuple[int, ...]) -> Fans:
    """Fans of an ``EinsumDense`` kernel: product of the kernel axes that appear in the input spec
    (fan_in) and of those that appear in the output spec (fan_out), as Keras 3.15 derives them."""
    lhs, out = equation.split("->")
    inp, kern = lhs.split(",")
    fi = math.prod(d for c, d in zip(kern, kshape, strict=True) if c in inp) or 1
    fo = math.prod(d for c, d in zip(kern, kshape, strict=True) if c in out and c not in inp) or 1
    return Fans(int(fi), int(fo), 1)


def _gate_parts(shape: tuple[int, ...], gates: tuple[str, ...], units: int) -> tuple[Part, ...]:
    parts = []
    for k, g in enumerate(gates):
        sl = slice(k * units, (k + 1) * units)
        idx = (*(slice(None),) * (len(shape) - 1), sl)
        pshape = (*shape[:-1], units)
        pf = Fans(shape[0], units, 1) if len(shape) == 2 else Fans(units, units, 1)
        parts.append(Part(g, idx, pshape, _same(pf)))
    return tuple(parts)


def keras_layer_info(layer: Any) -> LayerInfo | None:
    """The :class:`~initlab.plan.layers.LayerInfo` of a built Keras layer that owns variables, or None.

    ``ParamInfo.name`` is the variable's ``path`` (e.g. ``"sequential/dense/kernel"``) and
    ``ParamInfo.meta["variable"]`` the Keras variable. ``attrs["activation"]`` is the layer's own
    activation (Dense/Conv/EinsumDense apply it inside the layer).
    """
    keras = _keras()
    if keras is None or not getattr(layer, "built", False):
        return None
    variables = keras_variables(layer)
    if not variables:
        return None
    L = keras.layers
    from keras.src.layers.convolutional.base_conv import BaseConv
    from keras.src.layers.convolutional.base_conv_transpose import BaseConvTranspose
    from keras.src.layers.convolutional.base_depthwise_conv import BaseDepthwiseConv
    from keras.src.layers.convolutional.base_separable_conv import BaseSeparableConv

    by_name = {v.name: v for v in variables}
    attrs: dict[str, Any] = {"activation": getattr(layer, "activation", None)}
    params: list[ParamInfo] = []

    def add(vname: str, role: str, layout: str, f: dict[str, Fans | None], parts=(), init_attr=None, **meta):
        v = by_name.get(vname)
        if v is None:
            return
        params.append(ParamInfo(v.path, role, _shape(v), layout, f, tuple(parts),
                                {"variable": v, "initializer": _init_of(layer, init_attr) if init_attr else None,
                                 **meta}))

    if isinstance(layer, L.Dense):
        kin, kout = _shape(by_name["kernel"])
        f = _same(Fans(kin, kout, 1))
        kind = "linear"
        add("kernel", "kernel", "keras", f, init_attr="kernel_initializer")
        add("bias", "bias", "keras", f, init_attr="bias_initializer")
    elif isinstance(layer, L.EinsumDense):
        ks = _shape(by_name["kernel"])
        f = _same(_einsum_fans(layer.equation, ks))
        kind = "linear"
        add("kernel", "kernel", "keras", f, init_attr="kernel_initializer")
        add("bias", "bias", "keras", f, init_attr="bias_initializer")
    elif isinstance(layer, BaseSeparableConv):
        ds = _shape(by_name["depthwise_kernel"])
        ps = _shape(by_name["pointwise_kernel"])
        dtrue = compute_fans(ds, "keras_depthwise")
        dkeras = compute_fans(ds, "keras")
        kind = "conv"
        add("depthwise_kernel", "kernel", "keras_depthwise",
            {"true": dtrue, "torch": Fans(dtrue.fan_in, ds[-1] * dtrue.receptive_field * ds[-2], dtrue.receptive_field),
             "keras": dkeras, "flax": dtrue}, init_attr="depthwise_initializer")
        pf = compute_fans(ps, "keras")
        add("pointwise_kernel", "kernel", "keras", _same(pf), init_attr="pointwise_initializer")
        add("bias", "bias", "keras", _same(pf), init_attr="bias_initializer")
        attrs["depthwise"] = True
    elif isinstance(layer, BaseDepthwiseConv):
        ks = _shape(by_name["kernel"])
        true = compute_fans(ks, "keras_depthwise")
        keras_f = compute_fans(ks, "keras")  # Keras's heuristic: fi = in·∏k (frameworks.md §2)
        rf = true.receptive_field
        # torch's depthwise weight (in·dm, 1, *k): fi = ∏k, fo = in·dm·∏k.
        f = {"true": true, "torch": Fans(rf, ks[-2] * ks[-1] * rf, rf), "keras": keras_f, "flax": true}
        kind = "conv"
        add("kernel", "kernel", "keras_depthwise", f, init_attr="depthwise_initializer")
        add("bias", "bias", "keras_depthwise", f, init_attr="bias_initializer")
        attrs["depthwise"] = True
    elif isinstance(layer, BaseConvTranspose):
        ks = _shape(by_name["kernel"])
        true = compute_fans(ks, "keras_transposed")
        keras_f = compute_fans(ks, "keras")  # fi = filters·∏k: output channels act as "input"
        f = {"true": true, "torch": keras_f, "keras": keras_f, "flax": true}
        kind = "conv_transpose"
        add("kernel", "kernel", "keras_transposed", f, init_attr="kernel_initializer")
        add("bias", "bias", "keras_transposed", f, init_attr="bias_initializer")
    elif isinstance(layer, BaseConv):
        ks = _shape(by_name["kernel"])
        g = int(getattr(layer, "groups", 1) or 1)
        true = compute_fans(ks, "keras", groups=g)
        keras_f = compute_fans(ks, "keras")
        f = {"true": true, "torch": Fans(true.fan_in, ks[-1] * true.receptive_field, true.receptive_field),
             "keras": keras_f, "flax": true}
        kind = "conv"
        add("kernel", "kernel", "keras", f, init_attr="kernel_initializer", groups=g)
        add("bias", "bias", "keras", f, init_attr="bias_initializer")
    elif isinstance(layer, L.Embedding):
        num, dim = _shape(by_name["embeddings"])
        f = {"true": Fans(num, dim, 1), "torch": Fans(dim, num, 1), "keras": Fans(num, dim, 1),
             "flax": Fans(dim, num, 1)}
        kind = "embedding"
        add("embeddings", "embedding", "keras", f, init_attr="embeddings_initializer", padding_idx=None)
        attrs["padding_idx"] = None
    elif isinstance(layer, (L.LSTMCell, L.GRUCell, L.SimpleRNNCell)):
        kind = "lstm" if isinstance(layer, L.LSTMCell) else "gru" if isinstance(layer, L.GRUCell) else "rnn"
        gates = KERAS_GATES[kind]
        units = int(layer.units)
        ks, rs = _shape(by_name["kernel"]), _shape(by_name["recurrent_kernel"])
        many = len(gates) > 1
        meta = {"hidden_size": units, "gates": gates}
        add("kernel", "kernel", "keras", _same(Fans(ks[0], ks[1], 1)),
            _gate_parts(ks, gates, units) if many else (), init_attr="kernel_initializer", **meta)
        add("recurrent_kernel", "recurrent_kernel", "keras", _same(Fans(rs[0], rs[1], 1)),
            _gate_parts(rs, gates, units) if many else (), init_attr="recurrent_initializer", **meta)
        if "bias" in by_name:
            bs = _shape(by_name["bias"])
            add("bias", "bias", "keras", _same(Fans(units, units, 1)),
                _gate_parts(bs, gates, units) if many else (), init_attr="bias_initializer",
                unit_forget_bias=bool(getattr(layer, "unit_forget_bias", False)), **meta)
        attrs.update(hidden_size=units, gates=gates, activation=getattr(layer, "activation", None))
    elif isinstance(layer, (L.BatchNormalization, L.LayerNormalization, L.GroupNormalization,
                            *((L.RMSNormalization,) if hasattr(L, "RMSNormalization") else ()))):
        kind = "norm"
        for vname, role, init_attr in (("gamma", "norm_scale", "gamma_initializer"),
                                       ("scale", "norm_scale", "scale_initializer"),
                                       ("beta", "norm_shift", "beta_initializer"),
                                       ("moving_mean", "norm_moving_mean", "moving_mean_initializer"),
                                       ("moving_variance", "norm_moving_var", "moving_variance_initializer")):
            add(vname, role, "keras", _same(None), init_attr=init_attr)
    elif isinstance(layer, L.PReLU):
        kind = "prelu"
        add("alpha", "prelu", "keras", _same(None), init_attr="alpha_initializer", init=0.25)
    else:
        return None
    return LayerInfo(kind, "keras", layer, tuple(params), attrs=attrs)


def keras_initializer(init: Any) -> Any:
    """An initlab :class:`~initlab.Initializer` equal to a Keras initializer object (seed dropped: plans
    seed by parameter path), or raise ValueError naming it."""
    from ..initializers import get

    keras = _keras()
    if init is None or keras is None:
        raise ValueError("initializer: no Keras initializer to convert.")
    cfg = keras.initializers.serialize(init)
    if not isinstance(cfg, dict) or "class_name" not in cfg:
        raise ValueError(f"initializer: cannot read the Keras initializer {init!r} (serialize gave {cfg!r}).")
    config = {k: v for k, v in (cfg.get("config") or {}).items() if k != "seed"}
    return get({"class_name": cfg["class_name"], "config": config})


def keras_activation_after(layer: Any) -> tuple[Any, str]:
    """The activation a Keras layer's output meets: its own ``activation`` unless that is linear, else
    the next activation layer (``Activation``, ``ReLU``, ``LeakyReLU``, ``ELU``, ``PReLU``, ``Softmax``) in
    the Keras graph, followed through ``Dropout``, normalization, reshaping and pooling layers.

    Returns ``(spec, via)``: ``spec`` is an activation name, a torch-callable, or ``None`` (linear)."""
    keras = _keras()
    L = keras.layers
    own = getattr(layer, "activation", None)
    own_name = getattr(own, "__name__", None)
    if own is not None and own_name not in (None, "linear"):
        if own_name == "leaky_relu":  # Keras's function default negative_slope is 0.2
            return ("leaky_relu", 0.2), f"the layer's activation='{own_name}'"
        return own, f"the layer's activation='{own_name}'"
    transparent = (L.Dropout, L.BatchNormalization, L.LayerNormalization, L.GroupNormalization, L.Flatten,
                   L.Reshape, L.Permute, L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D,
                   L.AveragePooling2D, L.AveragePooling3D, L.GlobalAveragePooling1D, L.GlobalAveragePooling2D,
                   L.GlobalAveragePooling3D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
                   L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianNoise)
    via: list[str] = []
    current = layer
    for _ in range(64):
        nodes = list(getattr(current, "_outbound_nodes", []) or [])
        if not nodes:
            break
        nxt = nodes[0].operation
        name = getattr(nxt, "name", type(nxt).__name__)
        if isinstance(nxt, L.LeakyReLU):
            slope = getattr(nxt, "negative_slope", getattr(nxt, "alpha", 0.3))
            return ("leaky_relu", float(slope)), " → ".join([*via, f"layer {name!r}"])
        if isinstance(nxt, L.ReLU) and not getattr(nxt, "negative_slope", 0.0) and not getattr(nxt, "max_value", None):
            return "relu", " → ".join([*via, f"layer {name!r}"])
        if isinstance(nxt, L.ELU):
            return ("elu", float(getattr(nxt, "alpha", 1.0))), " → ".join([*via, f"layer {name!r}"])
        if isinstance(nxt, L.PReLU):
            return ("leaky_relu", 0.0), " → ".join([*via, f"layer {name!r} (alpha 0 at init)"])
        if isinstance(nxt, L.Softmax):
            return "softmax", " → ".join([*via, f"layer {name!r}"])
        if isinstance(nxt, L.Activation):
            return nxt.activation, " → ".join([*via, f"layer {name!r}"])
        if isinstance(nxt, transparent):
            via.append(f"layer {name!r}")
            current = nxt
            continue
        return None, " → ".join([*via, f"its output goes straight into layer {name!r}"])
    return None, "the layer's activation=None" if not via else " → ".join(via)
