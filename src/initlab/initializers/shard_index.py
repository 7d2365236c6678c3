"""Which elements of a whole tensor a local block holds: :class:`ShardIndex`.

A shard of a tensor of ``global_shape`` is described, per dimension, by the global indices it covers, in
local order: a ``range`` where they are consecutive (a ``Shard`` or ``Replicate`` placement, a plain
tensor), an int64 tensor where they are not (torch's ``_StridedShard``, FSDP2 over tensor parallelism).
Every local element then has a global row-major index, which is all a counter-based fill needs
(:mod:`initlab.initializers.counter_fill`). :func:`initlab.distributed.shard_index` builds one from a
DTensor's mesh coordinate and placements.

>>> s = ShardIndex((6, 4), [range(3, 6), range(4)])    # rows 3..5 of a 6×4 matrix
>>> s.local_shape, s.numel
((3, 4), 12)
>>> s.flat_global().tolist()[:5]
[12, 13, 14, 15, 16]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch

__all__ = ["CHUNK", "ShardIndex"]

#: Elements per chunk of a fill: torch's GRAIN_SIZE, so each chunk's torch ops stay single-threaded and
#: its temporaries stay in cache; the extra memory of a fill is a few chunks, whatever the shard's size.
CHUNK = 1 << 15

DimIndex = range | torch.Tensor


def _as_range(v: torch.Tensor) -> DimIndex:
    """A vector of consecutive indices as a ``range`` (cheaper everywhere), else the vector itself."""
    if v.numel() == 0:
        return range(0)
    r = range(int(v[0]), int(v[0]) + v.numel())
    return r if bool((v == torch.arange(r.start, r.stop)).all()) else v


class ShardIndex:
    """The global indices, per dimension, of the elements a local block of a ``global_shape`` tensor holds."""

    def __init__(self, global_shape: Sequence[int], dims: Sequence[DimIndex]) -> None:
        self.global_shape = tuple(int(s) for s in global_shape)
        if len(dims) != len(self.global_shape):
            raise ValueError(f"dims: {len(dims)} index vectors for a tensor of rank {len(self.global_shape)}.")
        self.dims: list[DimIndex] = [d if isinstance(d, range) else _as_range(d.to(torch.int64)) for d in dims]

    @classmethod
    def full(cls, shape: Sequence[int]) -> ShardIndex:
        """The whole tensor (a single process)."""
        shape = tuple(int(s) for s in shape)
        return cls(shape, [range(s) for s in shape])

    def __repr__(self) -> str:
        dims = ", ".join(f"{d.start}:{d.stop}" if isinstance(d, range) else f"[{d.numel()} indices]" for d in self.dims)
        return f"ShardIndex({self.global_shape}, [{dims}])"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ShardIndex)
            and other.global_shape == self.global_shape
            and all(_same(a, b) for a, b in zip(self.dims, other.dims, strict=True))
        )

    __hash__ = None  # type: ignore[assignment]  (mutable index vectors)

    @property
    def local_shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.dims)

    @property
    def numel(self) -> int:
        return math.prod(self.local_shape)

    @property
    def is_full(self) -> bool:
        return all(isinstance(v, range) and v == range(s) for v, s in zip(self.dims, self.global_shape, strict=True))

    def dim_tensor(self, d: int) -> torch.Tensor:
        """The global indices of dimension ``d`` as an int64 tensor."""
        v = self.dims[d]
        return torch.arange(v.start, v.stop) if isinstance(v, range) else v

    def strides(self) -> list[int]:
        out, acc = [], 1
        for s in reversed(self.global_shape):
            out.append(acc)
            acc *= s
        return out[::-1]

    def flat_global(self) -> torch.Tensor:
        """Every local element's global row-major index, in local row-major order (for tests and small
        tensors: it holds one int64 per element)."""
        flat = torch.zeros((), dtype=torch.int64)
        for d, s in enumerate(self.strides()):
            flat = flat.unsqueeze(-1) + self.dim_tensor(d) * s
        return flat.reshape(-1)

    def take(self, full: torch.Tensor) -> torch.Tensor:
        """This shard's block of the whole tensor ``full`` (a view where every dimension is a range)."""
        if tuple(full.shape) != self.global_shape:
            raise ValueError(f"full: shape {tuple(full.shape)}, expected the global shape {self.global_shape}.")
        block = full
        for d, v in enumerate(self.dims):
            if not isinstance(v, range):
                block = block.index_select(d, v.to(full.device))
            elif v != range(full.shape[d]):
                block = block.narrow(d, v.start, len(v))
        return block

    def restrict(self, index: tuple[Any, ...]) -> tuple[tuple[DimIndex, ...], ShardIndex]:
        """The part of this shard inside the block ``index`` of the whole tensor (a tuple of unit-step
        slices, as a plan entry of a packed parameter has): ``(local, sub)`` where ``local`` selects, per
        dimension, the positions of the local tensor that lie inside the block, and ``sub`` indexes them
        within the block (its global shape is the block's shape)."""
        if len(index) > len(self.dims):
            raise ValueError(f"index: {index!r} has more entries than the tensor has dimensions ({len(self.dims)}).")
        local: list[DimIndex] = []
        sub_shape: list[int] = []
        sub_dims: list[DimIndex] = []
        for d in range(len(self.dims)):
            sl = index[d] if d < len(index) else slice(None)
            if not isinstance(sl, slice) or sl.step not in (None, 1):
                raise ValueError(f"index: entry {d} is {sl!r}; only unit-step slices select a block.")
            start, stop, _ = sl.indices(self.global_shape[d])
            stop = max(start, stop)
            sub_shape.append(stop - start)
            g = self.dim_tensor(d)
            pos = torch.nonzero((g >= start) & (g < stop)).view(-1)
            local.append(_as_range(pos))
            sub_dims.append(_as_range(g[pos] - start))
        return tuple(local), ShardIndex(sub_shape, sub_dims)

    def split(self) -> tuple[int, int, int]:
        """``(s, run, start)``: dimensions s… form each local row's *run* of consecutive global indices —
        the trailing dimensions held whole, plus the consecutive one before them — so the local tensor
        seen as 2-D ``(outer, run)`` has rows of consecutive global indices; ``start`` is the run's
        offset in the flat tensor. ``run`` is 1 when even the last dimension is not consecutive."""
        nd = len(self.dims)
        s = nd
        while s > 0:
            v = self.dims[s - 1]
            if len(v) == 0 or not isinstance(v, range):
                break
            s -= 1
            if v != range(self.global_shape[s]):
                break
        run = math.prod(self.local_shape[s:])
        start = self.dims[s].start * self.strides()[s] if s < nd else 0
        return s, run, start

    def blocks(self, chunk: int = CHUNK) -> Iterator[tuple[slice, slice, torch.Tensor, int, int]]:
        """Chunks of about ``chunk`` elements of the local tensor seen as 2-D ``(outer, run)`` (see
        :meth:`split`): ``(rows, cols, bases, j0, j1)`` where local element ``(o, j)``, o in ``rows`` and
        j in ``cols = [j0, j1)``, has global index ``bases[o - rows.start] + j``."""
        if self.numel == 0:
            return
        st = self.strides()
        s, run, start = self.split()
        outer = self.local_shape[:s]
        n_outer = math.prod(outer)

        def bases(o0: int, o1: int) -> torch.Tensor:
            o = torch.arange(o0, o1)
            b = torch.full((o1 - o0,), start, dtype=torch.int64)
            for d in reversed(range(s)):
                od = o % outer[d]
                o = o // outer[d]
                v = self.dims[d]
                b += (od + v.start if isinstance(v, range) else v[od]) * st[d]
            return b

        if run >= chunk:
            for o in range(n_outer):
                bo = bases(o, o + 1)
                for j0 in range(0, run, chunk):
                    j1 = min(run, j0 + chunk)
                    yield slice(o, o + 1), slice(j0, j1), bo, j0, j1
        else:
            rows = max(1, chunk // run)
            for o0 in range(0, n_outer, rows):
                o1 = min(n_outer, o0 + rows)
                yield slice(o0, o1), slice(0, run), bases(o0, o1), 0, run


def _same(a: DimIndex, b: DimIndex) -> bool:
    if isinstance(a, range) and isinstance(b, range):
        return a == b
    ta = torch.arange(a.start, a.stop) if isinstance(a, range) else a
    tb = torch.arange(b.start, b.stop) if isinstance(b, range) else b
    return ta.shape == tb.shape and bool((ta == tb).all())
