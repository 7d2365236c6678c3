"""``Plan.apply`` on DTensor parameters: every rank fills only its own shard, all or nothing across ranks.

Called by :meth:`Plan.apply <initlab.plan.apply.Plan.apply>` when a parameter of the model is a DTensor
(FSDP2's ``fully_shard``, ``parallelize_module``, both on a 2-D mesh), with ``rng="counter"``. Every rank
runs the same plan in the same order; an entry's values are a function of (seed, entry path, global
element index) only, so the whole tensor gathered from any sharding on any number of ranks equals
``plan.apply(seed, rng="counter")`` on one process, bit for bit (same device type).

- Entries whose initializer has a counter law (:meth:`Initializer.counter_law
  <initlab.initializers.Initializer.counter_law>`: every element-wise law of the catalogue, identity,
  Dirac, sparse) are filled in place on each rank's local shard, without communication
  (:func:`~initlab.initializers.counter_fill.fill_shard`). Memory: the shard plus a few chunks.
- Every other entry (orthogonal, delta-orthogonal, STFT, ``Critical(orthogonal=True)``, user
  initializers) is computed whole by the initializer itself — the single-process values, torch.Generator
  seeded by the entry seed, torch pinned to ``matrix_threads`` threads because LAPACK's QR differs in the
  last bits between thread counts — on one *owner* rank, which sends every rank its block
  (point-to-point: a receiver needs no more than its block). Owners are spread over the ranks, largest
  entries first, to the least loaded rank. Memory: the owner holds the whole tensor and what the
  initializer needs (a QR: about 4× the matrix); time: the initializer on one rank plus one send per rank.

All or nothing, in three phases (every rank raises the same error, and no rank has written anything):

1. *validate* every entry on every rank (the parameter exists by path, is materialized and floating, has
   the planned global shape and a placement that holds values; the law can be drawn), then one
   ``all_gather_object`` of the errors together with each rank's layout of the owner entries' parameters;
2. compute the owner entries into fresh buffers, each followed by one ``all_reduce`` of a failure flag,
   and send the blocks;
3. write: counter fills in place (they cannot fail once phase 1 accepted them) and the buffers copied in.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from ..distributed import comm
from ..distributed.placements import local_tensor, placement_spec, shard_index, spec_index
from ..initializers.base import FLOAT_DTYPES
from ..initializers.counter import entry_seed
from ..initializers.counter_fill import fill_shard
from ..initializers.shard_index import ShardIndex
from .labels import _init_label

__all__ = ["apply_sharded", "bind_to_sharded", "pinned_threads", "refuse_meta_fsdp_forward"]


@contextmanager
def pinned_threads(n: int | None) -> Iterator[None]:
    """Run a block with torch on ``n`` threads (``None``: as it is). MKL's QR gives different bits at
    different thread counts (measured: 1 vs 2 threads, float32 and float64, 256–2048), so whole-tensor
    initializers run pinned wherever a sharded fill must match a single-process one."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass
class _Job:
    entry: Any  # PlanEntry
    param: torch.Tensor
    law: Any  # a counter law, or None: the owner computes it whole
    sub: ShardIndex  # this rank's elements of the entry's block, indexed within the block
    pos: tuple[Any, ...]  # where they sit in the local tensor (per dimension: a range or index vector)
    shape: tuple[int, ...]  # the entry's block shape (the whole parameter unless a slice)


def _block(local: torch.Tensor, pos: tuple[Any, ...]) -> tuple[torch.Tensor, bool]:
    """The local elements at ``pos``: a view where every dimension is a range, else a gathered copy
    (``True``: write it back with :func:`_write_back`)."""
    if all(isinstance(p, range) for p in pos):
        return local[tuple(slice(p.start, p.stop) for p in pos)], False
    return local[_grid(pos)].clone(), True


def _grid(pos: tuple[Any, ...]) -> tuple[torch.Tensor, ...]:
    n = len(pos)
    out = []
    for d, p in enumerate(pos):
        v = torch.arange(p.start, p.stop) if isinstance(p, range) else p
        out.append(v.view([-1 if k == d else 1 for k in range(n)]))
    return tuple(out)


def _write_back(local: torch.Tensor, pos: tuple[Any, ...], values: torch.Tensor) -> None:
    local[_grid(pos)] = values


def _plan_jobs(entries: list[Any], params: dict[str, torch.Tensor], errors: list[str]) -> list[_Job]:
    """Phase 1 on this rank: a job per entry to fill, or an error message (nothing is written)."""
    jobs: list[_Job] = []
    for e in entries:
        if e.initializer is None:
            continue
        p = params[e.param_path]
        local = local_tensor(p)
        where = f"{e.path!r} ({_init_label(e.initializer)})"
        if local.is_meta:
            errors.append(f"{where}: the parameter is on the meta device; materialize the sharded model first "
                          "(model.to_empty(device='cpu') or 'cuda', as torchtitan does), then apply.")
            continue
        if p.dtype not in FLOAT_DTYPES:
            errors.append(f"{where}: dtype {p.dtype}; initializers fill floating tensors only.")
            continue
        try:
            pidx = shard_index(p)
            pos, sub = pidx.restrict(e.index) if e.index is not None else (
                tuple(range(n) for n in pidx.local_shape), pidx)
            if sub.global_shape != tuple(e.shape):
                raise ValueError(f"the plan has shape {tuple(e.shape)} but the model's (global) shape is "
                                 f"{sub.global_shape}; plan the same model (or its unsharded twin).")
            law = e.initializer.counter_law(sub.global_shape, e.layout, fans=e.fans)
            if law is None:
                e.initializer.describe(sub.global_shape, e.layout, fans=e.fans)
        except (ValueError, TypeError) as err:
            errors.append(f"{where}: {err}")
            continue
        jobs.append(_Job(e, p, law, sub, pos, sub.global_shape))
    return jobs


def _owners(jobs: list[_Job], world: int) -> dict[str, int]:
    """Owner rank of each whole-tensor entry: largest first, to the least loaded rank (ties: lowest rank).
    A function of the plan alone, so every rank reaches the same assignment without talking."""
    load = [0] * world
    out: dict[str, int] = {}
    for job in sorted((j for j in jobs if j.law is None), key=lambda j: (-math.prod(j.shape), j.entry.path)):
        r = min(range(world), key=lambda i: (load[i], i))
        out[job.entry.path] = r
        load[r] += math.prod(job.shape)
    return out


def _raise_if_any(errors_by_rank: list[list[str]], what: str) -> None:
    by_msg: dict[str, list[int]] = {}
    for r, errs in enumerate(errors_by_rank):
        for msg in errs:
            by_msg.setdefault(msg, []).append(r)
    if not by_msg:
        return
    world = len(errors_by_rank)
    lines = [
        (f"[all ranks] {msg}" if len(ranks) == world > 1 else
         f"[rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}] {msg}" if world > 1 else msg)
        for msg, ranks in by_msg.items()
    ]
    raise RuntimeError(f"apply: {what}; nothing was changed on any rank:\n  " + "\n  ".join(lines))


def apply_sharded(plan: Any, params: dict[str, torch.Tensor], seed: int, *, matrix_threads: int | None,
                  workers: int | None) -> None:
    """Fill the plan's entries into ``params`` (path → parameter, DTensors among them) on every rank;
    sets each entry's ``rng``. See the module docstring for the protocol."""
    rank, world = comm.rank(), comm.world()
    errors: list[str] = []
    if plan.post_steps:
        errors.append(
            f"the plan has post steps ({', '.join(s.name for s in plan.post_steps)}); they run the model on data, "
            "which a sharded model does with every rank's batch: not supported on DTensor parameters. "
            "Apply a plan without them (a preset other than 'lsuv')."
        )
    jobs = _plan_jobs(plan.entries, params, errors)
    owned = {j.entry.param_path for j in jobs if j.law is None}
    gathered = comm.gather_objects((errors, {path: placement_spec(params[path]) for path in owned}))
    _raise_if_any([errs for errs, _ in gathered], "validation failed")
    layouts = [specs for _, specs in gathered]

    # Phase 2: whole-tensor entries on their owners, into fresh buffers of each rank's block.
    owners = _owners(jobs, world)
    fresh: dict[int, torch.Tensor] = {}
    for k, job in enumerate(jobs):
        if job.law is not None:
            continue
        e, owner = job.entry, owners[job.entry.path]
        local = local_tensor(job.param)
        full, failure = None, None
        if rank == owner:
            try:
                full = torch.empty(job.shape, dtype=job.param.dtype, device=local.device)
                with pinned_threads(matrix_threads), torch.no_grad():
                    e.initializer(full, seed=entry_seed(seed, e.path), layout=e.layout, fans=e.fans)
            except Exception as err:
                failure = f"{_init_label(e.initializer)} failed on {e.path!r} (shape {job.shape}, computed on rank " \
                          f"{owner}): {type(err).__name__}: {err}"
        if comm.any_rank(failure is not None):
            messages = comm.gather_objects(failure)
            _raise_if_any([[m] if m else [] for m in messages], "an initializer failed")
        buf = torch.empty(job.sub.local_shape, dtype=job.param.dtype, device=local.device)
        if rank == owner:
            for r in range(world):
                spec = layouts[r].get(e.param_path, ("plain",))
                theirs = spec_index(spec, tuple(job.param.shape), r)
                block_of = theirs.restrict(e.index)[1] if e.index is not None else theirs
                if r == rank:
                    buf.copy_(block_of.take(full))
                elif block_of.numel:
                    comm.send(block_of.take(full), r)
            del full
        elif buf.numel():
            comm.recv_into(buf, owner)
        fresh[k] = buf

    # Phase 3: writes that cannot fail, in plan order (a later slice entry overwrites an earlier whole one).
    with torch.no_grad():
        for k, job in enumerate(jobs):
            e = job.entry
            local = local_tensor(job.param)
            view, gathered_copy = _block(local, job.pos)
            if job.law is not None:
                fill_shard(view, job.sub, job.law, entry_seed(seed, e.path), workers=workers)
                e.rng = "counter"
            else:
                view.copy_(fresh.pop(k))
                e.rng = f"torch (whole on rank {owners[e.path]})" if world > 1 else "torch"
            if gathered_copy:
                _write_back(local, job.pos, view)


def refuse_meta_fsdp_forward(model: Any) -> None:
    """Raise before a forward pass that FSDP2 refuses: its parameters still on meta. (A failed FSDP2
    forward also leaves its lazy initialization half done — the next forward fails with ``'FSDPParam'
    object has no attribute 'param_dtype'`` — so it must not even be tried.)"""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    if fsdp is None or not isinstance(model, torch.nn.Module):
        return
    if any(isinstance(m, fsdp.FSDPModule) for m in model.modules()) and any(
            local_tensor(p).is_meta for p in model.parameters()):
        raise ValueError(
            "example_input: this model is sharded with FSDP2 and still on meta, and FSDP2 refuses a forward "
            "pass there (a failed one also breaks its later forwards). Plan an unsharded twin built on meta "
            "instead — initlab.plan(model, preset, example_input=meta_batch, twin=twin) — or plan before "
            "fully_shard; either plan applies to this model by parameter path."
        )


def bind_to_sharded(plan: Any, model: Any) -> Any:
    """``plan`` (made on a twin) bound to ``model``: the same parameter paths and global shapes, checked."""
    try:
        params = plan._bind(model, explicit=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"twin: it does not match model ({err})") from None
    plan.model, plan._params = model, params
    return plan
