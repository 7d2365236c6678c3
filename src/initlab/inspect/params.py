"""Parameter statistics: each parameter's std, mean, ‖W‖, gradient norm and ‖∂L/∂W‖/‖W‖ for the report's
parameter table, with the sums of many tensors taken together (one kernel call or host round trip per
device and dtype)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..initializers.fans import fans
from . import fused
from .discovery import _own_params
from .rows import ParamStats
from .statistics import _FLOATS, _from_sums, _norm, _std_mean

_SMALL_PARAM = 4096  # float32 parameters up to this size get their sums in float64 (biases, norms)


def _weight_sums(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Σw and Σw² of a float parameter as 0-d tensors (no host round trip until the end of the run);
    with the fused kernels, :meth:`_Recorder._weight_stats` takes float64 sums instead."""
    d = p.reshape(-1)  # (called with autograd off)
    return d.sum(), torch.dot(d, d)


def _groups(tensors: Sequence[torch.Tensor], dtypes: tuple[torch.dtype, ...]) -> list[list[int]]:
    """Indices of the dense ``tensors`` of each (device, dtype), for dtypes in ``dtypes``: the tensors one
    batched call (``torch.stack``, ``torch._foreach_norm``) can take together."""
    groups: dict[tuple[Any, Any], list[int]] = {}
    for i, t in enumerate(tensors):
        if t.dtype in dtypes and t.layout == torch.strided:
            groups.setdefault((t.device, t.dtype), []).append(i)
    return list(groups.values())


def _sums_many(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[float, float]]:
    """(Σx, Σx²) pairs of 0-d tensors as Python floats, with one host round trip per device and dtype."""
    out: list[tuple[float, float] | None] = [None] * len(pairs)
    for idx in _groups([a for a, _ in pairs], _FLOATS):
        flat = torch.stack([t for i in idx for t in pairs[i]]).tolist()
        for k, i in enumerate(idx):
            out[i] = (flat[2 * k], flat[2 * k + 1])
    return out  # type: ignore[return-value]


def _fused_sums(tensors: Sequence[torch.Tensor]) -> dict[int, tuple[float, float]]:
    """(Σx, Σx²) in float64 of each tensor the compiled kernels take, by index: one kernel call per
    dtype for all of them (``moments_many``) instead of one Python round trip each."""
    refs = [(i, r) for i, t in enumerate(tensors) if (r := fused.ref(t)) is not None]
    out: dict[int, tuple[float, float]] = {}
    for wide in (False, True):
        group = [(i, r) for i, r in refs if r[2] is wide]
        if group:
            addrs = np.array([r[0] for _, r in group], dtype=np.int64)
            sizes = np.array([r[1] for _, r in group], dtype=np.int64)
            sums = fused.kernels().moments_many(addrs, sizes, wide).tolist()
            out.update({i: (s1, s2) for (i, _), (s1, s2) in zip(group, sums, strict=True)})
    return out


def _std_mean_many(tensors: Sequence[torch.Tensor]) -> list[tuple[float, float]]:
    """:func:`_std_mean` of each tensor, with the sums of every float32/float64 tensor of a device taken
    together instead of two reductions and two host round trips per tensor: small float32 tensors
    (biases, norm weights: ≤ 4096 elements) concatenated in float64 and summed by segment — so that an
    all-zero bias is exactly (0, 0), not squares that may have underflowed — and the others with
    ``torch._foreach_norm`` for Σx² and one stacked ``tolist`` for Σx. Any tensor the one-pass formula
    does not suit gets :func:`_std_mean` itself. With the compiled kernels, every tensor they take is
    summed in float64 by one call (:func:`_fused_sums`) instead."""
    done = {
        i: _from_sums(tensors[i].numel(), s1, s2, safe=True)
        for i, (s1, s2) in _fused_sums(tensors).items()
        if tensors[i].numel() >= 2
    }
    out: list[tuple[float, float] | None] = [done.get(i) for i in range(len(tensors))]
    for idx in _groups(tensors, _FLOATS):
        idx = [i for i in idx if tensors[i].numel() >= 2 and i not in done]
        small = [i for i in idx if tensors[i].dtype == torch.float32 and tensors[i].numel() <= _SMALL_PARAM]
        large = [i for i in idx if i not in set(small)]
        if small:
            d = torch.cat([tensors[i].detach().reshape(-1) for i in small]).to(torch.float64)
            lengths = torch.tensor([tensors[i].numel() for i in small], device=d.device)
            s1 = torch.segment_reduce(d, "sum", lengths=lengths)
            s2 = torch.segment_reduce(d * d, "sum", lengths=lengths)
            both = torch.stack([s1, s2]).tolist()
            for k, i in enumerate(small):
                out[i] = _from_sums(tensors[i].numel(), both[0][k], both[1][k], safe=True)
        if large:
            ds = [tensors[i].detach() for i in large]
            norms = torch._foreach_norm(ds)
            sums = torch.stack([d.sum() for d in ds])
            both = torch.stack([torch.stack(norms).to(sums.dtype), sums]).tolist()
            for k, i in enumerate(large):
                out[i] = _from_sums(ds[k].numel(), both[1][k], both[0][k] ** 2)
    return [o if o is not None else _std_mean(t) for o, t in zip(out, tensors, strict=True)]


def _param_stats(
    model: Any,
    params: list[tuple[str, torch.Tensor]],
    hooked: list[tuple[str, nn.Module, bool]],
    keras: bool,
    grad_runs: list[dict[int, float | None]],
    weight_sums: dict[int, tuple[Any, Any]] | None = None,
    moments: dict[int, tuple[float, float]] | None = None,
) -> list[ParamStats]:
    """One :class:`ParamStats` per parameter. ``moments``: (std, mean) already known by ``id`` — a sharded
    model's, reduced over its shards (:mod:`initlab.inspect.sharded`) — used as they are."""
    owner: dict[int, tuple[str, str]] = {}
    for path, m, _ in hooked:
        for pname, p in _own_params(m, keras):
            owner.setdefault(id(p), (path, pname if keras else f"{path}.{pname}"))
    layout = "keras" if keras else "torch"
    fan_cache: dict[tuple[int, ...], int | None] = {}
    weight_sums = weight_sums or {}
    ids = [id(p) for _, p in params]
    # float64 sums from a fused pass are final; torch's 0-d float32 sums come back in one round trip
    known: dict[int, tuple[float, float] | None] = dict(moments or {})
    taken: list[torch.Tensor] = []
    for (_, p), pid in zip(params, ids, strict=True):
        sums = weight_sums.get(pid)
        if sums is None or pid in known:
            continue
        if isinstance(sums[0], float):
            known[pid] = _from_sums(p.numel(), *sums, safe=True)
        else:
            taken.append(p)
    for p, (s1, s2) in zip(taken, _sums_many([weight_sums[id(p)] for p in taken]), strict=True):
        known[id(p)] = _from_sums(p.numel(), s1, s2)
    rest = [p for (_, p), pid in zip(params, ids, strict=True) if known.get(pid) is None]
    known.update({id(p): sm for p, sm in zip(rest, _std_mean_many([p.detach() for p in rest]), strict=True)})
    runs = len(grad_runs)
    out = []
    for (name, p), pid in zip(params, ids, strict=True):
        sm = known[pid]
        mod, pretty = owner.get(pid, ("", name))
        n = p.numel()
        if not n:
            sm = (0.0, 0.0)
        # ‖W‖² = Σw² = (n − 1)·std² + n·mean²: no second pass over the weights.
        norm = math.sqrt(max((n - 1) * sm[0] ** 2 + n * sm[1] ** 2, 0.0)) if n > 1 else float(_norm(p.detach()))
        if runs == 1:
            g = grad_runs[0].get(pid)
        else:
            gvals = [r.get(pid) for r in grad_runs]
            g = sum(gvals) / runs if all(v is not None for v in gvals) else None  # type: ignore[arg-type]
        shape = tuple(p.shape)
        fan_in = None
        if len(shape) >= 2:
            if shape not in fan_cache:
                try:
                    fan_cache[shape] = int(fans(shape, layout).fan_in)
                except ValueError:
                    fan_cache[shape] = None  # a layout fans() does not know: reported as unknown (None)
            fan_in = fan_cache[shape]
        out.append(
            ParamStats(
                name=pretty,
                module=mod,
                shape=shape,
                layout=layout,
                fan_in=fan_in,
                mean=float(sm[1]) if n else 0.0,
                std=float(sm[0]) if n > 1 else 0.0,
                norm=norm,
                grad_norm=g,
                ratio=(g / norm) if g is not None and norm > 0 else None,
                requires_grad=bool(p.requires_grad),
            )
        )
    return out
