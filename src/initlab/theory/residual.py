"""Residual-aware initialization: find the ``x + f(x)`` branches and tame them at init.

Why. With a residual stream s_{k+1} = s_k + f_k(s_k) and each branch f_k initialized to preserve
variance, Var(s_L) = Var(s_0)·(1 + 1)^L in the worst case and ≈ (L+1)·Var(s_0) when branches are
decorrelated from the stream — the stream grows as √L (measured: 1.41 → 5.81 over 32 blocks in
anchors.md §1.1). Normalization layers hide this; without them, the deep blocks are dominated by the
stream and the gradients through the sum explode.

What. :func:`residual_init` changes only each branch's layers:

* ``mode="zero"`` — SkipInit/Fixup style (De & Smith 2020, arXiv:2002.10444; Zhang et al. 2019,
  arXiv:1901.09321): the branch's **last** layer gets weight (and bias) 0, so every block is the
  identity at init and Var(s_L) = Var(s_0); the last layer still receives gradient (its input is
  non-zero), so the branch switches on after the first step.
* ``mode="scale"`` — multiply the branch's last layer by ``factor`` (default 1/√L for L branches):
  Var(s_L) ≈ Var(s_0)·(1 + L·factor²) = 2·Var(s_0), whatever the depth.
* ``mode="fixup"`` — Fixup's rule: the last layer 0 and the other m−1 layers of a branch with m
  weight layers scaled by L^(−1/(2m−2)), so their contribution after training starts is depth-balanced.

Branches are found by :func:`find_residual_branches`, in one of two ways that give the same branches where
both apply (tests/theory/test_residual.py checks they agree):

* with ``example_input`` — one forward pass recorded op by op (:mod:`initlab.theory.dataflow`) and its
  residual adds (:mod:`initlab.theory.streams`, which ``initlab.plan`` attaches to every plan made with an
  example input). It sees what runs: transformers' models, layers used through functional ops, HF ``Conv1D``,
  projection shortcuts (ResNet downsample blocks), layer scales; it needs data. :func:`~initlab.theory.lsuv.lsuv`
  and the ``skipinit`` preset use it, since they have data.
* without — ``torch.fx`` symbolic tracing, kept because :func:`residual_init` takes a bare model: no data
  is needed, but fx fails on Python control flow that depends on values or shapes (most transformers
  models) and sees only ``nn.Linear``/``nn.Conv*`` modules. It looks for additions ``a + b`` where ``a`` is an
  ancestor of ``b`` (``a`` is the skip, ``b`` the branch).

Either way the branch's last layer is the weight layer closest to the sum (for an
``nn.MultiheadAttention`` branch, its ``out_proj``). Models neither can read take the branches' last
layers directly: ``branches=[layer, ...]``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from .streams import ResidualStream, residual_streams

__all__ = ["ResidualBranch", "ResidualChange", "branches_from_streams", "find_residual_branches", "residual_init"]

_WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)
_ADDS = {operator.add, operator.iadd, torch.add}


@dataclass(frozen=True)
class ResidualBranch:
    """One ``x + f(x)`` in the model: the module whose forward does the sum (``block``; ``None`` when
    it is the top-level model's own forward), and the weight layers of ``f`` in execution order."""

    block_name: str
    block: nn.Module | None = field(compare=False, repr=False)
    layer_names: tuple[str, ...]
    layers: tuple[nn.Module, ...] = field(compare=False, repr=False)

    @property
    def last_layer(self) -> nn.Module:
        return self.layers[-1]

    @property
    def last_layer_name(self) -> str:
        return self.layer_names[-1]


@dataclass(frozen=True)
class ResidualChange:
    """What :func:`residual_init` did to one layer, and why (``reason`` reads as plan text)."""

    block_name: str
    layer_name: str
    action: str
    factor: float
    reason: str


def _ancestors(node: fx.Node, memo: dict[fx.Node, frozenset[fx.Node]]) -> frozenset[fx.Node]:
    # Iterative post-order, since graphs of deep models overflow recursion.
    stack = [node]
    while stack:
        n = stack[-1]
        if n in memo:
            stack.pop()
            continue
        pending = [a for a in n.all_input_nodes if a not in memo]
        if pending:
            stack.extend(pending)
            continue
        acc: set[fx.Node] = set()
        for a in n.all_input_nodes:
            acc.add(a)
            acc |= memo[a]
        memo[n] = frozenset(acc)
        stack.pop()
    return memo[node]


def _is_add(node: fx.Node) -> bool:
    if node.op == "call_function" and node.target in _ADDS:
        return True
    return node.op == "call_method" and node.target in ("add", "add_", "__add__", "__iadd__")


def find_residual_branches(
    model: nn.Module, layers: tuple[type[nn.Module], ...] | None = None, *, example_input: Any = None
) -> list[ResidualBranch]:
    """Every ``skip + branch`` addition in ``model`` whose branch contains a weight layer.

    With ``example_input``: from one forward pass (see the module docstring); ``layers`` (default: any
    module whose ``weight`` is the kernel an op used) filters the branch's layers. Without: from the
    ``torch.fx`` graph, with ``layers`` (default ``nn.Linear`` and ``nn.Conv*``) as the weight layers;
    raises ``ValueError`` (naming the cause) when fx cannot trace the model — pass ``example_input``, or
    the branches explicitly to :func:`residual_init`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}.")
    if example_input is not None:
        return branches_from_streams(model, residual_streams(model, example_input), layers)
    layers = _WEIGHT_LAYERS if layers is None else layers
    try:
        gm = fx.symbolic_trace(model)
    except Exception as err:  # fx raises many types for untraceable Python control flow
        raise ValueError(
            f"model: torch.fx could not trace {type(model).__name__} ({type(err).__name__}: {err}); name the "
            "residual branches explicitly (branches=[last layer of each branch])."
        ) from err
    modules = dict(model.named_modules())
    nodes = list(gm.graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    memo: dict[fx.Node, frozenset[fx.Node]] = {}
    out: list[ResidualBranch] = []
    for node in nodes:
        if not _is_add(node):
            continue
        args = [a for a in node.args[:2] if isinstance(a, fx.Node)]
        if len(args) != 2:
            continue
        a, b = args
        anc_a, anc_b = _ancestors(a, memo), _ancestors(b, memo)
        if a in anc_b:
            skip, branch, anc_skip, anc_branch = a, b, anc_a, anc_b
        elif b in anc_a:
            skip, branch, anc_skip, anc_branch = b, a, anc_b, anc_a
        else:
            continue
        inside = (set(anc_branch) | {branch}) - set(anc_skip) - {skip}
        found = sorted(
            (n for n in inside if n.op == "call_module"
             and isinstance(modules.get(n.target), (*layers, nn.MultiheadAttention))),
            key=index.__getitem__,
        )
        if not found:
            continue
        # An attention module is a leaf of the trace; its last weight layer is its output projection.
        names_, mods_ = [], []
        for n in found:
            m = modules[n.target]
            if isinstance(m, nn.MultiheadAttention):
                names_.append(f"{n.target}.out_proj")
                mods_.append(m.out_proj)
            else:
                names_.append(str(n.target))
                mods_.append(m)
        stack = node.meta.get("nn_module_stack") or {}
        block_name = next(reversed(stack.values()))[0] if stack else ""
        out.append(
            ResidualBranch(
                block_name=block_name or type(model).__name__,
                block=modules.get(block_name) if block_name else None,
                layer_names=tuple(names_),
                layers=tuple(mods_),
            )
        )
    return out


def branches_from_streams(model: nn.Module, streams: list[ResidualStream],
                          layers: tuple[type[nn.Module], ...] | None = None) -> list[ResidualBranch]:
    """The :class:`ResidualBranch` es of residual streams already found (:func:`~initlab.theory.streams.find_streams`):
    for each residual add, the modules holding its branch's kernels as their ``weight`` (of ``layers`` if
    given), in execution order; an add whose output projection is no such module is left out."""
    owners: dict[int, tuple[str, nn.Module]] = {}
    for mpath, m in model.named_modules():
        w = m._parameters.get("weight") if isinstance(m, nn.Module) else None
        if isinstance(w, torch.Tensor):
            owners.setdefault(id(w), (mpath, m))
    params = dict(model.named_parameters())
    out: list[ResidualBranch] = []
    for add in (a for s in streams for a in s.adds):
        names_, mods_ = [], []
        for k in add.branch_kernels:
            owner = owners.get(id(params[k])) if k in params else None
            if owner is None or (layers is not None and not isinstance(owner[1], layers)):
                continue
            names_.append(owner[0])
            mods_.append(owner[1])
        if not mods_ or names_[-1] != owners.get(id(params.get(add.out_proj)), ("",))[0]:
            continue  # the branch's output projection is not a layer residual_init can scale
        out.append(ResidualBranch(
            block_name=add.module or type(model).__name__,
            block=model.get_submodule(add.module) if add.module else None,
            layer_names=tuple(names_), layers=tuple(mods_),
        ))
    return out


def residual_init(
    model: nn.Module,
    mode: str = "zero",
    *,
    factor: float | None = None,
    branches: Sequence[ResidualBranch] | Sequence[nn.Module] | None = None,
    example_input: Any = None,
) -> list[ResidualChange]:
    """Zero-init or down-scale the last layer of every residual branch (see the module docstring).

    ``mode``: ``"zero"``, ``"scale"`` (× ``factor``, default 1/√L) or ``"fixup"``. ``branches``: found
    automatically when ``None`` (by running ``example_input`` if given, else by ``torch.fx``); else
    :class:`ResidualBranch` objects or the branches' last layers.
    Returns one :class:`ResidualChange` per layer touched, with the reason in words.

    Call it *after* the layers' own initialization (it rescales what is there).
    """
    if mode not in ("zero", "scale", "fixup"):
        raise ValueError(f"mode: expected 'zero', 'scale' or 'fixup', got {mode!r}.")
    if branches is None:
        found = find_residual_branches(model, example_input=example_input)
        if not found:
            raise ValueError(
                f"model: {type(model).__name__} has no x + f(x) addition with a weight layer in its branch; "
                "nothing to do (pass branches= if fx misses them)."
            )
    else:
        names = {m: n for n, m in model.named_modules()}
        found = []
        for i, b in enumerate(branches):
            if isinstance(b, ResidualBranch):
                found.append(b)
            elif isinstance(b, nn.Module) and b in names:
                found.append(ResidualBranch(names[b].rpartition(".")[0] or type(model).__name__, None,
                                            (names[b],), (b,)))
            else:
                raise ValueError(f"branches: item {i} ({b!r}) is neither a ResidualBranch nor a layer of the model.")
        if not found:
            raise ValueError("branches: is empty; pass None to find the branches automatically.")
    depth = len(found)
    if factor is not None and (isinstance(factor, bool) or not isinstance(factor, (int, float))
                               or not math.isfinite(factor) or factor < 0):
        raise ValueError(f"factor: must be a finite number >= 0, got {factor!r}.")
    changes: list[ResidualChange] = []
    with torch.no_grad():
        for br in found:
            last = br.last_layer
            if mode == "scale":
                f = (1.0 / math.sqrt(depth)) if factor is None else float(factor)
                _scale(last, f)
                changes.append(ResidualChange(
                    br.block_name, br.last_layer_name, "scale", f,
                    f"last layer of residual branch {br.block_name!r} × {f:.4g} (1/√{depth} for {depth} branches): "
                    f"the stream's variance grows to ≈ (1 + L·{f:.3g}²)·Var(input) instead of (L+1)·Var(input)"))
                continue
            if mode == "fixup":
                m = len(br.layers)
                f = depth ** (-1.0 / (2 * m - 2)) if m >= 2 else 1.0
                for name, layer in zip(br.layer_names[:-1], br.layers[:-1], strict=True):
                    _scale(layer, f)
                    changes.append(ResidualChange(
                        br.block_name, name, "scale", f,
                        f"Fixup: inner layer of a {m}-layer branch × L^(−1/(2m−2)) = {depth}^(−1/{2 * m - 2}) = {f:.4g}"))
            _scale(last, 0.0)
            changes.append(ResidualChange(
                br.block_name, br.last_layer_name, "zero", 0.0,
                f"last layer of residual branch {br.block_name!r} zeroed (SkipInit/Fixup): the block is the identity "
                "at init, so the stream keeps its input variance at any depth; the layer still gets gradient"))
    return changes


def _scale(layer: nn.Module, f: float) -> None:
    for pname in ("weight", "bias"):
        p = getattr(layer, pname, None)
        if isinstance(p, torch.Tensor):
            if f == 0.0:
                p.zero_()
            else:
                p.mul_(f)
