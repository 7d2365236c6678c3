"""The few collectives initlab needs, each usable with or without a process group.

Without ``torch.distributed`` initialized every function is its single-process identity (one rank,
nothing to agree on), so the library's sharded code paths are also its single-process ones. With a
group, the calls are the default group's: gloo on CPU, NCCL where the default backend is (tensors that
travel then live on the current CUDA device).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["active", "all_reduce_max", "all_reduce_sum", "any_rank", "gather_objects", "rank", "recv_into", "send", "world"]


def active() -> bool:
    """Whether a default process group exists (``torch.distributed.init_process_group`` was called)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if active() else 0


def world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if active() else 1


def _device() -> torch.device:
    """Where the default group's collectives take their tensors: CUDA for NCCL, else the CPU."""
    import torch.distributed as dist

    backend = str(dist.get_backend())
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (one ``all_gather_object``); ``[obj]`` on a single process."""
    if not active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (one ``all_reduce`` of one integer)."""
    if not active():
        return bool(flag)
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_reduce_sum(vec: torch.Tensor) -> torch.Tensor:
    """``vec`` summed over every rank (one ``all_reduce``), as a new tensor on ``vec``'s device."""
    return _all_reduce(vec, "SUM")


def all_reduce_max(vec: torch.Tensor) -> torch.Tensor:
    """``vec``'s elementwise maximum over every rank (one ``all_reduce``), as a new tensor."""
    return _all_reduce(vec, "MAX")


def _all_reduce(vec: torch.Tensor, op: str) -> torch.Tensor:
    if not active():
        return vec.clone()
    import torch.distributed as dist

    t = vec.to(_device(), copy=True)
    dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
    return t.to(vec.device)


def send(t: torch.Tensor, dst: int) -> None:
    """Point-to-point: ``t`` (contiguous) to global rank ``dst``."""
    import torch.distributed as dist

    dist.send(t.contiguous(), dst=dst)


def recv_into(buf: torch.Tensor, src: int) -> None:
    """Point-to-point: receive from global rank ``src`` straight into ``buf`` (a contiguous temporary if
    ``buf`` is not contiguous)."""
    import torch.distributed as dist

    target = buf if buf.is_contiguous() else torch.empty(buf.shape, dtype=buf.dtype, device=buf.device)
    dist.recv(target, src=src)
    if target is not buf:
        buf.copy_(target)
