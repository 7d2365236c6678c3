"""Finding the activation after each layer: the tracer behind ``ctx.activation_after`` and ``auto``.

With an example input the model runs once (no grad, eval mode, training flags and RNG restored) with hooks on every
module and a ``TorchFunctionMode`` that records functional calls; without one it is traced with
``torch.fx``. Either way the layer's output is followed through shape ops, dropout, norms and pooling to
the first call that consumes it. Keras layers carry their own ``activation``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..initializers import activations as _acts
from ..initializers.activations import Activation, activation
from ..theory.dataflow import call_model, forward_pass
from .layers import LayerInfo
from .sites import Follow, ParamSite

__all__ = ["NAMED_ACT_MODULES", "find_followers"]


_ACT_FUNCS = {
    "relu", "relu6", "leaky_relu", "gelu", "silu", "mish", "elu", "selu", "celu", "softplus", "softsign",
    "hardtanh", "hardswish", "hardsigmoid", "logsigmoid", "tanhshrink", "tanh", "sigmoid", "rrelu",
}
_OUTPUT_FUNCS = {"softmax", "log_softmax"}
_TRANSPARENT_FUNCS = {
    "view", "reshape", "flatten", "unflatten", "permute", "transpose", "contiguous", "squeeze", "unsqueeze",
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout", "to", "float",
    "clone", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "layer_norm", "batch_norm", "group_norm", "rms_norm",
    "instance_norm", "pad", "type_as", "detach",
}
_TRANSPARENT_MODULES: tuple[type, ...] = (
    nn.modules.dropout._DropoutNd, nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.batchnorm._NormBase,
    nn.LayerNorm, nn.GroupNorm, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
_ACT_MODULES: tuple[type, ...] = tuple(t for t in _acts._MODULE_TYPES if t is not nn.Identity)
_OUTPUT_MODULES: tuple[type, ...] = (nn.Softmax, nn.LogSoftmax)
#: Activation modules of other libraries, by class name (transformers.activations): several write their
#: function out (NewGELUActivation is 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))), so their ops alone would
#: read as a multiplication.
NAMED_ACT_MODULES: dict[str, str] = {
    "NewGELUActivation": "gelu_tanh", "FastGELUActivation": "gelu_tanh", "GELUTanh": "gelu_tanh",
    "PytorchGELUTanh": "gelu_tanh", "AccurateGELUActivation": "gelu_tanh", "GELUActivation": "gelu",
    "ClippedGELUActivation": "gelu", "SiLUActivation": "silu", "MishActivation": "mish",
    "LinearActivation": "linear",
}


def _named_act_module(m: Any) -> bool:
    return isinstance(m, nn.Module) and type(m).__name__ in NAMED_ACT_MODULES


def _func_name(f: Any) -> str:
    name = f if isinstance(f, str) else (getattr(f, "__name__", "") or "")
    return name[:-1] if name.endswith("_") and not name.endswith("__") else name  # relu_ -> relu


def _activation_of_call(kind: str, target: Any, args: tuple, kwargs: dict) -> tuple[str, Activation | None]:
    """Classify one call: ("act", Activation) | ("transparent", None) | ("other", None)."""
    if kind == "module":
        if isinstance(target, _OUTPUT_MODULES):
            return "act", Activation(type(target).__name__.lower(), lambda x: x, "linear")
        if isinstance(target, _ACT_MODULES):
            return "act", activation(target)
        if _named_act_module(target):
            return "act", activation(NAMED_ACT_MODULES[type(target).__name__])
        if isinstance(target, _TRANSPARENT_MODULES):
            return "transparent", None
        return "other", None
    name = _func_name(target)
    if name in _OUTPUT_FUNCS:
        return "act", Activation(name, lambda x: x, "linear")
    if name in _ACT_FUNCS:
        if name == "leaky_relu":
            slope = kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)
            return "act", activation("leaky_relu", float(slope))
        if name == "elu":
            alpha = kwargs.get("alpha", args[1] if len(args) > 1 else 1.0)
            return "act", activation("elu", float(alpha))
        if name == "gelu" and (kwargs.get("approximate") == "tanh" or (len(args) > 1 and args[1] == "tanh")):
            return "act", activation("gelu_tanh")
        if name == "rrelu":
            return "act", activation("leaky_relu", (1 / 8 + 1 / 3) / 2)
        return "act", activation(name)
    if name in _TRANSPARENT_FUNCS:
        return "transparent", None
    return "other", None


@dataclass
class _Event:
    kind: str  # "module" | "function"
    target: Any
    inputs: set[int]
    outputs: set[int]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    name: str = ""


def _describe_target(ev: _Event, names: dict[int, str]) -> str:
    if ev.kind == "module":
        return f"module {names.get(id(ev.target), type(ev.target).__name__)!r}"
    return f"{_func_name(ev.target)}()"


def _follow_from(events: list[_Event], start: int, names: dict[int, str]) -> Follow:
    frontier = set(events[start].outputs)
    via: list[str] = []
    for ev in events[start + 1:]:
        if not (ev.inputs & frontier):
            continue
        if ev.target == "output":
            break
        cls, act = _activation_of_call(ev.kind, ev.target, ev.args, ev.kwargs)
        if cls == "act":
            return Follow(act, " → ".join([*via, _describe_target(ev, names)]))
        if cls == "transparent":
            via.append(_describe_target(ev, names))
            frontier |= ev.outputs
            continue
        return Follow(activation("linear"), f"its output goes straight into {_describe_target(ev, names)}")
    return Follow(activation("linear"), "its output is the model's output")


def _flat_tensors(x: Any, out: list) -> list:
    if isinstance(x, torch.Tensor):
        out.append(x)
    elif isinstance(x, (list, tuple)):
        for y in x:
            _flat_tensors(y, out)
    elif isinstance(x, dict):
        for y in x.values():
            _flat_tensors(y, out)
    return out


def find_followers(model: nn.Module, sites: list[ParamSite], example_input: Any = None) -> dict[int, Follow]:
    """For each known torch layer (by ``id(module)``) the activation its output meets first.

    With ``example_input``: one forward pass (no grad, eval mode, training flags restored) with hooks on
    every module and a ``TorchFunctionMode`` that records functional calls (``F.relu``, ``x.tanh()``)
    made outside the known layers; the output tensors are followed through shape ops, dropout, norms and
    pooling to the first consumer. Without it: ``torch.fx`` symbolic tracing with the known layers as leaves.
    """
    layers = {id(s.layer.module): s.layer for s in sites if s.layer is not None and s.layer.framework == "torch"}
    names = {id(m): n for n, m in model.named_modules()}
    if example_input is not None:
        events = _events_by_running(model, layers, example_input)
    else:
        events = _events_by_fx(model, layers)
    out: dict[int, Follow] = {}
    for i, ev in enumerate(events):
        if ev.kind == "module" and id(ev.target) in layers and id(ev.target) not in out:
            out[id(ev.target)] = _follow_from(events, i, names)
    # The recorder's closures hold this list until the garbage collector breaks their cycle; its events hold
    # the call arguments — views of parameters among them, which keep torch.utils.swap_tensors (Plan.apply
    # on a meta model) from swapping those parameters.
    events.clear()
    return out


def _events_by_running(model: nn.Module, layers: dict[int, LayerInfo], example_input: Any) -> list[_Event]:
    from torch.overrides import TorchFunctionMode

    events: list[_Event] = []
    keep: list[torch.Tensor] = []  # keep every seen tensor alive so ids stay unique
    depth = [0]

    def opaque(m: nn.Module) -> bool:
        return id(m) in layers or isinstance(m, (*_ACT_MODULES, *_TRANSPARENT_MODULES, *_OUTPUT_MODULES)) \
            or _named_act_module(m)

    def pre(m, args):
        if opaque(m):
            depth[0] += 1

    def post(m, args, kwargs, output):
        if not opaque(m):
            return
        depth[0] -= 1
        if depth[0] == 0:
            ins = _flat_tensors(args, []) + _flat_tensors(kwargs, [])
            outs = _flat_tensors(output, [])
            keep.extend(ins)
            keep.extend(outs)
            events.append(_Event("module", m, {id(t) for t in ins}, {id(t) for t in outs}))

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            result = func(*args, **kwargs)
            if depth[0] == 0:
                ins = _flat_tensors(args, []) + _flat_tensors(kwargs, [])
                outs = _flat_tensors(result, [])
                if ins and outs:
                    keep.extend(ins)
                    keep.extend(outs)
                    events.append(_Event("function", func, {id(t) for t in ins}, {id(t) for t in outs},
                                         tuple(args), kwargs))
            return result

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post, with_kwargs=True))
    try:
        with forward_pass(model, handles), Recorder():
            call_model(model, example_input)
    finally:
        keep.clear()  # (see find_followers: the closures' cycle would hold these tensors until collected)
    return events


def _events_by_fx(model: nn.Module, layers: dict[int, LayerInfo]) -> list[_Event]:
    import torch.fx as fx

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return id(m) in layers or isinstance(m, (*_ACT_MODULES, *_TRANSPARENT_MODULES, *_OUTPUT_MODULES)) \
                or _named_act_module(m) or super().is_leaf_module(m, qualname)

    try:
        graph = Tracer().trace(model)
    except Exception as e:
        raise ValueError(
            f"example_input: preset 'auto' needs the activation after each layer, and torch.fx could not trace "
            f"{type(model).__name__} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); pass "
            "example_input=<a batch the model accepts> so initlab can run it with hooks instead."
        ) from e
    events = []
    for node in graph.nodes:
        ins = {id(n) for n in node.all_input_nodes}
        if node.op == "call_module":
            events.append(_Event("module", model.get_submodule(node.target), ins, {id(node)}))
        elif node.op in ("call_function", "call_method"):
            events.append(_Event("function", node.target, ins, {id(node)}, tuple(node.args), dict(node.kwargs)))
        elif node.op == "output":
            events.append(_Event("function", "output", ins, set()))
    return events


def _keras_follow(layer: LayerInfo) -> Follow:
    from .keras import keras_activation_after

    spec, via = keras_activation_after(layer.module)
    if spec is None:
        return Follow(activation("linear"), via)
    if isinstance(spec, tuple):
        return Follow(activation(spec[0], spec[1]), via)
    name = spec if isinstance(spec, str) else getattr(spec, "__name__", None)
    if name in ("softmax", "log_softmax"):
        return Follow(Activation(name, lambda x: x, "linear"), via)
    try:
        return Follow(activation(name), via)
    except (ValueError, TypeError):
        return Follow(activation(spec), via)  # any other callable: the gain is computed numerically
