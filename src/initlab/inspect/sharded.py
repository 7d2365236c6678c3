"""``inspect`` on a sharded model: every rank measures its part, and the report is reduced over the ranks.

Called by :func:`initlab.inspect` when a process group is up and a parameter is a DTensor. Each rank
runs its own batch through its model with the usual hooks; this module turns the per-rank numbers into
the numbers of the whole.

*Parameter statistics* (any sharding): each rank's (n, Σw, Σw²) of its local shard, in float64, one
``all_gather_object`` for all parameters; each element is counted once — within a mesh only coordinate 0
of its ``Replicate`` dimensions counts, and of the meshes that hold a parameter of a given name only the
one with the lowest ranks (FSDP2 over tensor parallelism puts a TP-less parameter on one data-parallel
submesh per TP rank: copies that its placements do not mention, which a plain world sum counts twice).

*Activation and gradient statistics* under data parallelism — every DTensor parameter on a 1-D mesh of
all ranks, sharded on dim 0 or replicated (FSDP2, DDP-style layouts) — where rank r runs its shard of the
batch: the report equals the single-process report on the rank-ordered concatenation of the shards,
within float tolerance. Per run: one ``all_gather_object`` checks that every rank recorded the same calls,
one ``all_reduce`` of a packed float64 vector sums every row's (n, Σz, Σz²) in and out, saturated counts,
‖dL/dz‖², the residual blocks' sums and the loss, and one ``all_reduce`` (MAX) of a uint8 vector marks
the units that fire on some rank (a unit is dead only if dead on every rank's batch). Exact for sums;
gradients and the loss combine exactly for the default loss and any loss that sums over samples (a
mean-reduced ``loss_fn`` gives each rank's mean, and the sum of those). The mean pairwise cosine (and the
live-unit cosine) is over the first 64 inputs of the batch, so it is rank 0's value: the single-process
one when rank 0's shard holds at least 64 inputs, rank 0's own otherwise.

*Tensor parallelism* shards features: a column-parallel layer's output on each rank is a slice of the
features, a row-parallel one's is the whole, and nothing on the module says which. Activation rows are
then rank 0's own local tensors (the report's ``meta`` says so); parameter statistics stay exact.
Parameter gradient norms are not measured on DTensor parameters (FSDP2 computes them on its unsharded
copies and reduce-scatters them inside its own backward hooks).
"""

from __future__ import annotations

import hashlib
import math
import sys
from typing import Any

import torch

from ..distributed import comm
from ..distributed.placements import counts_once, is_dtensor, local_tensor, mesh_ranks

__all__ = ["Sharding", "detect", "reshard"]

_ROW = 14  # floats per row in the packed vector (see Sharding.reduce_run)
_BLOCK = 7


def _sums(n: float, mean: float | None, std: float | None) -> tuple[float, float]:
    """(Σx, Σx²) of ``n`` values from their mean and unbiased std."""
    if not n or mean is None or std is None:
        return 0.0, 0.0
    return n * mean, (n - 1) * std * std + n * mean * mean


def _moments(n: float, s1: float, s2: float) -> tuple[float | None, float | None]:
    """(std, mean) from float64 sums; (None, None) with nothing counted."""
    if n < 1:
        return None, None
    mean = s1 / n
    if n < 2:
        return 0.0, mean
    return math.sqrt(max(0.0, (s2 - n * mean * mean) / (n - 1))), mean


def _numel(shape: Any) -> float:
    return float(math.prod(shape)) if shape is not None else 0.0


class Sharding:
    """This rank's place among the ranks; ``data_parallel``: whether activation rows are reduced."""

    def __init__(self, rank: int, world: int, data_parallel: bool) -> None:
        self.rank, self.world, self.data_parallel = rank, world, data_parallel

    def note(self) -> str:
        if self.data_parallel:
            return (f"data parallel over {self.world} rank{'s' if self.world > 1 else ''}: activation and gradient statistics summed over "
                    "every rank's batch shard; cosine from rank 0's first inputs")
        return (f"{self.world} ranks with tensor parallelism: activation statistics are rank 0's local tensors "
                "(features are sharded); parameter statistics cover every shard")

    # -- rows of one run ------------------------------------------------------------------------------

    def reduce_run(self, rows: list[dict[str, Any]], blocks: list[dict[str, Any]],
                   units: list[tuple[dict[str, Any], torch.Tensor]], loss: float) -> float:
        """Replace this rank's rows (in place) with the reduced ones; returns the reduced loss."""
        if not self.data_parallel:
            return loss
        signature = repr([(r["path"], r.get("call"), r["kind"], _tail(r.get("in_shape")), _tail(r.get("out_shape")))
                          for r in rows] + [(b["path"], b["call"]) for b in blocks])
        digests = comm.gather_objects(hashlib.sha256(signature.encode()).hexdigest())
        if len(set(digests)) != 1:
            raise ValueError(
                "inspect: the ranks recorded different module calls (data-dependent control flow, or different "
                "models): a sharded report needs the same calls on every rank."
            )
        first = self.rank == 0
        vec: list[float] = [float(loss)]
        for r in rows:
            n_in, n_out = _numel(r.get("in_shape")), _numel(r.get("out_shape"))
            sat, g, cos, live = r.get("saturation"), r.get("grad_norm"), r.get("cosine"), r.get("live_cosine")
            sat_n = n_in or n_out
            vec += [n_in, *_sums(n_in, r.get("in_mean"), r.get("in_std")),
                    n_out, *_sums(n_out, r.get("out_mean"), r.get("out_std")),
                    sat * sat_n if sat is not None else 0.0, sat_n if sat is not None else 0.0,
                    g * g if g is not None else 0.0, 1.0 if g is not None else 0.0,
                    cos if first and cos is not None else 0.0, 1.0 if first and cos is not None else 0.0,
                    live if first and live is not None else 0.0, 1.0 if first and live is not None else 0.0]
        for b in blocks:
            vec += [*b["sums"], 1.0 if b["branch_std"] is not None else 0.0]
        total = comm.all_reduce_sum(torch.tensor(vec, dtype=torch.float64)).tolist()
        if units:
            alive = comm.all_reduce_max(torch.cat([u for _, u in units])).tolist()
        out_loss = total[0]
        k = 1
        for r in rows:
            n_in, s_in, s2_in, n_out, s_out, s2_out, sat, sat_n, g2, g_n, cos, has_cos, live, has_live = \
                total[k:k + _ROW]
            k += _ROW
            if r.get("in_shape") is not None:
                r["in_shape"] = _batch(r["in_shape"], n_in)
                r["in_std"], r["in_mean"] = _moments(n_in, s_in, s2_in)
            if r.get("out_shape") is not None:
                r["out_shape"] = _batch(r["out_shape"], n_out)
                r["out_std"], r["out_mean"] = _moments(n_out, s_out, s2_out)
            if r.get("saturation") is not None:
                r["saturation"] = sat / sat_n if sat_n else None
            if r.get("grad_norm") is not None:
                r["grad_norm"] = math.sqrt(g2) if g_n == self.world else None
            r["cosine"] = cos if has_cos else None
            r["live_cosine"] = live if has_live else None
        for b in blocks:
            n, sa, sa2, sb, sb2, sab, branch_n = total[k:k + _BLOCK]
            k += _BLOCK
            out_std, _ = _moments(n, sa, sa2)
            in_std, _ = _moments(n, sb, sb2)
            b["in_std"], b["out_std"] = in_std, out_std
            cov = sab - sa * sb / n
            va, vb = sa2 - sa * sa / n, sb2 - sb * sb / n
            b["correlation"] = cov / max(math.sqrt(max(va, 0.0) * max(vb, 0.0)), 1e-300)
            if branch_n == self.world:  # std(out − in) from the same sums: Σ(a−b)² = Σa² − 2Σab + Σb²
                b["branch_std"], _ = _moments(n, sa - sb, sa2 - 2 * sab + sb2)
            else:
                b["branch_std"] = None
        if units:
            offset = 0
            for r, u in units:
                cols = u.numel()
                r["dead"] = 1.0 - sum(1 for a in alive[offset:offset + cols] if a) / max(cols, 1)
                offset += cols
        return out_loss

    # -- parameters -----------------------------------------------------------------------------------

    def param_moments(self, params: list[tuple[str, torch.Tensor]]) -> dict[int, tuple[float, float]]:
        """(std, mean) of every parameter over all its shards, each element counted once, by ``id``.

        Each rank sends (n, mean, M2) of its shard — M2 = Σ(w − mean)², two-pass in float64 — and the
        shards combine by Chan, Golub & LeVeque's pairwise update, M2 = Σ M2ᵣ + Σ nᵣ(meanᵣ − mean)², which
        does not lose digits when the mean dwarfs the spread (a norm's weights, all ones)."""
        mine = []
        for name, p in params:
            x = local_tensor(p).reshape(-1).to(torch.float64)
            n = x.numel() if counts_once(p) else 0
            mean = float(x.mean()) if n else 0.0
            mine.append((name, mesh_ranks(p, self.rank), n, mean, float((x - mean).square().sum()) if n else 0.0))
        by_name: dict[str, dict[tuple[int, ...], list[tuple[int, float, float]]]] = {}
        for rank_rows in comm.gather_objects(mine):
            for name, mesh, n, mean, m2 in rank_rows:
                by_name.setdefault(name, {}).setdefault(mesh, []).append((n, mean, m2))
        out = {}
        for name, p in params:
            meshes = by_name[name]
            parts = [t for t in meshes[min(meshes)] if t[0]]
            n = sum(t[0] for t in parts)
            if n == 0:
                continue
            mean = sum(t[0] * t[1] for t in parts) / n
            m2 = sum(t[2] + t[0] * (t[1] - mean) ** 2 for t in parts)
            out[id(p)] = (math.sqrt(m2 / (n - 1)) if n > 1 else 0.0, mean)
        return out


def _tail(shape: Any) -> Any:
    return None if shape is None else tuple(shape[1:])


def _batch(shape: tuple[int, ...], n: float) -> tuple[int, ...]:
    """``shape`` with the batch dimension of the whole (n elements in all)."""
    per = math.prod(shape[1:]) if len(shape) > 1 else 1
    return (round(n / per), *shape[1:]) if shape and per else shape


def reshard(model: torch.nn.Module) -> None:
    """Put FSDP2 modules back in their sharded state after inspect's run. FSDP2 reshards in a callback of
    ``loss.backward()``; inspect takes its gradients with ``torch.autograd.grad``, after which the root
    module keeps its unsharded parameters registered, and the next forward would mix them with sharded
    ones. ``FSDPModule.reshard()`` frees them and registers the sharded parameters again."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    if fsdp is None:
        return
    for m in model.modules():
        if isinstance(m, fsdp.FSDPModule):
            m.reshard()


def detect(params: list[tuple[str, torch.Tensor]]) -> Sharding | None:
    """The sharding of a model whose parameters are ``params``: None without a process group or DTensor."""
    if not comm.active() or not any(is_dtensor(p) for _, p in params):
        return None
    from torch.distributed.tensor import Replicate, Shard

    world = comm.world()
    data_parallel = all(
        not is_dtensor(p) or (
            p.device_mesh.ndim == 1 and p.device_mesh.size() == world
            and all(isinstance(pl, Replicate) or (type(pl) is Shard and pl.dim == 0) for pl in p.placements))
        for _, p in params
    )
    return Sharding(comm.rank(), world, data_parallel)
