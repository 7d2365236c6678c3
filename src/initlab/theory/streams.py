"""Residual streams read from the dataflow of one forward pass (:mod:`initlab.theory.dataflow`).

A **residual add** is an add of two activations of the same shape where

- one operand (the *skip*) is an ancestor of the other (the *branch*) through a path with a weight op
  (``linear``, ``addmm``, ``matmul``, ``einsum``, a convolution with a parameter): ``x + f(x)``; or
- neither is an ancestor of the other but both descend from a common activation ``x``, the *shortcut*
  operand through exactly one weight op (plus norms, pooling, views: a ResNet downsample
  ``BN(conv1x1(x))``) and the *branch* through more: a **projection shortcut**.

Broadcast adds (attention masks, position biases, a bias) are not residual: their shapes differ.

For each residual add, the branch's **output projection** is the last weight op before the add, walking
back through pass-through ops (views, casts, dropout), a bias add, a multiply by a number or by a
parameter (a layer scale: recorded in ``out_scales``) and a trailing per-channel norm (ResNet's ``bn2``:
its parameters go to ``out_scales`` too). An add whose branch ends in anything else (an activation) has
no projection to scale and is not listed.

**Streams** chain the adds: an add's predecessor is the latest residual add reachable backwards from its
skip through ops that are not weight ops (views, norms, activations). A projection shortcut starts a new
stream, since the projection (and its norm) re-sets the stream's scale; so does a stage transition of a
CNN (a strided conv between stages). **Placement**: ``"pre"`` when the add's output reaches the next
add's skip through pass-through ops only (the norm sits inside the branch: pre-LN, GPT-2, Llama, T5, ViT),
``"post"`` when through a normalization (BERT: ``LayerNorm(x + f(x))``), ``"?"`` otherwise (an activation
between blocks, as in ResNet); the last add of a stream takes the stream's majority. The **block** of an
add is the innermost numbered module around it (``h.3``, ``layers.3``, ``layer1.0``) whose siblings are all
of its type — a T5 block's heterogeneous ``layer.0``/``layer.1`` are parts of ``block.3``, while a
MobileNet stage's repeated blocks are blocks.

``residual_streams(model, example_input)`` runs the model once; :func:`find_streams` reads a recorded
:class:`~initlab.theory.dataflow.Dataflow`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from torch import nn

from .dataflow import ADD, MUL, NORM_FUNCS, TRANSPARENT, Dataflow, record_dataflow

__all__ = ["ResidualAdd", "ResidualStream", "find_streams", "residual_streams"]

_TAIL_NORMS = frozenset({"batch_norm", "group_norm", "layer_norm", "instance_norm", "rms_norm"})
# Ops a projection shortcut may hold besides its one weight op.
_SHORTCUT_OPS = TRANSPARENT | NORM_FUNCS | frozenset({
    "avg_pool1d", "avg_pool2d", "avg_pool3d", "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_avg_pool2d",
    "pad", "identity",
})


@dataclass(frozen=True)
class ResidualAdd:
    """One residual add ``skip + branch``.

    ``node``: its index in the dataflow; ``module``: the module whose forward ran it; ``block``: the block it
    belongs to (see the module docstring); ``out_proj``: the branch's output projection (parameter name,
    the first name of a tied tensor), run as ``out_proj_op`` in ``out_proj_module``; ``out_bias``: that
    projection's bias (in the same op or added right after), if any; ``out_scales``: parameters met between
    the projection and the add (a layer scale, a trailing norm's weight and bias); ``branch_kernels``: every
    kernel on the branch, in execution order (``out_proj`` last); ``shortcut_kernels``: the projection
    shortcut's kernel(s), ``()`` for an identity skip; ``placement``: ``"pre"``, ``"post"`` or ``"?"``;
    ``stream``: its stream's index; ``ms_skip``, ``ms_branch``, ``ms_out``: mean squares of the skip, the
    branch and the sum on the example input (``None`` on the meta device).
    """

    node: int
    module: str
    block: str
    out_proj: str
    out_proj_op: str
    out_proj_module: str
    out_bias: str | None
    out_scales: tuple[str, ...]
    branch_kernels: tuple[str, ...]
    shortcut_kernels: tuple[str, ...]
    placement: str
    stream: int
    ms_skip: float | None
    ms_branch: float | None
    ms_out: float | None

    @property
    def ratio(self) -> float | None:
        """RMS(branch) / RMS(skip) on the example input."""
        if self.ms_skip is None or self.ms_branch is None or self.ms_skip <= 0:
            return None
        return math.sqrt(self.ms_branch / self.ms_skip)

    @property
    def growth(self) -> float | None:
        """RMS(skip + branch) / RMS(skip) on the example input."""
        if self.ms_skip is None or self.ms_out is None or self.ms_skip <= 0:
            return None
        return math.sqrt(self.ms_out / self.ms_skip)


@dataclass(frozen=True)
class ResidualStream:
    """A chain of residual adds: ``adds`` in execution order, ``placement`` (the majority of its adds),
    ``name`` (the longest module path prefix its adds share, e.g. ``"encoder"``)."""

    index: int
    adds: tuple[ResidualAdd, ...]
    placement: str
    name: str

    @property
    def n_branches(self) -> int:
        """N, the number of residual branches feeding the stream (GPT-2's "2L")."""
        return len(self.adds)

    @property
    def blocks(self) -> tuple[str, ...]:
        """The blocks the adds belong to, in order, each once."""
        return tuple(dict.fromkeys(a.block for a in self.adds))

    @property
    def n_blocks(self) -> int:
        """L, the number of blocks."""
        return len(self.blocks)

    @property
    def out_projs(self) -> tuple[str, ...]:
        return tuple(a.out_proj for a in self.adds)


def residual_streams(model: nn.Module, example_input: Any) -> list[ResidualStream]:
    """The residual streams of ``model`` on ``example_input`` (one forward pass, no grad, eval mode; the
    model is left as it was). See the module docstring for what counts as a residual add."""
    return find_streams(record_dataflow(model, example_input))


class _Graph:
    """Reachability queries on a dataflow, over activation nodes (parameter leaves are not followed)."""

    def __init__(self, flow: Dataflow) -> None:
        self.flow = flow
        self.nodes = flow.nodes
        self.cons = flow.consumers()

    def acts(self, i: int) -> list[int]:
        return [j for j in self.nodes[i].inputs if not self.flow.is_constant(j)]

    def ancestors(self, i: int, lowest: int = 0) -> set[int]:
        """Activation ancestors of node ``i`` with index >= ``lowest`` (``i`` excluded)."""
        seen: set[int] = set()
        stack = self.acts(i)
        while stack:
            j = stack.pop()
            if j in seen or j < lowest:
                continue
            seen.add(j)
            stack.extend(self.acts(j))
        return seen

    def between(self, a: int, b: int) -> set[int]:
        """Nodes on some path a -> b, ``b`` included and ``a`` not; empty when there is no such path."""
        up = self.ancestors(b, lowest=a)
        if a not in up:
            return set()
        up.add(b)
        out: set[int] = set()
        stack = [c for c in self.cons[a] if c in up]
        while stack:
            j = stack.pop()
            if j in out:
                continue
            out.add(j)
            stack.extend(c for c in self.cons[j] if c in up)
        return out

    def kernels(self, nodes: set[int]) -> list[str]:
        return [self.nodes[j].kernel for j in sorted(nodes) if self.nodes[j].kernel is not None]


def _out_proj(g: _Graph, start: int) -> tuple[int, str | None, tuple[str, ...]] | None:
    """Walk back from the branch operand to its last weight op: (node, bias added after it, out_scales)."""
    scales: list[str] = []
    bias: str | None = None
    i = start
    for _ in range(64):
        n = g.nodes[i]
        if n.kernel is not None:
            return i, bias, tuple(scales)
        acts = g.acts(i)
        pars = [p for p, _ in n.params]
        if len(acts) != 1:
            return None
        if n.op in TRANSPARENT:
            pass
        elif n.op in ADD and n.stats is None:  # + bias (a parameter or a view of one)
            if pars and bias is None:
                bias = pars[0]
            elif not pars and not _is_scalar_op(g, i):
                return None
        elif n.op in MUL or n.op in _TAIL_NORMS:  # × a number, or × a layer-scale parameter
            scales.extend(pars)
        else:
            return None
        i = acts[0]
    return None


def _is_scalar_op(g: _Graph, i: int) -> bool:
    n = g.nodes[i]
    return len(n.inputs) == 1 and any(isinstance(a, (int, float)) for a in n.args[1:])


def _shortcut(g: _Graph, ca: int, end: int) -> list[str] | None:
    """The kernels of a projection shortcut ca -> end, if it is one: a chain through exactly one weight op
    and otherwise only norms, pooling and views."""
    path = g.between(ca, end) | {end}
    kernels = g.kernels(path)
    if len(kernels) != 1:
        return None
    for j in path:
        n = g.nodes[j]
        if n.kernel is None and n.op not in _SHORTCUT_OPS:
            return None
    return kernels


def _classify_add(g: _Graph, i: int) -> tuple[int, int, tuple[str, ...], tuple[str, ...]] | None:
    """(skip node, branch node, branch kernels, shortcut kernels) of a residual add, else None."""
    n = g.nodes[i]
    if n.op not in ADD or len(n.inputs) != 2 or (n.stats is None and not g.flow.meta):
        return None
    if len(n.in_shapes) != 2 or n.in_shapes[0] != n.in_shapes[1]:
        return None
    a, b = n.inputs
    if a == b or g.flow.is_param_like(a) or g.flow.is_param_like(b):
        return None
    for skip, branch in ((a, b), (b, a)):
        path = g.between(skip, branch)
        if path:
            kernels = g.kernels(path)
            return (skip, branch, tuple(kernels), ()) if kernels else None
    anc_a, anc_b = g.ancestors(a), g.ancestors(b)
    common = (anc_a | {a}) & (anc_b | {b})
    if not common:
        return None
    ca = max(common)
    for sc, br in ((a, b), (b, a)):
        short = _shortcut(g, ca, sc)
        if short is None:
            continue
        kernels = g.kernels(g.between(ca, br) | {br})
        if len(kernels) > len(short):
            return sc, br, tuple(kernels), tuple(short)
    return None


def _stream_ops_ok(n: Any) -> bool:
    return n.kernel is None and n.op not in ("param", "buffer", "input")


def _previous_add(g: _Graph, start: int, residual: set[int]) -> int | None:
    """The latest residual add reachable backwards from ``start`` without crossing a weight op."""
    best: int | None = None
    seen: set[int] = set()
    stack = [start]
    while stack:
        j = stack.pop()
        if j in seen:
            continue
        seen.add(j)
        if j in residual:
            best = j if best is None else max(best, j)
            continue
        if not _stream_ops_ok(g.nodes[j]):
            continue
        stack.extend(g.acts(j))
    return best


def _direct(g: _Graph, start: int, target: int) -> bool:
    """Whether ``start`` is ``target``'s output through pass-through ops only."""
    i = start
    for _ in range(32):
        if i == target:
            return True
        n = g.nodes[i]
        acts = g.acts(i)
        if n.op not in TRANSPARENT or len(acts) != 1:
            return False
        i = acts[0]
    return False


def _through_norm(g: _Graph, start: int, target: int) -> bool:
    """Whether the path target -> start holds a normalization (a norm function or a manual one)."""
    path = g.between(target, start) | {start}
    return any(g.nodes[j].op in NORM_FUNCS or g.nodes[j].op in ("rsqrt", "var", "std", "var_mean") for j in path)


def _block_of(module: str, types: dict[str, str]) -> str:
    """The innermost numbered module around ``module`` whose numbered siblings all share its type."""
    parts = module.split(".") if module else []
    for k in range(len(parts), 0, -1):
        if not parts[k - 1].isdigit():
            continue
        path, parent = ".".join(parts[:k]), ".".join(parts[:k - 1])
        prefix = f"{parent}." if parent else ""
        siblings = [t for p, t in types.items() if p.startswith(prefix) and p[len(prefix):].isdigit()]
        if siblings and all(t == types.get(path) for t in siblings):
            return path
    numbered = [k for k in range(len(parts), 0, -1) if parts[k - 1].isdigit()]
    return ".".join(parts[:numbered[-1]]) if numbered else module


def _common_prefix(paths: list[str]) -> str:
    split = [p.split(".") if p else [] for p in paths]
    out: list[str] = []
    for parts in zip(*split, strict=False):  # up to the shortest path
        if len(set(parts)) != 1:
            break
        out.append(parts[0])
    return ".".join(out)


def find_streams(flow: Dataflow) -> list[ResidualStream]:
    """The residual streams of a recorded dataflow (see the module docstring)."""
    g = _Graph(flow)
    found: dict[int, dict[str, Any]] = {}
    for n in flow.nodes:
        c = _classify_add(g, n.index)
        if c is None:
            continue
        skip, branch, kernels, short = c
        proj = _out_proj(g, branch)
        if proj is None:
            continue
        pnode, bias, scales = proj
        pn = flow.nodes[pnode]
        k = 0 if n.inputs[0] == skip else 1
        st = n.stats
        found[n.index] = dict(
            node=n.index, module=n.module, block=_block_of(n.module, flow.module_types), out_proj=pn.kernel,
            out_proj_op=pn.op, out_proj_module=pn.module, out_bias=pn.bias or bias, out_scales=scales,
            branch_kernels=kernels, shortcut_kernels=short,
            ms_skip=None if st is None else st.ms[k], ms_branch=None if st is None else st.ms[1 - k],
            ms_out=None if st is None else st.ms_out, _skip=skip,
        )
    residual = set(found)
    pred: dict[int, int | None] = {}
    for i, r in found.items():
        pred[i] = None if r["shortcut_kernels"] else _previous_add(g, r["_skip"], residual)
    succ: dict[int, int] = {}
    for i, p in sorted(pred.items()):
        if p is not None and p not in succ:
            succ[p] = i
    stream_of: dict[int, int] = {}
    count = 0
    for i in sorted(found):
        p = pred[i]
        if p is not None and p in stream_of and succ.get(p) == i:
            stream_of[i] = stream_of[p]
        else:
            stream_of[i], count = count, count + 1
    placement: dict[int, str] = {}
    for i in found:
        s = succ.get(i)
        if s is None or stream_of.get(s) != stream_of[i]:
            continue
        skip = found[s]["_skip"]
        placement[i] = "pre" if _direct(g, skip, i) else "post" if _through_norm(g, skip, i) else "?"
    streams: list[ResidualStream] = []
    for sid in range(count):
        members = sorted(i for i in found if stream_of[i] == sid)
        known = [placement[i] for i in members if i in placement]
        majority = Counter(known).most_common(1)[0][0] if known else "?"
        adds = tuple(
            ResidualAdd(**{k: v for k, v in found[i].items() if not k.startswith("_")},
                        placement=placement.get(i, majority), stream=sid)
            for i in members
        )
        streams.append(ResidualStream(sid, adds, majority, _common_prefix([a.module for a in adds])))
    return streams
