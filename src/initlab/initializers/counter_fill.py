"""Counter-based fills: the catalogue's element-wise laws, computed for any block of a tensor by global index.

An initializer whose values are independent per element (uniform, normal, truncated normal, every
variance-scaling law, constants) or a function of the element's position (identity, Dirac, and
sparse's zero pattern, drawn per column by keys) states its law through
:meth:`Initializer.counter_law <initlab.initializers.Initializer.counter_law>`; :func:`fill_counter`
then writes the values of exactly the elements a local block holds (a :class:`ShardIndex`), each a
function of (seed, global index) only — so a sharded tensor gathered from any sharding equals the
single-process fill bit for bit (same device type and CPU instruction set: the float stage, ``erfinv``
and ``erf``, may differ in the last ulp between CPU and CUDA kernels).

Laws (every bit-to-number step of :mod:`initlab.initializers.counter` is exact; the float maths runs in
torch, two kernels where a fused multiply-add would change the last bit):

- :class:`UniformLaw`: ``low + (high − low)·u`` with u24 (float32) or u53 (float64), clamped into
  [low, high) rounded inward;
- :class:`NormalLaw`: the inverse CDF ``mean + std·√2·erfinv(y)``: float32 targets take y24 and erfinv in
  float32 (|z| ≤ 5.42; three times cheaper than float64, measured), float64 targets ``2u − 1`` with the
  open-interval u53 (|z| ≤ 8.1). The inverse CDF needs one uniform per value (no pairing of elements, as
  Box–Muller would) and is monotone, so the same code gives the truncated normal;
- :class:`TruncNormalLaw` on the absolute [a, b] (torch's convention): ``√2·erfinv(ea + (eb − ea)·u)``
  with ea, eb = erf(α/√2), erf(β/√2) — every value inside, no rejection (a redraw loop would make a value
  depend on which elements are drawn together). float32 targets whose cut lies within ±3σ and holds
  ≥ 30 % of the mass use u24 and float32 (the catalogue's own recipe for Keras's ±2σ), others u53 and
  float64; an interval in the right tail is drawn mirrored, where erf keeps its resolution; a cut beyond
  the sampler's reach (±5.4σ float32, ±8.1σ float64 — torch's default ±2 with std 0.02 is ±100σ) is the
  normal itself;
- :class:`ConstantLaw`, :class:`IdentityLaw`, :class:`DiracLaw`: from the indices alone — the same values
  as the initializers' own fills, bit for bit, in every dtype;
- :class:`SparseLaw` (torch's ``sparse_``: ``zeros`` zeros per column): N(0, std) at every element; the
  zeros of column c are the rows with the smallest 63-bit keys K(r·cols + c) of the sparse stream, so a
  shard computes the keys of every row of its own columns (rows × local columns, a column chunk at a time).

Memory: a fill writes the local tensor in chunks of :data:`~initlab.initializers.shard_index.CHUNK`
elements; its scratch is a few chunks whatever the tensor's size.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
from dataclasses import dataclass
from typing import Any

import torch

from . import counter
from .base import FLOAT_DTYPES, Initializer, _round_in
from .fans import Fans
from .shard_index import CHUNK, ShardIndex

__all__ = [
    "ConstantLaw",
    "DiracLaw",
    "IdentityLaw",
    "NormalLaw",
    "SparseLaw",
    "TruncNormalLaw",
    "UniformLaw",
    "fill_counter",
    "fill_shard",
]

_SQRT2 = math.sqrt(2.0)
_REACH = {torch.float32: 5.5, torch.float64: 8.3}  # beyond |z| the normal sampler can produce (5.42, 8.1)


def _work(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _below(x: float, dtype: torch.dtype) -> float:
    """The largest value of ``dtype`` strictly below ``x``."""
    r = _round_in(x, dtype)
    if r == x:
        r = float(torch.nextafter(torch.tensor(r, dtype=dtype), torch.tensor(-math.inf, dtype=dtype)))
    return r


# -- element-wise laws: values of rows of consecutive global indices -----------------------------------


@dataclass(frozen=True)
class UniformLaw:
    """U[low, high)."""

    low: float
    high: float

    @property
    def bounds(self) -> tuple[float, float]:
        return self.low, self.high

    def values(self, bases: torch.Tensor, j0: int, j1: int, seed: int, work: torch.dtype) -> torch.Tensor:
        if self.high == self.low:
            return torch.full((bases.numel(), j1 - j0), self.low, dtype=work, device=bases.device)
        u = counter.u53(bases, j0, j1, seed) if work == torch.float64 else counter.u24(bases, j0, j1, seed)
        v = u.mul_(self.high - self.low).add_(self.low)  # two kernels: no fused multiply-add
        return v.clamp_(_round_in(self.low, work, up=True), _below(self.high, work))


@dataclass(frozen=True)
class NormalLaw:
    """N(mean, std²)."""

    mean: float
    std: float

    @property
    def bounds(self) -> tuple[float, float]:
        return -math.inf, math.inf

    def values(self, bases: torch.Tensor, j0: int, j1: int, seed: int, work: torch.dtype,
               stream: int = counter.STREAM_VALUES) -> torch.Tensor:
        if work == torch.float64:
            u = counter.u53(bases, j0, j1, seed, stream, open_interval=True)
            z = u.mul_(2.0).sub_(1.0).erfinv_().mul_(_SQRT2)
        else:
            z = counter.y24(bases, j0, j1, seed, stream).erfinv_().mul_(_SQRT2)
        return z.mul_(self.std).add_(self.mean)


@dataclass(frozen=True)
class TruncNormalLaw:
    """N(mean, std²) restricted to the absolute interval [a, b] (torch's ``trunc_normal_`` convention)."""

    mean: float
    std: float
    a: float
    b: float

    @property
    def bounds(self) -> tuple[float, float]:
        return self.a, self.b

    def values(self, bases: torch.Tensor, j0: int, j1: int, seed: int, work: torch.dtype) -> torch.Tensor:
        alpha, beta = (self.a - self.mean) / self.std, (self.b - self.mean) / self.std
        reach = _REACH[work]
        if alpha <= -reach and beta >= reach:
            z = NormalLaw(self.mean, self.std).values(bases, j0, j1, seed, work)
        else:
            flip = alpha > 0  # a right-tail interval, drawn mirrored: erf resolves the left tail
            lo, hi = (-beta, -alpha) if flip else (alpha, beta)
            ea, eb = math.erf(lo / _SQRT2), math.erf(hi / _SQRT2)
            if work == torch.float32 and lo >= -3.0 and hi <= 3.0 and (eb - ea) / 2 >= 0.3:
                u = counter.u24(bases, j0, j1, seed)
            else:
                u = counter.u53(bases, j0, j1, seed, open_interval=True)
            z = u.mul_(eb - ea).add_(ea).erfinv_().mul_(_SQRT2).clamp_(lo, hi)
            if flip:
                z.neg_()
            z = z.mul_(self.std).add_(self.mean).to(work)  # scaled where z was computed, rounded once
        return z.clamp_(_round_in(self.a, work, up=True), _round_in(self.b, work))


@dataclass(frozen=True)
class ConstantLaw:
    """Every value ``value``."""

    value: float

    @property
    def bounds(self) -> tuple[float, float]:
        return self.value, self.value

    def values(self, bases: torch.Tensor, j0: int, j1: int, seed: int, work: torch.dtype) -> torch.Tensor:
        return torch.full((bases.numel(), j1 - j0), self.value, dtype=work, device=bases.device)


# -- laws of the position: computed per shard from its index vectors -----------------------------------


def _axis(index: ShardIndex, d: int, shape: list[int]) -> torch.Tensor:
    """The global indices of dimension ``d``, shaped to broadcast over the local block."""
    v = index.dim_tensor(d)
    return v.view([-1 if k == d else 1 for k in range(len(shape))])


@dataclass(frozen=True)
class IdentityLaw:
    """``gain`` on the diagonal of a matrix, 0 elsewhere (torch's ``eye_``, Keras's ``Identity``)."""

    gain: float

    @property
    def bounds(self) -> tuple[float, float]:
        return min(0.0, self.gain), max(0.0, self.gain)

    def block(self, index: ShardIndex, seed: int, work: torch.dtype) -> torch.Tensor:
        shape = list(index.local_shape)
        return (_axis(index, 0, shape) == _axis(index, 1, shape)).to(work).mul_(self.gain)


@dataclass(frozen=True)
class DiracLaw:
    """torch's ``dirac_(groups)``: 1 where output channel ``o`` reads input channel ``o mod (out/groups)``
    at the kernel centre k//2, else 0; ``layout`` ``"torch"`` (out, in, *k) or ``"keras"`` (*k, in, out)."""

    groups: int
    layout: str

    @property
    def bounds(self) -> tuple[float, float]:
        return 0.0, 1.0

    def block(self, index: ShardIndex, seed: int, work: torch.dtype) -> torch.Tensor:
        nd = len(index.global_shape)
        o_dim, i_dim, k_dims = (0, 1, range(2, nd)) if self.layout == "torch" else (nd - 1, nd - 2, range(nd - 2))
        shape = list(index.local_shape)
        per = index.global_shape[o_dim] // self.groups
        hit = (_axis(index, o_dim, shape) % per) == _axis(index, i_dim, shape)
        for d in k_dims:
            hit = hit & (_axis(index, d, shape) == index.global_shape[d] // 2)
        return hit.expand(shape).to(work)


@dataclass(frozen=True)
class SparseLaw:
    """torch's ``sparse_``: N(0, std) with ``zeros`` zeros in every column; rows are dimension 0 in the
    torch layouts, dimension 1 in Keras's."""

    std: float
    zeros: int
    layout: str

    @property
    def bounds(self) -> tuple[float, float]:
        return -math.inf, math.inf


# -- the engine -----------------------------------------------------------------------------------------


def fill_shard(local: torch.Tensor, index: ShardIndex, law: Any, seed: int, *, workers: int | None = None,
               chunk: int = CHUNK) -> torch.Tensor:
    """Write into ``local`` — the elements ``index`` of a tensor of ``index.global_shape`` — their values
    under ``law`` with ``seed``; returns ``local``. The values do not depend on ``workers`` (threads
    filling chunks at once; default ``torch.get_num_threads()``) or ``chunk``."""
    if tuple(local.shape) != index.local_shape:
        raise ValueError(f"local: shape {tuple(local.shape)}, but the shard index holds {index.local_shape}.")
    if local.dtype not in FLOAT_DTYPES:
        raise TypeError(f"local: dtype {local.dtype}; counter-based fills write floating tensors only.")
    if index.numel == 0:
        return local
    work = _work(local.dtype)
    with torch.no_grad():
        if isinstance(law, (IdentityLaw, DiracLaw)):
            local.copy_(_narrow(law.block(index, seed, work), local.dtype, law.bounds))
            return local
        if isinstance(law, SparseLaw):
            fill_shard(local, index, NormalLaw(0.0, law.std), seed, workers=workers, chunk=chunk)
            _sparse_zeros(local, index, law, seed, chunk)
            return local
        target = local if local.is_contiguous() else torch.empty(local.shape, dtype=local.dtype, device=local.device)
        _, run, _ = index.split()
        view = target.view(-1, run)

        def one(block: tuple[slice, slice, torch.Tensor, int, int]) -> None:
            rows, cols, bases, j0, j1 = block
            v = law.values(bases.to(local.device), j0, j1, seed, work)
            view[rows, cols].copy_(_narrow(v, local.dtype, law.bounds))

        workers = torch.get_num_threads() if workers is None else workers
        if workers > 1 and index.numel > 2 * chunk and local.device.type == "cpu":
            # Threads over chunks, with torch's own intra-op threads off meanwhile: nested OpenMP teams
            # inside pool threads were 10–100× slower on a loaded 2-core machine (measured, issue 15).
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                with cf.ThreadPoolExecutor(workers) as pool:
                    list(pool.map(one, index.blocks(chunk)))
            finally:
                torch.set_num_threads(threads)
        else:
            for block in index.blocks(chunk):
                one(block)
        if target is not local:
            local.copy_(target)
    return local


def _narrow(v: torch.Tensor, dtype: torch.dtype, bounds: tuple[float, float]) -> torch.Tensor:
    """Values computed in float32/float64 as ``dtype``: rounding to float16/bfloat16 may step one ulp past
    a bound, so it is clamped back inside, exactly as :meth:`Initializer.__call__` does."""
    if v.dtype == dtype:
        return v
    out = v.to(dtype)
    low, high = bounds
    if math.isfinite(high):
        out.clamp_(_round_in(low, dtype, up=True), _round_in(high, dtype))
    return out


def _sparse_zeros(local: torch.Tensor, index: ShardIndex, law: SparseLaw, seed: int, chunk: int) -> None:
    torch_rows = law.layout in ("torch", "torch_transposed")
    w = local if torch_rows else local.t()
    r_dim, c_dim = (0, 1) if torch_rows else (1, 0)
    rows, cols = index.global_shape[r_dim], index.global_shape[c_dim]
    if law.zeros == 0 or cols == 0:
        return
    r_loc, c_loc = index.dim_tensor(r_dim), index.dim_tensor(c_dim)
    grid = torch.arange(rows, dtype=torch.int64) * cols  # key index of (r, c): r·cols + c
    step = max(1, chunk // max(rows, 1))
    for c0 in range(0, c_loc.numel(), step):
        cs = c_loc[c0 : c0 + step]
        if bool((cs == cs[0] + torch.arange(cs.numel())).all()):  # consecutive columns: one run per row
            keys = counter.keys63(grid + int(cs[0]), 0, cs.numel(), seed, counter.STREAM_SPARSE)
        else:
            bases = (grid.view(-1, 1) + cs.view(1, -1)).view(-1)
            keys = counter.keys63(bases, 0, 1, seed, counter.STREAM_SPARSE).view(rows, -1)
        zero_rows = torch.topk(keys, law.zeros, dim=0, largest=False, sorted=False).indices
        mask = torch.zeros(rows, cs.numel(), dtype=torch.bool).scatter_(0, zero_rows, True)
        w[:, c0 : c0 + cs.numel()].masked_fill_(mask.index_select(0, r_loc).to(local.device), 0.0)


def fill_counter(
    init: Initializer,
    tensor: torch.Tensor,
    *,
    seed: int,
    layout: str = "torch",
    groups: int = 1,
    fans: Fans | tuple[int, int] | None = None,
    index: ShardIndex | None = None,
    workers: int | None = None,
) -> torch.Tensor:
    """Fill ``tensor`` in place with ``init``'s counter-based values and return it.

    ``tensor`` holds the elements ``index`` of a tensor of shape ``index.global_shape`` (default: the
    whole ``tensor``); its values are a function of ``seed`` (an int in [0, 2⁶⁴); a plan passes
    :func:`~initlab.initializers.counter.entry_seed` of its seed and the entry's path) and each element's
    global index only. The law is the one ``init`` describes for the global shape, so fans are those of
    the whole tensor. Raises ``TypeError`` when ``init`` has no counter law (orthogonal matrices, STFT,
    user initializers: :meth:`Initializer.counter_law <initlab.initializers.Initializer.counter_law>`).

    >>> import initlab, torch
    >>> w = fill_counter(initlab.HeNormal(), torch.empty(64, 32), seed=7)
    >>> top = fill_counter(initlab.HeNormal(), torch.empty(16, 32), seed=7,
    ...                    index=ShardIndex((64, 32), [range(16), range(32)]))
    >>> torch.equal(top, w[:16])
    True
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor: expected a torch.Tensor to fill in place, got {type(tensor).__name__}.")
    if tensor.device.type == "meta":
        raise ValueError("tensor: is on the meta device, so there is nothing to fill; materialize it first.")
    index = ShardIndex.full(tensor.shape) if index is None else index
    law = init.counter_law(index.global_shape, layout, groups=groups, fans=fans)
    if law is None:
        raise TypeError(
            f"init: {type(init).__name__} has no counter-based law (its values need the whole tensor, or it "
            "is not one of initlab's catalogue fills); fill the whole tensor with the initializer itself."
        )
    return fill_shard(tensor, index, law, seed, workers=workers)
