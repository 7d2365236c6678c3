"""What inspection measures on transformers, during its one recorded run: the residual streams (per
residual add, the RMS of the skip, of the branch and of their sum, and the mean cosine between the
tokens of each sequence after the add) and the attention maps (entropy per head).

**Structure once, statistics in the run.** Which adds are residual, which operand is the skip, which
stream and block each belongs to, comes from the trace of :mod:`initlab.theory.streams`
(``record_dataflow`` + ``find_streams``: one forward pass without grad), made once per model and input
signature and cached (:func:`structure`, :func:`cached`). An add is identified in both passes by the
module whose forward ran it and its rank among that module's adds of two same-shape tensors, so the
inspected run — with grad, in the model's own train/eval mode — and the trace agree on it. On the first
inspection the run measures every such add (both operands) and the model is traced after it, only if
it made any; later inspections measure the residual adds alone. When the run does not meet every add
the trace found (data-dependent control flow), its residual statistics are left out and the report
says why.

**Attention.** ``F.scaled_dot_product_attention`` never shows its probabilities; they are recomputed
from the call's arguments (:func:`initlab.inspect.tokens.sdpa_probabilities`: q·kᵀ·scale + mask, causal,
grouped-query heads). An explicit ``softmax`` over the last axis of a 4-D tensor is an eager attention
map, read as is. ``F.multi_head_attention_forward`` (``nn.MultiheadAttention``) is called once more with
``need_weights=True, average_attn_weights=False`` and no dropout, for its per-head weights. This is
what HF ``output_attentions`` returns under eager attention, without switching the model's attention
implementation.

Only models whose code reaches torch through Python (anything outside ``torch.nn``, which is when
inspection's function mode is on) are traced and watched; a model built from ``torch.nn`` layers alone
has no residual add or attention call to see, and pays nothing.
"""

from __future__ import annotations

import inspect as pyinspect
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..theory.dataflow import ADD, op_name, record_dataflow
from ..theory.streams import ResidualAdd, ResidualStream, find_streams
from .rows import AttentionStats, ResidualStats
from .statistics import _norm
from .tokens import attention_entropy, sdpa_entropy, token_cosine

__all__ = [
    "Site",
    "Structure",
    "Watch",
    "attention_stats",
    "cached",
    "forget",
    "residual_stats",
    "signature",
    "structure",
]

_SOFTMAX = "softmax"
_SDPA = "scaled_dot_product_attention"
_MHA = "multi_head_attention_forward"
_IN_PLACE = frozenset({"__iadd__", "add_"})


@dataclass(frozen=True)
class Site:
    """A residual add as the run finds it: its stream, its 1-based position there, the trace's record and
    which operand (0 or 1) is the skip."""

    stream: ResidualStream
    position: int
    add: ResidualAdd
    skip: int


@dataclass
class Structure:
    """The residual streams of a model on an input signature, and the key of each add in the run:
    ``(module path, rank among that module's adds of two same-shape tensors)``. ``note`` says why there
    are none when the trace failed."""

    streams: list[ResidualStream] = field(default_factory=list)
    sites: dict[tuple[str, int], Site] = field(default_factory=dict)
    note: str | None = None


_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[Any, Structure]] = weakref.WeakKeyDictionary()


def _signature(x: Any) -> Any:
    """The input's structure: dict keys, tuple positions, and each tensor's shape, dtype and device."""
    if isinstance(x, torch.Tensor):
        return ("T", tuple(x.shape), x.dtype, x.device)
    if isinstance(x, dict):
        return ("D", tuple((k, _signature(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return ("L", tuple(_signature(v) for v in x))
    return ("O", type(x).__name__)


def _candidate(op: str, shapes: tuple[Any, ...]) -> bool:
    return op in ADD and len(shapes) == 2 and shapes[0] == shapes[1]


def signature(tree: list[nn.Module], params: list[tuple[str, torch.Tensor]], x: Any) -> Any:
    """What a cached :class:`Structure` is valid for: the module tree and the parameters (the same
    objects, the same shapes) and the input's signature (keys, shapes, dtypes, devices)."""
    return (tuple(id(m) for m in tree), tuple((id(p), tuple(p.shape)) for _, p in params), _signature(x))


def cached(model: nn.Module, sig: Any) -> Structure | None:
    """The structure traced for ``model`` under the same :func:`signature`, or None."""
    hit = _CACHE.get(model)
    return hit[1] if hit is not None and hit[0] == sig else None


def structure(model: nn.Module, x: Any, sig: Any) -> Structure:
    """Trace ``model`` on ``x`` (one forward pass without grad; the model left as it was) for its
    :class:`Structure`, and cache it under ``sig`` (:func:`signature`)."""
    try:
        flow = record_dataflow(model, x)
        streams = find_streams(flow)
    except Exception as e:  # the trace is extra information: its failure leaves the old block reading
        found = Structure(note=f"the residual-stream trace failed ({type(e).__name__}: {e})")
    else:
        counts: dict[str, int] = {}
        key_of: dict[int, tuple[str, int]] = {}
        for n in flow.nodes:
            if _candidate(n.op, n.in_shapes):
                k = counts[n.module] = counts.get(n.module, 0) + 1
                key_of[n.index] = (n.module, k)
        sites = {}
        for s in streams:
            for pos, a in enumerate(s.adds, start=1):
                if a.node in key_of:
                    sites[key_of[a.node]] = Site(s, pos, a, a.skip_operand)
        found = Structure(streams, sites)
        if flow.errors:
            found.note = f"the trace could not read {len(flow.errors)} op(s), e.g. {flow.errors[0]}"
    _CACHE[model] = (sig, found)
    return found


def forget(model: nn.Module) -> None:
    """Drop ``model``'s cached structure (the next inspection traces it again)."""
    _CACHE.pop(model, None)


def _ms(t: torch.Tensor) -> float:
    """Mean square of ``t`` (from ‖t‖₂, safe against float32 over- and underflow)."""
    n = t.numel()
    return _norm(t) ** 2 / n if n else math.nan


class Watch:
    """One run's transformer statistics. :mod:`initlab.inspect.hooks`' function mode hands it the calls
    :meth:`kind` names, with initlab's own work marked by ``begin``/``end`` (no grad, not recorded).

    With the model's :class:`Structure` known (``found``), only its residual adds are measured. Without
    (``found=None``: the first inspection of this model and input signature), every add of two same-shape
    floating-point tensors is — both operands, as either may be the skip — and :meth:`residual_rows`
    picks the residual ones once the structure is traced after the run; a model whose run makes no
    such add is never traced."""

    def __init__(self, found: Structure | None, begin: Callable[[], bool], end: Callable[[bool], None],
                 root: str | None = None) -> None:
        self.sites = None if found is None else found.sites
        self.root = root  # the path inspection gives the model itself, which the trace calls ""
        self.begin, self.end = begin, end
        self.counts: dict[str, int] = {}
        self.adds: dict[tuple[str, int], dict[str, Any]] = {}
        self.attention: list[dict[str, Any]] = []
        self.attention_calls: dict[str, int] = {}
        # the autograd node that made each measured add's output, for ‖dL/dx‖ along the stream
        self.edges: list[tuple[Any, int, dict[str, Any]]] = []

    @property
    def saw_adds(self) -> bool:
        """Whether the run made an add of two same-shape tensors (a possible residual add)."""
        return bool(self.counts)

    def kind(self, func: Any) -> str | None:
        """``"add"`` (unless the model is known to have no residual add), ``"softmax"``, ``"sdpa"``,
        ``"mha"`` or None."""
        name = op_name(func)
        if name in ADD:
            return None if self.sites is not None and not self.sites else "add"
        return {_SOFTMAX: "softmax", _SDPA: "sdpa", _MHA: "mha"}.get(name)

    def handle(self, kind: str, func: Any, args: tuple, kwargs: dict, module: str) -> Any:
        if module == self.root:
            module = ""
        if kind == "add":
            return self._add(func, args, kwargs, module)
        out = func(*args, **kwargs)
        grad = self.begin()
        try:
            if kind == "softmax":
                self._softmax(out, args, kwargs, module)
            elif kind == "sdpa":
                self._sdpa(args, kwargs, module)
            else:
                self._mha(func, args, kwargs, module)
        finally:
            self.end(grad)
        return out

    # ---- residual adds ----
    def _add(self, func: Any, args: tuple, kwargs: dict, module: str) -> Any:
        ts = [a for a in args if isinstance(a, torch.Tensor)] + [
            v for v in kwargs.values() if isinstance(v, torch.Tensor)
        ]
        if len(ts) != 2 or ts[0].shape != ts[1].shape:
            return func(*args, **kwargs)
        key = (module, self.counts.get(module, 0) + 1)
        self.counts[module] = key[1]
        if not ts[0].is_floating_point():
            return func(*args, **kwargs)
        if self.sites is None:
            cos = (0, 1)  # not known yet which operand is the skip: both
        else:
            site = self.sites.get(key)
            if site is None:
                return func(*args, **kwargs)
            cos = (site.skip,) if site.position == 1 else ()
        grad = self.begin()
        try:  # the operands before the call: an in-place add overwrites one of them
            row: dict[str, Any] = {"ms0": _ms(ts[0]), "ms1": _ms(ts[1]), "cos0": None, "cos1": None}
            for i in cos:
                row[f"cos{i}"] = token_cosine(ts[i])
        finally:
            self.end(grad)
        out = func(*args, **kwargs)
        grad = self.begin()
        try:
            row["ms_out"] = _ms(out)
            row["cos_out"] = token_cosine(out)
            row["tokens"] = int(out.shape[1]) if out.dim() == 3 else None
        finally:
            self.end(grad)
        self.adds[key] = row
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            self.edges.append((out.grad_fn, out.output_nr, row))
        return out

    def residual_rows(self, found: Structure) -> tuple[list[dict[str, Any]], str | None]:
        """One row per residual add of ``found``, in stream order; or ([], why) when the run missed some."""
        missing = [k for k in found.sites if k not in self.adds]
        if missing:
            mod, n = missing[0]
            return [], (f"the inspected run did not reach {len(missing)} of the {len(found.sites)} residual adds "
                        f"the trace found (e.g. add #{n} in {mod or '<model>'}): data-dependent control flow")
        rows = []
        for key, site in ordered_sites(found):
            r, k = self.adds[key], site.skip
            rows.append({
                "path": f"{site.stream.index}:{site.position}", "call": 1,
                "ms_skip": r[f"ms{k}"], "ms_branch": r[f"ms{1 - k}"], "ms_out": r["ms_out"],
                "cos_in": r[f"cos{k}"] if site.position == 1 else None, "cos_out": r["cos_out"],
                "tokens": r["tokens"], "grad_norm": r.get("grad_norm"),
            })
        return rows, None

    # ---- attention ----
    def _row(self, module: str, source: str, shape: tuple[int, ...], ent: tuple[list[float], list[Any]]) -> None:
        n = self.attention_calls[module] = self.attention_calls.get(module, 0) + 1
        self.attention.append({
            "path": module, "call": n, "source": source, "heads": len(ent[0]),
            "queries": int(shape[-2]), "keys": int(shape[-1]),
            "entropy": ent[0], "entropy_normalized": ent[1],
        })

    def _softmax(self, out: Any, args: tuple, kwargs: dict, module: str) -> None:
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or not out.is_floating_point():
            return
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if dim not in (-1, 3):
            return
        self._row(module, "softmax", tuple(out.shape), attention_entropy(out))

    def _sdpa(self, args: tuple, kwargs: dict, module: str) -> None:
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        a = dict(zip(names, args, strict=False)) | kwargs
        q, k = a["query"], a["key"]
        ent = sdpa_entropy(q, k, a.get("attn_mask"), bool(a.get("is_causal", False)), a.get("scale"),
                           bool(a.get("enable_gqa", False)))
        self._row(module, "sdpa", (q.shape[-2], k.shape[-2]), ent)

    def _mha(self, func: Any, args: tuple, kwargs: dict, module: str) -> None:
        bound = pyinspect.signature(func).bind(*args, **kwargs)
        bound.arguments.update(need_weights=True, average_attn_weights=False, dropout_p=0.0, training=False)
        _, w = func(*bound.args, **bound.kwargs)
        if isinstance(w, torch.Tensor) and w.dim() in (3, 4):
            self._row(module, "mha", tuple(w.shape), attention_entropy(w))


def ordered_sites(found: Structure) -> list[tuple[tuple[str, int], Site]]:
    """(key, site) in stream order (the order of :meth:`Watch.residual_rows`)."""
    return sorted(found.sites.items(), key=lambda kv: (kv[1].stream.index, kv[1].position))


def residual_stats(found: Structure, rows: list[dict[str, Any]]) -> list[ResidualStats]:
    """:class:`ResidualStats` from the (averaged) rows of :meth:`Watch.residual_rows`."""
    out: list[ResidualStats] = []
    first: dict[int, float] = {}
    for (_, site), r in zip(ordered_sites(found), rows, strict=True):
        a, s = site.add, site.stream
        ms0 = first.setdefault(s.index, r["ms_skip"])
        out.append(ResidualStats(
            index=len(out), stream=s.index, stream_name=s.name, position=site.position, n_branches=s.n_branches,
            block=a.block, module=a.module, out_proj=a.out_proj, placement=a.placement,
            rms_skip=math.sqrt(r["ms_skip"]), rms_branch=math.sqrt(r["ms_branch"]), rms_out=math.sqrt(r["ms_out"]),
            ratio=_sqrt_ratio(r["ms_branch"], r["ms_skip"]), growth=_sqrt_ratio(r["ms_out"], ms0),
            grad_norm=r.get("grad_norm"), token_cosine=r.get("cos_out"), token_cosine_in=r.get("cos_in"),
            tokens=r.get("tokens"), branch_kernels=list(a.branch_kernels),
        ))
    return out


def _sqrt_ratio(a: float, b: float) -> float:
    if b > 0 and math.isfinite(b):
        return math.sqrt(a / b)
    return math.nan if a == 0 or not math.isfinite(a) else math.inf


def attention_stats(runs: list[list[dict[str, Any]]]) -> list[AttentionStats]:
    """:class:`AttentionStats` from each run's attention rows, averaged over runs (per head)."""
    if not runs or not runs[0]:
        return []
    first = runs[0]
    for k, r in enumerate(runs[1:], start=2):
        if [(x["path"], x["call"], x["heads"]) for x in r] != [(x["path"], x["call"], x["heads"]) for x in first]:
            raise ValueError(f"inspect: run {k} made different attention calls than run 1 (data-dependent control "
                             "flow); cannot average batches or seeds for this model — inspect them one at a time.")
    out = []
    for j, row in enumerate(first):
        ent = [_mean([r[j]["entropy"][h] for r in runs]) for h in range(row["heads"])]
        norm = [_mean([r[j]["entropy_normalized"][h] for r in runs]) for h in range(row["heads"])]
        out.append(AttentionStats(
            index=j, path=row["path"], call=row["call"], source=row["source"], heads=row["heads"],
            queries=row["queries"], keys=row["keys"], entropy=ent, entropy_normalized=norm,  # type: ignore[arg-type]
        ))
    return out


def _mean(vals: list[Any]) -> float | None:
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None
