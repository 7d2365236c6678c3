"""What each kernel of a residual branch does, read from the dataflow of one forward pass, and the measured
rescaling of the branches.

:func:`branch_roles` reads, for a :class:`~initlab.theory.streams.ResidualAdd`:

- ``inputs``: the kernels that read the branch's input (q, k, v or a packed q/k/v; fc1, gate, up) — the
  kernels whose input is the skip, with no other kernel in between;
- ``kind``: ``"attention"`` when the branch holds a ``scaled_dot_product_attention``, a softmax followed by a
  ``matmul(probs, v)``, or ``multi_head_attention_forward``; else ``"mlp"``;
- ``value``: the kernel that makes the attention's values (the operand ``v`` of ``scaled_dot_product_attention``
  or of ``matmul(probs, v)``, walked back through views and head reshapes); ``packed`` when the same kernel
  also makes the queries (GPT-2's ``c_attn``); ``mha``: the packed ``in_proj_weight`` of
  ``nn.MultiheadAttention`` (its value block is the last third);
- ``skip_norm``: the parameters of the normalization whose output is the skip (post-LN: the previous add's
  ``LayerNorm``), and ``skip_embeddings``: when the skip is a sum of embedding lookups and added position
  tables with no norm (the first add of a stream), those tables.

These are what the residual rules of DeepNet (Wang et al. 2022: β on the value and FFN kernels, α on the skip)
and T-Fixup (Huang et al. 2020) need. :func:`stream_embeddings` lists the embedding tables that feed a stream.

:func:`scale_branches` runs the model once more (as :func:`~initlab.theory.dataflow.record_dataflow` does, so
its ops are numbered alike) and, at each chosen residual add in execution order, multiplies the branch's
output projection (its weight and bias, or the branch's trailing norm's scale and shift) by
c = ρ·RMS(skip)/RMS(branch) and hands c·branch to the add, so every later block sees the corrected stream.
Exact when the path from those parameters to the add is linear (views, dropout in eval, a bias add, a layer
scale, a norm's affine map).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .dataflow import ADD, NORM_FUNCS, TRANSPARENT, Dataflow, _Recorder, call_model, forward_pass, op_name
from .streams import ResidualAdd, ResidualStream, _classify_add, _Graph

__all__ = ["BranchRoles", "branch_roles", "scale_branches", "stream_embeddings"]

_SOFTMAX = frozenset({"softmax", "_softmax", "log_softmax"})


@dataclass(frozen=True)
class BranchRoles:
    """The parts of one residual branch (see the module docstring)."""

    add: ResidualAdd
    kind: str
    inputs: tuple[str, ...]
    value: str | None = None
    packed: bool = False
    mha: str | None = None
    skip_norm: tuple[str, ...] = ()
    skip_embeddings: tuple[str, ...] = ()
    skip_operand: int = 0


def _kernels_back(g: _Graph, start: int, stop: set[int]) -> set[int]:
    """The nearest kernel nodes reached walking back from ``start`` (``start`` itself if it is one), not
    crossing ``stop``."""
    found: set[int] = set()
    seen: set[int] = set()
    stack = [start]
    while stack:
        j = stack.pop()
        if j in seen or j in stop:
            continue
        seen.add(j)
        if g.nodes[j].kernel is not None:
            found.add(j)
            continue
        stack.extend(g.acts(j))
    return found


def _through(g: _Graph, start: int, ops: frozenset[str]) -> int:
    """Walk back from ``start`` while the node is one of ``ops`` with one activation input."""
    i = start
    for _ in range(64):
        n = g.nodes[i]
        acts = g.acts(i)
        if n.op not in ops or len(acts) != 1:
            return i
        i = acts[0]
    return i


def _norm_params(g: _Graph, start: int) -> tuple[str, ...]:
    """The scale/shift parameters of the normalization whose output ``start`` is (through views), or ``()``."""
    i = _through(g, start, TRANSPARENT)
    params: list[str] = []
    for _ in range(8):
        n = g.nodes[i]
        if n.op in NORM_FUNCS:
            return tuple([*params, *(p for p, _ in n.params)])
        if "norm_scaled" in n.tags and n.params:  # a written-out norm: w · z (+ b)
            params.extend(p for p, _ in n.params)
            acts = g.acts(i)
            if len(acts) != 1:
                break
            i = _through(g, acts[0], TRANSPARENT)
            if "normalized" in g.nodes[i].tags:
                return tuple(params)
            continue
        break
    return ()


def _embedding_tables(g: _Graph, start: int, *, strict: bool) -> tuple[str, ...]:
    """The embedding tables (lookups, added parameters) whose values reach ``start`` walking back.
    ``strict``: through views, dropout and adds only — ``()`` if anything else makes it (a skip that *is* a
    sum of embeddings, ``wte(ids) + wpe(pos)``); else through any op that is not a kernel (norms, concats:
    the tables that *feed* it)."""
    found: list[str] = []
    stack = [start]
    seen: set[int] = set()
    while stack:
        j = stack.pop()
        if j in seen:
            continue
        seen.add(j)
        n = g.nodes[j]
        if n.op in ("embedding", "embedding_bag"):
            found.extend(p for p, s in n.params if s == "weight")
        elif n.op in ADD or (not strict and n.op == "cat"):
            found.extend(p for p, _ in n.params)
            stack.extend(g.acts(j))
        elif strict and not (n.op in TRANSPARENT and len(g.acts(j)) == 1):
            return ()
        elif n.kernel is None:
            stack.extend(g.acts(j))
    return tuple(dict.fromkeys(found))


def _value_of(g: _Graph, nodes: set[int], skip: int) -> tuple[str | None, bool, bool]:
    """(value kernel, packed, attention found) on a branch."""
    pairs: list[tuple[int, int]] = []  # (query-side node, value node)
    cons = g.flow.consumers()
    for j in sorted(nodes):
        n = g.nodes[j]
        if n.op == "scaled_dot_product_attention" and len(n.inputs) >= 3:
            pairs.append((n.inputs[0], n.inputs[2]))
        elif n.op in _SOFTMAX:
            stack, seen = list(cons[j]), set()
            while stack:
                k = stack.pop()
                if k in seen:
                    continue
                seen.add(k)
                m = g.nodes[k]
                if m.op in TRANSPARENT or m.op in ("type_as", "to", "float"):
                    stack.extend(cons[k])
                elif m.op in ("matmul", "__matmul__", "bmm", "einsum") and len(m.inputs) == 2:
                    pairs.append((j, m.inputs[1]))
    if not pairs:
        return None, False, False
    q, v = pairs[0]
    vk = _kernels_back(g, v, {skip})
    if len(vk) != 1:
        return None, False, True
    (vnode,) = vk
    packed = vnode in _kernels_back(g, q, {skip})
    return g.nodes[vnode].kernel, packed, True


def branch_roles(flow: Dataflow, add: ResidualAdd, graph: _Graph | None = None) -> BranchRoles:
    """The parts of ``add``'s branch (see the module docstring)."""
    g = graph or _Graph(flow)
    c = _classify_add(g, add.node)
    if c is None:
        raise ValueError(f"add: node {add.node} is not a residual add of this dataflow.")
    skip, branch, _, _ = c
    nodes = g.between(skip, branch) | {branch}
    kernels = [j for j in sorted(nodes) if g.nodes[j].kernel is not None]
    inputs = [g.nodes[j].kernel for j in kernels
              if not any(g.nodes[k].kernel is not None for k in g.between(skip, j) - {j})]
    mha = next((p for j in sorted(nodes) if g.nodes[j].op == "multi_head_attention_forward"
                for p, s in g.nodes[j].params if s == "in_proj_weight"), None)
    value, packed, attention = _value_of(g, nodes, skip)
    if mha is not None:  # nn.MultiheadAttention: one op reads the packed q/k/v kernel
        inputs = [mha]
    kind = "attention" if attention or mha is not None else "mlp"
    norm = _norm_params(g, skip)
    emb = () if norm else _embedding_tables(g, skip, strict=True)
    operand = 0 if g.nodes[add.node].inputs[0] == skip else 1
    return BranchRoles(add, kind, tuple(dict.fromkeys(k for k in inputs if k)), value, packed, mha, norm, emb,
                       operand)


def stream_embeddings(flow: Dataflow, stream: ResidualStream, graph: _Graph | None = None) -> tuple[str, ...]:
    """The embedding tables (lookups, added position tables, concatenated tokens) whose values reach the stream's
    first skip through ops that are not kernels (views, adds, norms, dropout)."""
    g = graph or _Graph(flow)
    c = _classify_add(g, stream.adds[0].node)
    if c is None:
        return ()
    return _embedding_tables(g, c[0], strict=False)


class _Scaler(_Recorder):
    """The recorder of :func:`record_dataflow`, which at the chosen residual adds rescales the branch."""

    def __init__(self, model: nn.Module, targets: dict[int, tuple[tuple[str, ...], float, int]]) -> None:
        super().__init__(model)
        self.targets = targets
        self.scales: dict[int, float] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        k = len(self.nodes)
        if k in self.targets and op_name(func) in ADD and len(args) == 2:
            names, rho, skip_at = self.targets[k]
            skip, branch = args[skip_at], args[1 - skip_at]
            if not (isinstance(skip, torch.Tensor) and isinstance(branch, torch.Tensor) and skip.shape == branch.shape):
                raise RuntimeError(f"op {k} is not the residual add the trace saw; the forward pass changed")
            rs = float(skip.detach().double().pow(2).mean().sqrt())
            rb = float(branch.detach().double().pow(2).mean().sqrt())
            c = rho * rs / rb if rb > 0 and math.isfinite(rb) else 1.0
            with torch.no_grad():
                for n in names:
                    self.tensors[n].mul_(c)
            scaled = branch * c
            if id(branch) in self.info:  # the same node as the branch: the numbering stays the trace's
                self._track(scaled, self.info[id(branch)])
            args = (skip, scaled) if skip_at == 0 else (scaled, skip)
            self.scales[k] = c
        return super().__torch_function__(func, types, args, kwargs)


def scale_branches(model: nn.Module, example_input: Any,
                   targets: dict[int, tuple[tuple[str, ...], float, int]]) -> dict[int, float]:
    """One forward pass on ``example_input`` that rescales residual branches in execution order (see the module
    docstring). ``targets``: residual add node (its index in the trace's dataflow) -> (the parameters to
    multiply — first names —, ρ, the operand index of the skip). Returns node -> the factor c used. The model's
    training flags, hooks and the global RNG are as before afterwards; on a failure nothing it scaled is kept."""
    rec = _Scaler(model, targets)
    before = {n: rec.tensors[n].detach().clone() for t in targets.values() for n in t[0]}
    try:
        with forward_pass(model, []), rec:
            call_model(model, example_input)
        missing = sorted(set(targets) - set(rec.scales))
        if missing:
            raise RuntimeError(f"the forward pass reached no residual add at trace nodes {missing[:5]}; it changed "
                               "since the plan traced it")
    except BaseException:
        with torch.no_grad():
            for n, v in before.items():
                rec.tensors[n].copy_(v)
        raise
    finally:
        rec._refs.clear()
        rec.info.clear()
    return rec.scales
