"""Reading every parameter from the op that uses it: role, layout and true fans, for modules initlab does not know.

:func:`trace_model` runs the model once on an example input (:func:`initlab.theory.dataflow.record_dataflow`:
no grad, eval mode, the model left exactly as it was, also on the meta device) and returns a
:class:`ModelTrace`: one :class:`ParamReading` per parameter tensor (tied names merged) and the residual
streams (:func:`initlab.theory.streams.find_streams`). :func:`initlab.plan` uses it when given
``example_input``: parameters of modules :func:`~initlab.plan.modules.module_info` does not know become
planned sites, with the law each preset gives a layer of the same role.

How an op and an operand position give the role (the first op that reads the parameter decides; later uses
of a tied tensor are listed):

==================================================  ==============  ===================================
use                                                 role            layout, fans
==================================================  ==============  ===================================
``linear(x, W, b)``                                 kernel / bias   torch (out, in); W.T: keras
``addmm(b, x, W)`` (HF ``Conv1D``)                  kernel / bias   keras (in, out): fan_in = W.shape[0]
``addmm(b, W, x)``                                  kernel          torch (out, in)
``matmul``/``mm``/``bmm`` ``(x, W)`` / ``(W, x)``     kernel          keras / torch (a view chain that
                                                                    swaps the last two axes flips it)
``einsum(eq, x, W)``                                kernel          fan_in = ∏ contracted axes, fan_out
                                                                    = ∏ axes only in W and the output
``conv*`` / ``conv_transpose*``                     kernel / bias   torch / torch_transposed, groups
``embedding(ids, W)``                               embedding       (num, dim)
``layer_norm``/``group_norm``/``rms_norm``/          norm_scale /    ones / zeros
``batch_norm``/``instance_norm`` weight / bias       norm_shift
``W * z``, z normalized (h·rsqrt(mean h²+ε),          norm_scale      ones
(h−μ)/√(var+ε), h/‖h‖, a norm function's output)
``(c + W) * z`` (Gemma)                             norm_offset_    1 − c (zeros for c = 1)
                                                    scale
``z' + b``, z' a scaled normalized tensor            norm_shift      zeros
1-D (or per-channel) ``b`` added after a kernel      bias            the kernel's fans
the same with no kernel before it                   shift           zeros
≥2-D param added, broadcast over the batch           position_       (positions, dim)
                                                    embedding
param concatenated (``cat``, after ``expand``)      token           (tokens, dim)
``gamma * branch`` on a residual branch             branch_scale    (a layer scale)
anything else                                       unknown         left as is, with the op seen
no op read it                                       unused          left as is
==================================================  ==============  ===================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..initializers.activations import activation
from ..initializers.fans import Fans
from ..theory.dataflow import (
    ADD,
    CONV,
    CONV_T,
    MATMUL,
    MUL,
    TRANSPARENT,
    Dataflow,
    OpNode,
    ParamUse,
    einsum_fans,
)
from ..theory.dataflow import record_dataflow as _record
from ..theory.streams import ResidualAdd, ResidualStream, find_streams, residual_streams
from .follow import NAMED_ACT_MODULES, _activation_of_call
from .layers import FansBy, LayerInfo, ParamInfo
from .modules import conv_fans, embedding_fans
from .sites import Follow

__all__ = ["ModelTrace", "ParamReading", "ResidualAdd", "ResidualStream", "read_params", "residual_streams",
           "trace_model"]

#: Roles a reading can have, and whether a plan can initialize a parameter of that role.
ROLES = ("kernel", "bias", "shift", "embedding", "position_embedding", "token", "norm_scale", "norm_offset_scale",
         "norm_shift", "branch_scale", "unknown", "unused")
_NORM_OPS = {"layer_norm", "group_norm", "rms_norm", "batch_norm", "instance_norm"}


@dataclass(frozen=True)
class ParamReading:
    """What the forward pass says about one parameter tensor.

    ``name``: its first name (``named_parameters`` order); ``aliases``: its other names (a tied tensor);
    ``role``: see the module docstring (``"unknown"``/``"unused"`` when it could not be read); ``kind``:
    the layer kind a preset treats it as (``"linear"`` for a 2-D dense kernel, ``"conv"``,
    ``"conv_transpose"``, ``"einsum"`` for other dense kernels, ``"embedding"``, ``"norm"``,
    ``"layer_scale"``); ``layout``: how it is stored (``"torch"`` (out, in), ``"keras"`` (in, out), …);
    ``fans``: the true fans (per output unit, groups respected); ``identity``: for a norm scale or shift
    and a branch scale, the value that makes its op the identity; ``kernel``: for a bias, the kernel it
    belongs to; ``groups``: a convolution's groups; ``uses``: every op that read it, in order;
    ``how``: how it was recognised, in words (what a plan's ``why`` says).
    """

    name: str
    aliases: tuple[str, ...]
    shape: tuple[int, ...]
    role: str
    how: str
    uses: tuple[ParamUse, ...] = ()
    kind: str | None = None
    layout: str | None = None
    fans: Fans | None = None
    identity: float | None = None
    kernel: str | None = None
    groups: int = 1

    @property
    def understood(self) -> bool:
        return self.role not in ("unknown", "unused")

    @property
    def modules(self) -> tuple[str, ...]:
        """The modules whose forward read it, in order, each once."""
        return tuple(dict.fromkeys(u.module for u in self.uses))

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(u.position for u in self.uses))


@dataclass
class ModelTrace:
    """One forward pass, read: ``readings`` (first name -> :class:`ParamReading`), ``streams`` (the residual
    streams), ``flow`` (the raw :class:`~initlab.theory.dataflow.Dataflow`)."""

    readings: dict[str, ParamReading]
    streams: list[ResidualStream]
    flow: Dataflow = field(repr=False)

    def reading(self, name: str) -> ParamReading:
        """The reading of parameter ``name`` (any of a tied tensor's names)."""
        return self.readings[self.flow.name_of(name)]

    def residual_add(self, name: str) -> ResidualAdd | None:
        """The residual add whose branch ``name`` is the output projection of (any name of the tensor)."""
        first = self.flow.name_of(name)
        return next((a for s in self.streams for a in s.adds if a.out_proj == first), None)

    def follow(self, name: str) -> Follow:
        """The activation that follows kernel ``name``'s first op (through views, dropout, a bias add, norms
        and pooling, as :mod:`initlab.plan.follow` does for known layers)."""
        r = self.reading(name)
        if not r.uses:
            raise ValueError(f"name: {name!r} was not used in the traced forward.")
        return _follow(self.flow, r.uses[0].node)

    def alias_text(self, name: str) -> str:
        """``"tied: also lm_head.weight (used by linear in lm_head as the readout)"``, or ``""``."""
        r = self.reading(name)
        if not r.aliases:
            return ""
        parts = []
        for alias in r.aliases:
            owner = alias.rpartition(".")[0]
            use = next((u for u in r.uses if u.module == owner), None)
            if use is None:
                parts.append(alias)
                continue
            readout = " as the readout (its output is the model's output)" if _is_output(self.flow, use.node) else ""
            parts.append(f"{alias} (used by {use.position} in {use.module or '<model>'}{readout})")
        return "tied: also " + ", ".join(parts) + "; one tensor, initialized once"


def trace_model(model: nn.Module, example_input: Any) -> ModelTrace:
    """Run ``model`` once on ``example_input`` and read every parameter and the residual streams.

    >>> import torch
    >>> class Scale(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.w = torch.nn.Parameter(torch.ones(4))
    ...     def forward(self, x):
    ...         return self.w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
    >>> t = trace_model(torch.nn.Sequential(torch.nn.Linear(3, 4), Scale()), torch.randn(2, 3))
    >>> t.readings["1.w"].role, t.readings["0.weight"].fans
    ('norm_scale', Fans(fan_in=3, fan_out=4, receptive_field=1))
    """
    flow = _record(model, example_input)
    streams = find_streams(flow)
    return ModelTrace(read_params(flow, streams), streams, flow)


def read_params(flow: Dataflow, streams: list[ResidualStream] | None = None) -> dict[str, ParamReading]:
    """A :class:`ParamReading` for every parameter tensor of a recorded dataflow (``streams`` lets a
    layer scale on a residual branch be read as one)."""
    scales = {p for s in streams or () for a in s.adds for p in a.out_scales}
    out: dict[str, ParamReading] = {}
    for name, names in flow.names.items():
        shape = tuple(int(d) for d in flow.params[name].shape)
        out[name] = _read(flow, name, names[1:], shape, tuple(flow.uses.get(name, ())), scales)
    return out


# ---- one parameter ------------------------------------------------------------------------------------

def _where(flow: Dataflow, u: ParamUse) -> str:
    t = flow.module_types.get(u.module, "")
    return f"{u.module} ({t})" if u.module else f"the model ({t})"


def _flips(via: tuple[str, ...]) -> bool:
    """Whether a view chain swaps the last two axes of the parameter."""
    flip = False
    for c in via:
        if c in ("t", "T", "mT", "H", "mH"):
            flip = not flip
        elif c.startswith("transpose("):
            ax = sorted(int(x) for x in c[len("transpose("):-1].split(","))
            if ax in ([-2, -1], [0, 1]):
                flip = not flip
        elif c.startswith("permute("):
            ax = [int(x) for x in c[len("permute("):-1].split(",") if x.strip()]
            if len(ax) >= 2 and ax[-2:] == [len(ax) - 1, len(ax) - 2]:
                flip = not flip
    return flip


def _dense(seen: tuple[int, ...], in_axis: int, out_axis: int, flip: bool, stored_keras: bool) -> tuple[Fans, str]:
    layout = "keras" if stored_keras != flip else "torch"
    return Fans(int(seen[in_axis]), int(seen[out_axis]), 1), layout


def _kernel_of(flow: Dataflow, node: int, skip: str) -> str | None:
    """The kernel read by node ``node`` (other than ``skip``), or by the op whose output it adds to."""
    n = flow.nodes[node]
    if n.kernel is not None and n.kernel != skip:
        return n.kernel
    for j in n.inputs:
        k = j
        for _ in range(16):
            m = flow.nodes[k]
            if m.kernel is not None:
                return m.kernel
            if m.op not in TRANSPARENT or not m.inputs:
                break
            k = m.inputs[0]
    return None


def _readers(flow: Dataflow, node: int) -> list[OpNode]:
    """The ops that read node's output, through views and casts (which are not listed themselves)."""
    cons = flow.consumers()
    stack, seen, out = list(cons[node]), set(), []
    while stack:
        j = stack.pop()
        if j in seen:
            continue
        seen.add(j)
        if flow.nodes[j].op in TRANSPARENT:
            stack.extend(cons[j])
        else:
            out.append(flow.nodes[j])
    return out


def _offset_scale(flow: Dataflow, node: int) -> bool:
    """Whether the output of ``c + w`` (node) is multiplied by a normalized tensor (Gemma's (1 + w)·z)."""
    return any(m.op in MUL and "norm_scaled" in m.tags for m in _readers(flow, node))


def _broadcast_over_batch(pshape: tuple[int, ...], oshape: tuple[int, ...] | None) -> bool:
    """A learned additive embedding: broadcast over the batch (fewer dims, or a leading 1)."""
    if not oshape or len(oshape) < 2:
        return False
    if len(pshape) < len(oshape):
        return tuple(pshape) == tuple(oshape[len(oshape) - len(pshape):])
    return (len(pshape) == len(oshape) and pshape[0] == 1 and oshape[0] != 1
            and tuple(pshape[1:]) == tuple(oshape[1:]))


def _per_channel(shape: tuple[int, ...]) -> bool:
    return sum(d != 1 for d in shape) <= 1


def _read(flow: Dataflow, name: str, aliases: tuple[str, ...], shape: tuple[int, ...], uses: tuple[ParamUse, ...],
          scales: set[str]) -> ParamReading:
    def reading(role: str, how: str, **kw: Any) -> ParamReading:
        return ParamReading(name, aliases, shape, role, how, uses, **kw)

    if not uses:
        return reading("unused", "no op read it when example_input ran through the model (an unused head or "
                       "branch?)")
    u = uses[0]
    op, slot, seen, where = u.op, u.operand, u.shape, _where(flow, u)
    flip = _flips(u.via)
    view = f" (as W{''.join('.' + c for c in u.via)})" if u.via else ""
    if op == "linear" and slot == "weight" and len(seen) == 2:
        fans, layout = _dense(seen, 1, 0, flip, False)
        return reading("kernel", f"used as linear(x, W, b){view} by {where}: a dense kernel in {layout} layout, "
                       f"fan_in {fans.fan_in}", kind="linear", layout=layout, fans=fans)
    if op == "addmm" and slot in ("mat1", "mat2") and len(seen) == 2:
        # addmm(b, x, W) = b + x @ W: W is (in, out); addmm(b, W, x): W is (out, in)
        form = "addmm(b, x, W)" if slot == "mat2" else "addmm(b, W, x)"
        fans, layout = _dense(seen, 0, 1, flip, True) if slot == "mat2" else _dense(seen, 1, 0, flip, False)
        shape_word = "(in, out)" if layout == "keras" else "(out, in)"
        return reading("kernel", f"used as {form}{view} by {where}: a dense kernel in {layout.capitalize()} "
                       f"layout {shape_word}, fan_in {fans.fan_in}", kind="linear", layout=layout, fans=fans)
    if op in MATMUL and slot in (0, 1) and len(seen) >= 2:
        fans, layout = _dense(seen, -2, -1, flip, True) if slot == 1 else _dense(seen, -1, -2, flip, False)
        fn = "matmul" if op == "__matmul__" else op
        form = f"{fn}(x, W)" if slot == 1 else f"{fn}(W, x)"
        batched = len(seen) > 2
        return reading("kernel", f"used as {form}{view} by {where}: a {'batched ' if batched else ''}dense kernel "
                       f"in {layout} layout, fan_in {fans.fan_in}{' per matrix' if batched else ''}",
                       kind="einsum" if batched else "linear", layout=layout, fans=fans)
    if op == "einsum" and isinstance(slot, int) and u.equation:
        f = einsum_fans(u.equation, slot, seen)
        if f is not None and f[0] > 0 and f[1] > 0:
            return reading("kernel", f"used as einsum({u.equation!r}) operand {slot} by {where}: a dense kernel, "
                           f"fan_in {f[0]} (its contracted axes), fan_out {f[1]}", kind="einsum", layout="keras",
                           fans=Fans(f[0], f[1], 1))
    if (op in CONV or op in CONV_T) and slot == "weight":
        transposed = op in CONV_T
        by = conv_fans(seen, u.groups, transposed)
        fans = by["true"]
        g = f", groups {u.groups}" if u.groups > 1 else ""
        return reading("kernel", f"used as {op}(x, W){view} by {where}: a convolution kernel{g}, fan_in "
                       f"{fans.fan_in}", kind="conv_transpose" if transposed else "conv",
                       layout="torch_transposed" if transposed else "torch", fans=fans, groups=u.groups)
    if (op == "addmm" and slot == "input") or ((op == "linear" or op in CONV or op in CONV_T) and slot == "bias"):
        k = _kernel_of(flow, u.node, name)
        return reading("bias", f"the bias of {op} by {where}", kind=op, kernel=k)
    if op == "multi_head_attention_forward" and isinstance(slot, str) and len(seen) == 2 and slot.endswith("weight"):
        fans = Fans(int(seen[1]), int(seen[0]), 1)
        return reading("kernel", f"the {slot} of multi_head_attention_forward in {where}: a dense kernel in torch "
                       f"layout, fan_in {fans.fan_in}", kind="linear", layout="torch", fans=fans)
    if op == "multi_head_attention_forward" and isinstance(slot, str) and slot.endswith("bias") and len(seen) == 1:
        return reading("bias", f"the {slot} of multi_head_attention_forward in {where}", kind="linear",
                       kernel=name.rsplit(".", 1)[0] + ".weight" if slot == "out_proj_bias" else None)
    if op in ("embedding", "embedding_bag") and slot == "weight" and len(seen) == 2:
        return reading("embedding", f"used as {op}(ids, W) by {where}: an embedding table (num, dim) = "
                       f"{tuple(seen)}", kind="embedding", layout="torch", fans=Fans(seen[0], seen[1], 1))
    if op in _NORM_OPS and slot in ("weight", "bias"):
        role = "norm_scale" if slot == "weight" else "norm_shift"
        return reading(role, f"the {slot} of {op} in {where}: a normalization {'scale' if slot == 'weight' else 'shift'}",
                       kind="norm", identity=1.0 if slot == "weight" else 0.0)
    if op in MUL and u.other in ("normalized", "norm_scaled"):
        return reading("norm_scale", f"used as {u.position}: multiplies a normalized tensor in {where} (an "
                       "RMSNorm/LayerNorm scale written out)", kind="norm", identity=1.0)
    if op in ADD and u.scalar is not None and _offset_scale(flow, u.node):
        ident = 1.0 - u.scalar
        return reading("norm_offset_scale", f"({u.scalar:g} + W) multiplies a normalized tensor in {where} "
                       f"(a Gemma-style norm scale): W = {ident:g} is the identity", kind="norm", identity=ident)
    if op in ADD and u.other in ("normalized", "norm_scaled") and _per_channel(shape):
        return reading("norm_shift", f"added to a normalized tensor in {where}: a normalization shift", kind="norm",
                       identity=0.0)
    if op in ADD and u.other == "activation" and _per_channel(shape):
        k = _kernel_of(flow, u.node, name)
        if k is not None:
            return reading("bias", f"added to the output of kernel {k} in {where}: its bias", kind="bias", kernel=k)
        return reading("shift", f"added to an activation with no kernel before it in {where}: a shift",
                       kind="norm", identity=0.0)
    if op in ADD and u.other == "activation" and len(shape) >= 2 and _broadcast_over_batch(shape, u.other_shape):
        n = math.prod(shape[:-1])
        return reading("position_embedding", f"added to the activations in {where}, broadcast over the batch: a "
                       f"learned additive embedding ({n} positions × {shape[-1]})", kind="embedding",
                       layout="torch", fans=Fans(n, shape[-1], 1))
    if op == "cat" and len(shape) >= 2:
        n = math.prod(shape[:-1])
        return reading("token", f"concatenated into the sequence in {where}{view}: a learned token ({n} × "
                       f"{shape[-1]}, e.g. a CLS token)", kind="embedding", layout="torch", fans=Fans(n, shape[-1], 1))
    if name in scales and op in MUL:
        return reading("branch_scale", f"multiplies the output of a residual branch in {where} (gamma · branch: a "
                       "layer scale, Touvron et al. 2021)", kind="layer_scale", identity=1.0)
    what = {"activation": " with a plain activation" + (" (a layer scale?)" if op in MUL else ""),
            "parameter": " with another parameter"}.get(u.other or "", "")
    return reading("unknown", f"first used by {u.position}{view}{what} in {u.module or 'the model'}")


# ---- layer knowledge for a plan ---------------------------------------------------------------------

_AS = {"linear": "nn.Linear", "einsum": "nn.Linear", "embedding": "nn.Embedding", "norm": "nn.LayerNorm"}
# ParamInfo roles the presets know, for each reading role (the others are handled by presets/common.py).
_PLAN_ROLE = {"kernel": "kernel", "bias": "bias", "embedding": "embedding", "position_embedding": "embedding",
              "token": "embedding", "norm_scale": "norm_scale", "norm_shift": "norm_shift"}


def _same(f: Fans | None) -> FansBy:
    return {"true": f, "torch": f, "keras": f, "flax": f}


def _equivalent(kind: str, shape: tuple[int, ...], groups: int) -> str:
    if kind in ("conv", "conv_transpose"):
        nd = max(1, len(shape) - 2)
        return f"nn.Conv{'Transpose' if kind == 'conv_transpose' else ''}{nd}d"
    return _AS.get(kind, "")


def layer_info(reading: ParamReading, module: nn.Module, trace: ModelTrace) -> LayerInfo | None:
    """A :class:`LayerInfo` for a parameter that only the trace understands (``None`` if it does not):
    the role, fans and layout a preset reads, with ``attrs["traced"] = True``, ``attrs["as"]`` (the torch
    layer a preset treats it like, e.g. ``"nn.Linear"``) and ``meta["reading"]`` (the reading itself)."""
    r = reading
    if not r.understood:
        return None
    role, kind = _PLAN_ROLE.get(r.role, r.role), r.kind or ""
    kern = trace.reading(r.kernel) if r.role == "bias" and r.kernel else None
    fans: FansBy
    if r.role == "kernel" and kind in ("conv", "conv_transpose"):
        fans = conv_fans(r.shape, r.groups, kind == "conv_transpose")
    elif r.role in ("embedding", "position_embedding", "token") and r.fans is not None:
        fans = embedding_fans(r.fans.fan_in, r.fans.fan_out)
    elif r.role == "bias":
        if kern is None or kern.fans is None:
            return None
        kind = kern.kind or kind
        fans = conv_fans(kern.shape, kern.groups, kind == "conv_transpose") if kind.startswith("conv") \
            else _same(kern.fans)
    else:
        fans = _same(r.fans)
    shape = tuple(r.shape)
    attrs: dict[str, Any] = {"traced": True, "as": _equivalent(kind, kern.shape if kern else shape, r.groups)}
    if kind == "conv":
        g = kern.groups if kern else r.groups
        attrs["groups"] = g
        attrs["depthwise"] = g > 1 and r.fans is not None and r.role == "kernel" and r.shape[1] == 1
    layout = r.layout or (kern.layout if kern else None) or "torch"
    meta = {"reading": r, "recognised": r.how, "identity": r.identity}
    info = ParamInfo(r.name.rpartition(".")[2], role, shape, layout, fans, meta=meta)
    return LayerInfo(kind, "torch", module, (info,), attrs=attrs)


# ---- the activation after a traced kernel ------------------------------------------------------------

def _is_output(flow: Dataflow, node: int) -> bool:
    """Whether node's output reaches no op but views: the model's output."""
    return not _readers(flow, node)


def _follow(flow: Dataflow, start: int) -> Follow:
    cons = flow.consumers()
    via: list[str] = []
    i = start
    for _ in range(64):
        nxt = cons[i]
        if not nxt:
            return Follow(activation("linear"), "its output is the model's output")
        j = nxt[0]
        n = flow.nodes[j]
        if n.op in ADD and any(flow.is_param_like(k) for k in n.inputs) and len(n.inputs) == 2:
            via.append(f"{n.op}() (its bias)")
            i = j
            continue
        named = NAMED_ACT_MODULES.get(flow.module_types.get(n.module, ""))
        if named is not None:  # an activation module that writes its function out (HF's NewGELUActivation)
            return Follow(activation(named), " → ".join([*via, f"{n.module} ({flow.module_types[n.module]})"]))
        cls, act = _activation_of_call("function", n.op, n.args, n.kwargs)
        if cls == "act" and act is not None:
            return Follow(act, " → ".join([*via, f"{n.op}()"]))
        if cls == "transparent" or n.op in TRANSPARENT:
            via.append(f"{n.op}()")
            i = j
            continue
        return Follow(activation("linear"), f"its output goes straight into {n.op}() in {n.module or 'the model'}")
    return Follow(activation("linear"), "its output goes through more than 64 views")
