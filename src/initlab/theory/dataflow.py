"""The dataflow of one forward pass, op by op: which torch function consumed each parameter, in which
operand position and through which views, and the graph of activations between the ops.

:func:`record_dataflow` runs the model once on an example input (no grad, eval mode; the training flags,
the RNG state and the hooks are exactly as before afterwards, also when it fails) under a
``torch.overrides.TorchFunctionMode`` with forward hooks on every module for the context. The mode sees
Python-level calls — ``F.linear``, ``torch.addmm``, ``x @ W.T``, ``torch.einsum``, ``F.embedding``,
``F.layer_norm``, ``w * h`` — not the aten ops beneath them, which is what reading a parameter's role
needs: ``nn.Linear`` is ``linear(x, W, b)``, not ``t`` + ``addmm``. It works on the meta device too.

Two records come out (:class:`Dataflow`):

- per parameter tensor (tied names merged under the first name), its :class:`ParamUse` s in order: the op,
  the operand slot (``"weight"`` of ``linear``, ``"mat2"`` of ``addmm``, ``1`` of ``mul``), the view chain
  applied first (``("T",)``, ``("reshape",)``) and, for elementwise ops, what the other operand was —
  ``"normalized"`` when it is ``h·rsqrt(mean(h²)+ε)``, ``(h−μ)/√(var+ε)``, ``h/‖h‖`` or the output of a
  norm function (manual RMSNorm/LayerNorm are recognised this way);
- one :class:`OpNode` per op: its activation inputs (node indices), the parameters it read, the module
  whose forward ran it, and for each two-activation add the mean squares of both operands and the sum
  (what the residual-stream analysis of :mod:`initlab.theory.streams` reads).

Limits: only ops reached from Python are seen (a custom C++/CUDA op, a scripted or compiled module is one
opaque op), only the path the example input takes is recorded, and a parameter that no op read is
"unused". Tensors are tracked by identity while they live (a weak reference drops each one when it is
freed), so the recording holds no activations beyond what the forward itself holds.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["Dataflow", "OpNode", "ParamUse", "call_model", "forward_pass", "record_dataflow"]

#: Ops through which a tensor keeps its identity (a view, a cast, dropout in eval): a parameter seen through
#: them is still that parameter, with the op appended to its view chain.
TRANSPARENT = frozenset({
    "t", "T", "mT", "H", "mH", "transpose", "permute", "view", "reshape", "contiguous", "to", "type", "type_as",
    "float", "half", "bfloat16", "double", "expand", "expand_as", "unsqueeze", "squeeze", "flatten",
    "unflatten", "clone", "detach", "__getitem__", "view_as", "reshape_as", "dropout", "dropout1d", "dropout2d",
    "dropout3d", "alpha_dropout", "feature_alpha_dropout", "cpu", "cuda", "requires_grad_", "data",
    "movedim", "swapaxes", "narrow",
    # Tensor parallelism's row-parallel output: the partial sums of one value summed over the ranks (the
    # functional collective and its wrappers), the same activation as on one process.
    "all_reduce", "wait_tensor", "_wrap_tensor_autograd.default",
})
#: Metadata queries: not ops on values, not recorded.
_QUERIES = frozenset({
    "size", "dim", "ndim", "numel", "__len__", "is_floating_point", "__bool__", "item", "stride", "data_ptr",
    "is_contiguous", "element_size", "get_device", "__format__", "__repr__", "dtype", "shape", "device",
    "is_complex", "tolist", "_version", "requires_grad", "is_meta", "is_cuda", "grad", "layout", "names",
    "__hash__", "_is_view", "untyped_storage", "storage_offset", "nbytes", "itemsize", "is_sparse",
    "is_quantized", "__index__", "__int__", "__float__", "__iter__", "is_nested", "is_inference",
})
NORM_FUNCS = frozenset({"layer_norm", "group_norm", "rms_norm", "batch_norm", "instance_norm", "normalize",
                        "local_response_norm"})
ADD = frozenset({"add", "__add__", "__radd__", "__iadd__", "add_"})
MUL = frozenset({"mul", "__mul__", "__rmul__", "__imul__", "mul_", "multiply"})
DIV = frozenset({"div", "__truediv__", "__itruediv__", "div_", "true_divide", "divide"})
SUB = frozenset({"sub", "__sub__", "__rsub__", "__isub__", "sub_", "subtract"})
MATMUL = frozenset({"matmul", "__matmul__", "__rmatmul__", "mm", "bmm"})
CONV = frozenset({"conv1d", "conv2d", "conv3d"})
CONV_T = frozenset({"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"})

# Operand slot names of the ops whose parameters have a fixed meaning (positional or keyword).
_SLOTS: dict[str, tuple[str, ...]] = {
    "linear": ("input", "weight", "bias"),
    "bilinear": ("input1", "input2", "weight", "bias"),
    "addmm": ("input", "mat1", "mat2"),
    "embedding": ("input", "weight"),
    "embedding_bag": ("input", "weight"),
    "layer_norm": ("input", "normalized_shape", "weight", "bias"),
    "group_norm": ("input", "num_groups", "weight", "bias"),
    "rms_norm": ("input", "normalized_shape", "weight"),
    "batch_norm": ("input", "running_mean", "running_var", "weight", "bias"),
    "instance_norm": ("input", "running_mean", "running_var", "weight", "bias"),
    "multi_head_attention_forward": torch.nn.functional.multi_head_attention_forward.__code__.co_varnames[:20],
    **{c: ("input", "weight", "bias") for c in CONV | CONV_T},
}
#: (op, slot) pairs where a parameter acts as a kernel (a matrix the activations are multiplied by).
_KERNEL_SLOTS = {("linear", "weight"), ("bilinear", "weight"), ("addmm", "mat1"), ("addmm", "mat2"),
                 ("multi_head_attention_forward", "out_proj_weight"),
                 *((c, "weight") for c in CONV | CONV_T)}
_BIAS_SLOTS = {("linear", "bias"), ("bilinear", "bias"), ("addmm", "input"),
               ("multi_head_attention_forward", "out_proj_bias"), *((c, "bias") for c in CONV | CONV_T)}
_CONV_GROUPS_POS = 6  # F.convNd(input, weight, bias, stride, padding, dilation, groups); transposed: same index


def op_name(func: Any) -> str:
    """The name of a torch function as the mode sees it (a property such as ``Tensor.T`` by its own name)."""
    name = getattr(func, "__name__", None) or str(func)
    if name == "__get__":
        owner = getattr(func, "__self__", None)
        name = getattr(owner, "__name__", name)
    return name


def slot(op: str, operand: int | str) -> int | str:
    """An operand's slot name for ops with named operands (``linear`` 1 -> ``"weight"``), else the index."""
    names = _SLOTS.get(op)
    if names is not None and isinstance(operand, int) and operand < len(names):
        return names[operand]
    return operand


@dataclass(frozen=True)
class ParamUse:
    """One op that read a parameter.

    ``operand``: the slot (``"weight"``, ``"mat2"``) or positional index (``1`` of ``mul``; for ``einsum``,
    the index among the equation's operands); ``via``: the view chain applied to the parameter first;
    ``shape``: the operand's shape as the op saw it; ``module``: the innermost module whose forward ran
    (``""`` for the model itself); ``other``: for elementwise ops with a second tensor, what it was —
    ``"normalized"``, ``"norm_scaled"`` (a normalized tensor times a scale), ``"parameter"`` or
    ``"activation"``; ``scalar``: the Python number of an elementwise op (``1 + w``).
    """

    op: str
    operand: int | str
    via: tuple[str, ...]
    shape: tuple[int, ...]
    module: str
    node: int
    other: str | None = None
    other_shape: tuple[int, ...] | None = None
    scalar: float | None = None
    equation: str | None = None
    groups: int = 1

    @property
    def position(self) -> str:
        """``addmm[mat2]``, ``mul[1]``: the op and the operand."""
        return f"{self.op}[{self.operand}]"

    def __str__(self) -> str:
        chain = "".join(f".{c}" for c in self.via)
        other = f" with a {self.other} tensor" if self.other else f" with {self.scalar:g}" if self.scalar is not None \
            else ""
        return f"{self.position}{' via W' + chain if chain else ''}{other} in {self.module or '<model>'}"


@dataclass
class AddStats:
    """Mean squares of the two operands of an add and of its result (``None`` on the meta device)."""

    ms: tuple[float, float]
    ms_out: float


@dataclass
class OpNode:
    """One recorded op. ``inputs``: the nodes that produced its tensor operands (parameters and inputs are
    leaf nodes with op ``"param"``, ``"buffer"`` or ``"input"``), in operand order; ``params``: ``(name, slot)`` of each
    parameter it read; ``kernel`` / ``bias``: the parameter in a kernel or bias slot (``linear``'s weight,
    ``addmm``'s mat2, a ``matmul`` or ``einsum`` operand, a convolution's weight); ``shape``: its first
    output's shape; ``args`` / ``kwargs``: its non-tensor arguments (numbers, strings) for readers such as
    the activation lookup; ``stats``: for an add of two activations."""

    index: int
    op: str
    inputs: tuple[int, ...]
    params: tuple[tuple[str, int | str], ...]
    module: str
    shape: tuple[int, ...] | None = None
    in_shapes: tuple[tuple[int, ...] | None, ...] = ()
    kernel: str | None = None
    bias: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    stats: AddStats | None = None
    param: str | None = None  # for a "param" leaf: its name
    tags: frozenset[str] = frozenset()  # what its output is: "normalized", "norm_scaled", "offset_scale", ...


@dataclass
class Dataflow:
    """What :func:`record_dataflow` saw: ``nodes`` in execution order, ``uses`` per parameter (first name),
    ``names`` (first name -> every name of that tensor, the first included), ``module_types`` (module path ->
    class name), ``errors`` (ops the recorder could not read; the forward itself ran), ``meta`` (no values)."""

    nodes: list[OpNode]
    uses: dict[str, list[ParamUse]]
    names: dict[str, tuple[str, ...]]
    params: dict[str, torch.Tensor] = field(repr=False)
    module_types: dict[str, str] = field(repr=False)
    errors: list[str] = field(default_factory=list)
    meta: bool = False
    _consumers: list[list[int]] | None = field(default=None, repr=False)
    _param_like: list[tuple[bool, bool]] | None = field(default=None, repr=False)

    def consumers(self) -> list[list[int]]:
        """For each node, the nodes that read its output (in execution order)."""
        if self._consumers is None:
            out: list[list[int]] = [[] for _ in self.nodes]
            for n in self.nodes:
                for i in dict.fromkeys(n.inputs):
                    out[i].append(n.index)
            self._consumers = out
        return self._consumers

    def is_param_like(self, i: int) -> bool:
        """Whether node ``i`` is a parameter or a view of one (``gamma.reshape(1, -1, 1, 1)``)."""
        return self._flags()[i][0]

    def is_constant(self, i: int) -> bool:
        """Whether node ``i`` is a parameter or a buffer, or a view of one: not an activation."""
        return self._flags()[i][1]

    def _flags(self) -> list[tuple[bool, bool]]:
        if self._param_like is None:
            flags: list[tuple[bool, bool]] = []
            for n in self.nodes:  # inputs come before the ops that read them: one pass
                view = n.op in TRANSPARENT and bool(n.inputs)
                flags.append((n.op == "param" or (view and all(flags[j][0] for j in n.inputs)),
                              n.op in ("param", "buffer") or (view and all(flags[j][1] for j in n.inputs))))
            self._param_like = flags
        return self._param_like

    def name_of(self, name: str) -> str:
        """The first name of the tensor ``name`` is one name of (tied parameters share one)."""
        for first, names in self.names.items():
            if name in names:
                return first
        raise KeyError(f"name: {name!r} is not a parameter of the traced model.")


@dataclass
class _TInfo:
    node: int
    param: str | None = None
    via: tuple[str, ...] = ()
    root: int | None = None  # the node whose output this tensor is a transparent view/cast of
    tags: frozenset[str] = frozenset()


def _flat(x: Any) -> Iterator[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)):
        for y in x:
            yield from _flat(y)
    elif isinstance(x, dict):
        for y in x.values():
            yield from _flat(y)


def _plain(x: Any) -> Any:
    """A non-tensor argument kept on the node: numbers, strings, booleans, None (anything else: None)."""
    return x if isinstance(x, (int, float, str, bool, type(None))) else None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _chain_step(name: str, args: tuple) -> str:
    if name in ("transpose", "swapaxes") and len(args) >= 3:
        return f"transpose({args[1]}, {args[2]})"
    if name == "permute":
        dims = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
        return f"permute{tuple(dims)}"
    return name


def _dtensor_local(t: Any) -> torch.Tensor | None:
    """The local shard of a DTensor (``_local_tensor``), else ``None`` (without importing torch.distributed)."""
    if type(t).__name__ != "DTensor":
        return None
    local = getattr(t, "_local_tensor", None)
    return local if isinstance(local, torch.Tensor) else None


class _Recorder(TorchFunctionMode):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.names: dict[int, list[str]] = {}
        self.tensors: dict[str, torch.Tensor] = {}
        for n, p in model.named_parameters(remove_duplicate=False):
            self.names.setdefault(id(p), []).append(n)
            self.tensors.setdefault(self.names[id(p)][0], p)
        self.buffers = {id(b) for b in model.buffers()}
        # Parameters and buffers outlive the trace: no weak reference on them (torch.utils.swap_tensors, which
        # Plan.apply uses to materialize meta models, refuses a tensor that has one).
        self.lasting = self.buffers | set(self.names)
        self.info: dict[int, _TInfo] = {}
        self._refs: dict[int, weakref.ref] = {}
        self.nodes: list[OpNode] = []
        self.uses: dict[str, list[ParamUse]] = {}
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.meta = False
        self._dtensor_out: dict[str, _TInfo] = {}  # module -> its latest op output that was a DTensor


    # ---- module context (forward hooks) ------------------------------------------------------------
    def push(self, name: str) -> None:
        self.stack.append(name)

    def pop(self, name: str, output: Any = None) -> None:
        if self.stack and self.stack[-1] == name:
            self.stack.pop()
        made = self._dtensor_out.pop(name, None)
        if made is not None and isinstance(output, torch.Tensor) and id(output) not in self.info:
            # Tensor parallelism's output hooks (redistribute, to_local) run outside any torch function: the
            # module's output is then its last DTensor result, handed on.
            self._track(output, made)

    # ---- tensors --------------------------------------------------------------------------------------
    def _track(self, t: torch.Tensor, ti: _TInfo) -> None:
        key = id(t)
        if key not in self.info and key not in self.lasting:
            # Drop the entry when the tensor is freed, so a later tensor with the same id is not mistaken for
            # it, and nothing is kept alive for the recording's sake. The reference lives as long as the
            # recorder: after the trace nothing is left registered on the model's tensors.
            self._refs[key] = weakref.ref(t, lambda _r, k=key: self.info.pop(k, None))
        self.info[key] = ti
        local = _dtensor_local(t)
        if local is not None:  # to_local() hands this very tensor on: the same value, one node
            self._track(local, ti)

    def _leaf(self, t: torch.Tensor) -> _TInfo:
        ti = self.info.get(id(t))
        if ti is not None:
            return ti
        local = _dtensor_local(t)
        if local is not None and id(local) in self.info:
            # A DTensor wrapped around a tensor the trace knows (tensor parallelism's input hooks call
            # DTensor.from_local, which no torch function reports): the same value, one node.
            ti = self.info[id(local)]
            self._track(t, ti)
            return ti
        names = self.names.get(id(t))
        name = names[0] if names else None
        kind = "param" if name else "buffer" if id(t) in self.buffers else "input"
        node = OpNode(len(self.nodes), kind, (), (), "", tuple(t.shape), param=name)
        self.nodes.append(node)
        ti = _TInfo(node.index, param=name)
        self._track(t, ti)
        if t.is_meta:
            self.meta = True
        return ti

    # ---- the mode -----------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = op_name(func)
        before = self._in_place_stats(name, args) if name in ("__iadd__", "add_") else None
        out = func(*args, **kwargs)
        if name in _QUERIES or not name:
            return out
        try:
            self._record(name, args, kwargs, out, before)
        except Exception as e:  # the recording must never break the user's forward; readers see the error
            self.errors.append(f"{name} in {self.stack[-1] if self.stack else '<model>'}: {type(e).__name__}: {e}")
        return out

    def _operands(self, name: str, args: tuple, kwargs: dict) -> list[tuple[int | str, torch.Tensor]]:
        found: list[tuple[int | str, torch.Tensor]] = []
        if name == "einsum":  # einsum(eq, a, b) or einsum(eq, [a, b]): index among the equation's operands
            rest = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
            return [(i, t) for i, t in enumerate(rest) if isinstance(t, torch.Tensor)]
        for pos, a in [*enumerate(args), *kwargs.items()]:
            if isinstance(a, torch.Tensor):
                found.append((slot(name, pos), a))
            elif isinstance(a, (list, tuple)):
                found.extend((slot(name, pos), b) for b in a if isinstance(b, torch.Tensor))
        return found

    def _in_place_stats(self, name: str, args: tuple) -> tuple[float, float] | None:
        """Mean squares of both operands of ``x += y``, taken before the op overwrites ``x``."""
        try:
            if len(args) == 2 and all(isinstance(a, torch.Tensor) and a.is_floating_point() and not a.is_meta
                                      for a in args):
                return tuple(float(a.detach().float().pow(2).mean()) for a in args)  # type: ignore[return-value]
        except Exception:  # a statistic must never break the forward
            return None
        return None

    def _record(self, name: str, args: tuple, kwargs: dict, out: Any, before: tuple[float, float] | None) -> None:
        module = self.stack[-1] if self.stack else ""
        operands = self._operands(name, args, kwargs)
        infos = [(pos, t, self._leaf(t)) for pos, t in operands]
        outs = list(_flat(out))
        if name == "__setitem__" and args and isinstance(args[0], torch.Tensor):
            outs = [args[0]]  # x[i] = y writes into x: the new version of x comes from this op
        transparent = name in TRANSPARENT
        if transparent and infos and outs and all(o is infos[0][1] for o in outs):
            return  # dropout in eval, x.to(x.dtype), x.contiguous(): the tensor itself, no new version
        scalars = [a for a in args if _is_number(a)]
        node = OpNode(
            len(self.nodes), name, tuple(ti.node for _, _, ti in infos), (), module,
            tuple(outs[0].shape) if outs else None,
            args=tuple(_plain(a) for a in args), kwargs={k: _plain(v) for k, v in kwargs.items()},
        )
        self.nodes.append(node)
        if name in ADD and len(infos) == 2:
            node.in_shapes = tuple(tuple(t.shape) for _, t, _ in infos)
            if (infos[0][2].param is None and infos[1][2].param is None and outs and outs[0].is_floating_point()
                    and not outs[0].is_meta and node.in_shapes[0] == node.in_shapes[1]):
                ms = before or tuple(float(t.detach().float().pow(2).mean()) for _, t, _ in infos)
                node.stats = AddStats((ms[0], ms[1]), float(outs[0].detach().float().pow(2).mean()))

        if not transparent:
            self._record_uses(node, name, args, kwargs, infos, scalars)
        first = infos[0][2] if infos else None
        if transparent and first is not None:
            via = (*first.via, _chain_step(name, args)) if first.param is not None else ()
            root = first.root if first.root is not None else first.node
            new = _TInfo(node.index, first.param, via, root, first.tags)
        else:
            new = _TInfo(node.index, None, (), None, frozenset(self._tags(name, args, kwargs, infos, scalars)))
        node.tags = frozenset(t for t in new.tags if ":" not in t)
        for o in outs:
            self._track(o, new)
        if module and any(_dtensor_local(o) is not None for o in outs):
            self._dtensor_out[module] = new

    def _record_uses(self, node: OpNode, name: str, args: tuple, kwargs: dict, infos: list, scalars: list) -> None:
        params: list[tuple[str, int | str]] = []
        for pos, t, ti in infos:
            if ti.param is None:
                continue
            params.append((ti.param, pos))
            other = other_shape = None
            if len(infos) == 2 and (name in ADD | MUL | DIV | SUB or name == "cat"):
                o = infos[1][2] if infos[0][1] is t else infos[0][2]
                ot = infos[1][1] if infos[0][1] is t else infos[0][1]
                other = ("parameter" if o.param is not None else "normalized" if "normalized" in o.tags
                         else "norm_scaled" if "norm_scaled" in o.tags else "activation")
                other_shape = tuple(ot.shape)
            groups = 1
            if name in CONV | CONV_T:
                g = args[_CONV_GROUPS_POS] if len(args) > _CONV_GROUPS_POS else kwargs.get("groups", 1)
                groups = int(g) if _is_number(g) else 1
            use = ParamUse(
                name, pos, ti.via, tuple(t.shape), node.module, node.index, other, other_shape,
                float(scalars[0]) if scalars and len(infos) == 1 else None,
                args[0] if name == "einsum" and args and isinstance(args[0], str) else None, groups,
            )
            self.uses.setdefault(ti.param, []).append(use)
            if (name, pos) in _KERNEL_SLOTS or name in MATMUL or name == "einsum":
                node.kernel = node.kernel or ti.param
            elif (name, pos) in _BIAS_SLOTS:
                node.bias = ti.param
        node.params = tuple(params)

    # ---- normalization provenance -------------------------------------------------------------------
    def _roots(self, ti: _TInfo) -> set[int]:
        """The activation nodes a tensor is (a view of, or centred from)."""
        r = {ti.root if ti.root is not None else ti.node}
        r |= {int(x.split(":")[1]) for x in ti.tags if x.startswith("centered:")}
        return r

    def _tags(self, name: str, args: tuple, kwargs: dict, infos: list, scalars: list) -> set[str]:
        """Tags that let ``w * h`` be read as a norm scale: squares, their means, roots, inverses, centred
        tensors, and finally ``normalized`` for ``h / rms(h)`` and ``(h - mean) / std``."""
        tags: set[str] = set()
        if name in NORM_FUNCS:
            w = kwargs.get("weight", args[2] if len(args) > 2 and name in ("layer_norm", "rms_norm", "group_norm")
                           else args[3] if len(args) > 3 and name in ("batch_norm", "instance_norm") else None)
            tags.add("norm_scaled" if isinstance(w, torch.Tensor) else "normalized")
            return tags
        if not infos:
            return tags
        t0, ti0 = infos[0][1], infos[0][2]
        r0 = ti0.root if ti0.root is not None else ti0.node
        two = len(infos) == 2
        if (name in ("pow", "__pow__", "square") and (name == "square" or scalars[:1] == [2])) or (name in MUL and two and infos[1][1] is t0):
            tags.add(f"sq:{r0}")
        elif name in ("mean", "sum"):
            sq = [x for x in ti0.tags if x.startswith("sq:")]
            tags.add("stat:" + sq[0][3:] if sq else f"mean:{r0}")
        elif name in ("var", "var_mean"):
            tags.add(f"stat:{r0}")
        elif name in ("std", "norm", "vector_norm", "linalg_vector_norm"):
            tags.add(f"root:{r0}")
        elif name in ("clamp", "clamp_min", "clip") or (name in ADD and not two):  # stat + eps, rms.clamp(eps)
            tags |= {x for x in ti0.tags if x.split(":")[0] in ("stat", "root", "inv")}
        elif name == "sqrt":
            tags |= {"root:" + x[5:] for x in ti0.tags if x.startswith("stat:")}
        elif name == "rsqrt":
            tags |= {"inv:" + x[5:] for x in ti0.tags if x.startswith("stat:")}
        elif name in ("reciprocal", "__rtruediv__") and not two:
            tags |= {"inv:" + x[5:] for x in ti0.tags if x.startswith("root:")}
        elif name in SUB and two:
            if f"mean:{r0}" in infos[1][2].tags:
                tags.add(f"centered:{r0}")
        elif name in MUL | DIV and two:
            ti1 = infos[1][2]
            want = "inv:" if name in MUL else "root:"
            inv1 = {int(x.split(":")[1]) for x in ti1.tags if x.startswith(want)}
            inv0 = {int(x.split(":")[1]) for x in ti0.tags if x.startswith("inv:")} if name in MUL else set()
            if self._roots(ti0) & inv1 or self._roots(ti1) & inv0:
                tags.add("normalized")
            elif name in MUL and ("normalized" in ti0.tags | ti1.tags or "norm_scaled" in ti0.tags | ti1.tags) and (
                    ti0.param is not None or ti1.param is not None or "offset_scale" in ti0.tags | ti1.tags):
                tags.add("norm_scaled")
        elif name in ADD and two:
            ti1 = infos[1][2]
            if (ti0.param is not None or ti1.param is not None) and (
                    {"normalized", "norm_scaled"} & (ti0.tags | ti1.tags)):
                tags.add("norm_scaled")  # z + b: the shift of a norm
        if name in ADD | SUB and not two and ti0.param is not None:
            tags.add("offset_scale")  # (1 + w): a Gemma-style norm scale
        return tags


def call_model(model: nn.Module, example_input: Any) -> Any:
    """``model(**x)`` for a dict, ``model(*x)`` for a tuple, else ``model(x)``."""
    if isinstance(example_input, dict):
        return model(**example_input)
    if isinstance(example_input, tuple):
        return model(*example_input)
    return model(example_input)


def _rng_devices(model: nn.Module) -> list[int]:
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


@contextmanager
def forward_pass(model: nn.Module, handles: list[Any]) -> Iterator[None]:
    """Where a reader runs ``model`` once: eval mode, no grad, the global RNG forked (CPU and the model's CUDA
    devices); afterwards, also on failure, every module's training flag is restored and ``handles`` (its
    hooks) removed. A failure raises ``ValueError`` naming ``example_input``."""
    modes = {m: m.training for m in model.modules()}
    try:
        with torch.random.fork_rng(devices=_rng_devices(model)):
            model.eval()
            with torch.no_grad():
                yield
    except Exception as e:
        raise ValueError(
            f"example_input: running the model on it failed ({type(e).__name__}: {e}); pass an input the model "
            "accepts (a tensor, a tuple of positional arguments or a dict of keyword arguments)."
        ) from e
    finally:
        for h in handles:
            h.remove()
        for m, t in modes.items():
            m.training = t


def record_dataflow(model: nn.Module, example_input: Any) -> Dataflow:
    """Run ``model`` once on ``example_input`` and record its :class:`Dataflow` (see the module docstring).

    Runs under ``torch.no_grad()`` in eval mode; afterwards every module's training flag, the global RNG
    state (CPU, and the CUDA devices the model is on) and the module hooks are as before, also when the
    forward fails — which raises ``ValueError`` naming ``example_input``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}.")
    rec = _Recorder(model)
    handles = []
    for mpath, m in model.named_modules():
        handles.append(m.register_forward_pre_hook(lambda mod, a, _n=mpath: rec.push(_n)))
        handles.append(m.register_forward_hook(lambda mod, a, o, _n=mpath: rec.pop(_n, o), always_call=True))
    try:
        with forward_pass(model, handles), rec:
            call_model(model, example_input)
    finally:
        rec._refs.clear()  # drop every weak reference now, not when the collector finds the recorder
        rec.info.clear()
    names = {ns[0]: tuple(ns) for ns in rec.names.values()}
    uses = {n: rec.uses.get(n, []) for n in names}
    types = {n: type(m).__name__ for n, m in model.named_modules()}
    meta = rec.meta or any(p.is_meta for p in rec.tensors.values())
    return Dataflow(rec.nodes, uses, names, dict(rec.tensors), types, rec.errors, meta)


def einsum_fans(equation: str, operand: int, shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(fan_in, fan_out) of operand ``operand`` of an einsum: the product of its axes contracted with the
    other operands (in none of the output), and of its axes that reach the output alone; ``None`` for an
    equation with an ellipsis or that does not match the shape."""
    eq = equation.replace(" ", "")
    lhs, rhs = eq.split("->") if "->" in eq else (eq, None)
    ins = lhs.split(",")
    if operand >= len(ins) or "." in eq:
        return None
    mine = ins[operand]
    others = set("".join(ins[:operand] + ins[operand + 1:]))
    if rhs is None:
        rhs = "".join(sorted(c for c in set(lhs) if lhs.count(c) == 1))
    if len(mine) != len(shape):
        return None
    fi = math.prod(d for c, d in zip(mine, shape, strict=True) if c in others and c not in rhs)
    fo = math.prod(d for c, d in zip(mine, shape, strict=True) if c in rhs and c not in others)
    return fi, fo
