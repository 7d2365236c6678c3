"""A counter-based generator: Philox4x32-10, addressed by an element's global index.

``torch.Generator`` is a stream: element *i* of a tensor is the *i*-th number drawn, so a process that
holds only rows 1000–1999 of a matrix must draw rows 0–999 first, and the values of a sharded tensor
depend on how it was sharded. A counter-based generator (Salmon, Moraes, Dror & Shaw, "Parallel random
numbers: as easy as 1, 2, 3", SC'11) is a keyed bijection instead: the bits of element *i* are
``philox(counter(i), key)``, so any process computes exactly the elements it holds, and the values do
not depend on the sharding, the number of processes, the chunking or the thread count.

Layout. Counter (4 words of 32 bits): ``(i mod 2³², i div 2³², stream, 0)`` with *i* the row-major index
of the element in the whole tensor; key (2 words): the low and high halves of a 63-bit seed — the
entry seed :func:`entry_seed` derives from ``(seed, parameter path)``. ``stream`` separates the uses
inside one tensor: :data:`STREAM_VALUES` for the values, :data:`STREAM_SPARSE` for the keys that place a
sparse matrix's zeros.

Bits to numbers (one Philox call per element; every conversion exact):

- ``u24``: float32 uniform on [0, 1): ``(w0 >> 8)·2⁻²⁴`` (torch's own float32 recipe);
- ``u53``: float64 uniform on [0, 1): ``((w0 >> 5)·2²⁶ + (w1 >> 6))·2⁻⁵³`` (MT19937's ``genrand_res53``);
  with ``open_interval``, on (0, 1) for inverse CDFs: ``((w0 >> 6)·2²⁶ + (w1 >> 6) + ½)·2⁻⁵²`` — 52 bits,
  so that adding the half stays exact (with 53 bits the largest draw would round up to 1);
- ``y24``: float32 on (−1, 1): ``(2·(w0 >> 8) + 1 − 2²⁴)·2⁻²⁴``, the midpoints of a 2²⁴-cell grid —
  symmetric, never 0 or ±1: the argument of ``erfinv`` for a float32 normal (|√2·erfinv(y)| ≤ 5.42);
- ``keys``: 63 random bits ``(w0 >> 1)·2³² + w1`` as int64 (sort keys).

Two implementations give the same words, checked against Random123's known-answer vectors
(:func:`self_test`): torch int64 ops (any device — this is the CUDA path — and the fallback without
numba), and numba kernels for CPU tensors (:mod:`initlab.initializers._counter_kernels`; numba is the
optional ``fast`` extra, as for :mod:`initlab.inspect.fused`), 8–14× faster than the torch ops on CPU.
``INITLAB_COUNTER_NUMBA=0`` (or ``off``) turns the kernels off; :func:`torch_ops` does so for a block.
torch 2.13 has no CPU shifts for uint32/uint64, so the torch ops hold each 32-bit word in an int64: a
32×32-bit product wraps modulo 2⁶⁴ there and its halves come back with ``>> 32`` and ``& 0xFFFFFFFF``.

>>> [hex(w) for w in philox4x32(0, 0, 0, 0, 0, 0)]
['0x6627e8d5', '0xe169c58d', '0xbc57ac4c', '0x9b00dbd8']
"""

from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager
from typing import Any

import torch

from .compiled import switch_on, switched_off

__all__ = [
    "KAT",
    "STREAM_SPARSE",
    "STREAM_VALUES",
    "available",
    "backend",
    "entry_seed",
    "keys63",
    "philox4x32",
    "self_test",
    "torch_ops",
    "u24",
    "u53",
    "y24",
]

M0, M1 = 0xD2511F53, 0xCD9E8D57  # Philox multipliers
W0, W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key bumps (golden ratio, √3 − 1)
MASK = 0xFFFFFFFF
ROUNDS = 10
STREAM_VALUES, STREAM_SPARSE = 0, 1

#: Random123's known answers for philox4x32-10 (DEShawResearch/random123 @ 9545ff6413f2,
#: ``tests/kat_vectors`` lines 27–29): counter (4 words), key (2 words), output (4 words).
KAT = (
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
)  # fmt: skip


def entry_seed(seed: int, path: str) -> int:
    """The seed of one plan entry: the first 8 bytes of SHA-256(``"{seed}:{path}"``), little-endian, as a
    non-negative 63-bit int. Stable across runs, processes and Python versions (unlike ``hash``).

    >>> entry_seed(0, "fc.weight") == entry_seed(0, "fc.weight") != entry_seed(1, "fc.weight")
    True
    """
    digest = hashlib.sha256(f"{int(seed)}:{path}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _key(seed: int) -> tuple[int, int]:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"seed: a counter-based fill takes an int in [0, 2**64) as its key, got {seed!r}.")
    return seed & MASK, (seed >> 32) & MASK


# -- the torch-ops implementation ---------------------------------------------------------------------


def _hi(p: Any) -> Any:
    return ((p >> 32) & MASK) if isinstance(p, int) else (p >> 32).bitwise_and_(MASK)


def _lo(p: Any) -> Any:
    return (p & MASK) if isinstance(p, int) else p.bitwise_and_(MASK)


def _xor3(a: Any, b: Any, k: int) -> Any:
    """a ^ b ^ k without writing to ``b`` (it may be the caller's tensor); ``a`` is a temporary."""
    if isinstance(a, int) and isinstance(b, int):
        return a ^ b ^ k
    if isinstance(a, int):
        return b ^ (a ^ k)
    return a.bitwise_xor_(b ^ k) if isinstance(b, int) else a.bitwise_xor_(b).bitwise_xor_(k)


def philox4x32(c0: Any, c1: Any, c2: Any, c3: Any, k0: int, k1: int, rounds: int = ROUNDS) -> tuple[Any, ...]:
    """Philox4x32-``rounds`` of the counter words ``c0..c3`` (int64 tensors of values in [0, 2³²), or
    Python ints, broadcast) under the key ``(k0, k1)``: the four output words, same kinds. The caller's
    tensors are not modified."""
    for r in range(rounds):
        if r:
            k0 = (k0 + W0) & MASK
            k1 = (k1 + W1) & MASK
        p0 = c0 * M0  # < 2⁶⁴: wraps in int64; _hi/_lo recover the unsigned halves
        p1 = c2 * M1
        h1, h0 = _hi(p1), _hi(p0)  # fresh tensors (>> is out of place); _lo then masks p in place
        c0, c1, c2, c3 = _xor3(h1, c1, k0), _lo(p1), _xor3(h0, c3, k1), _lo(p0)
    return c0, c1, c2, c3


def _words(bases: torch.Tensor, j0: int, j1: int, key: tuple[int, int], stream: int, n: int) -> list[torch.Tensor]:
    idx = (bases.view(-1, 1) + torch.arange(j0, j1, device=bases.device)).view(-1)
    out = philox4x32(idx & MASK, idx >> 32, stream, 0, *key)
    return [o if torch.is_tensor(o) else torch.full_like(idx, o) for o in out[:n]]


# -- the switch between numba kernels and torch ops --------------------------------------------------

_STATE: dict[str, Any] = {}


def _load() -> Any:
    from . import _counter_kernels  # ImportError without numba

    return _counter_kernels


def available() -> bool:
    """Whether the numba kernels can be used (numba importable and ``INITLAB_COUNTER_NUMBA`` not off)."""
    return switch_on(_STATE, "INITLAB_COUNTER_NUMBA", _load, "the compiled counter kernels")


def torch_ops() -> AbstractContextManager[None]:
    """Run a block on the torch-ops implementation (the CUDA path) even where numba is installed."""
    return switched_off(_STATE)


def backend(device: torch.device | str = "cpu") -> str:
    """``"numba"`` or ``"torch"``: which implementation fills tensors on ``device``."""
    return "numba" if torch.device(device).type == "cpu" and available() else "torch"


def _kernels(bases: torch.Tensor) -> Any:
    return _STATE["kernels"] if bases.device.type == "cpu" and available() else None


# -- bits to numbers, for rows of consecutive global indices -----------------------------------------
# Each function takes ``bases`` (int64, one per row) and a run [j0, j1): element (r, j) has global index
# bases[r] + j0 + j. It returns a (len(bases), j1 - j0) tensor.


def u53(bases: torch.Tensor, j0: int, j1: int, seed: int, stream: int = STREAM_VALUES, *,
        open_interval: bool = False) -> torch.Tensor:
    """float64 uniforms on [0, 1) — on (0, 1) with ``open_interval``."""
    key, n = _key(seed), j1 - j0
    k = _kernels(bases)
    if k is not None:
        return torch.from_numpy(k.u53(bases.numpy(), j0, j1, *key, stream, open_interval)).view(-1, n)
    w0, w1 = _words(bases, j0, j1, key, stream, 2)
    if open_interval:
        u = (w0 >> 6).bitwise_left_shift_(26).bitwise_or_(w1 >> 6).to(torch.float64)
        return u.add_(0.5).mul_(2.0**-52).view(-1, n)
    u = (w0 >> 5).bitwise_left_shift_(26).bitwise_or_(w1 >> 6).to(torch.float64)
    return u.mul_(2.0**-53).view(-1, n)


def u24(bases: torch.Tensor, j0: int, j1: int, seed: int, stream: int = STREAM_VALUES) -> torch.Tensor:
    """float32 uniforms on [0, 1)."""
    key, n = _key(seed), j1 - j0
    k = _kernels(bases)
    if k is not None:
        return torch.from_numpy(k.f24(bases.numpy(), j0, j1, *key, stream, False)).view(-1, n)
    (w0,) = _words(bases, j0, j1, key, stream, 1)
    return (w0 >> 8).to(torch.float32).mul_(2.0**-24).view(-1, n)


def y24(bases: torch.Tensor, j0: int, j1: int, seed: int, stream: int = STREAM_VALUES) -> torch.Tensor:
    """float32 on (−1, 1): the odd grid (2k + 1 − 2²⁴)·2⁻²⁴, exact (an odd integer below 2²⁴ times a power
    of two), symmetric about 0."""
    key, n = _key(seed), j1 - j0
    k = _kernels(bases)
    if k is not None:
        return torch.from_numpy(k.f24(bases.numpy(), j0, j1, *key, stream, True)).view(-1, n)
    (w0,) = _words(bases, j0, j1, key, stream, 1)
    return (w0 >> 8).mul_(2).add_(1 - (1 << 24)).to(torch.float32).mul_(2.0**-24).view(-1, n)


def keys63(bases: torch.Tensor, j0: int, j1: int, seed: int, stream: int) -> torch.Tensor:
    """int64 sort keys of 63 random bits."""
    key, n = _key(seed), j1 - j0
    k = _kernels(bases)
    if k is not None:
        return torch.from_numpy(k.keys63(bases.numpy(), j0, j1, *key, stream)).view(-1, n)
    w0, w1 = _words(bases, j0, j1, key, stream, 2)
    return (w0 >> 1).bitwise_left_shift_(32).bitwise_or_(w1).view(-1, n)


def self_test() -> dict[str, bool]:
    """Random123's known answers through each available implementation; raises on a mismatch (a platform
    where int64 products do not wrap, a miscompiled kernel). Returns ``{implementation: True}``."""
    out = {}
    for name in ("torch", "numba"):
        if name == "numba" and not available():
            continue
        for ctr, key, want in KAT:
            if name == "torch":
                words = philox4x32(torch.tensor([ctr[0]], dtype=torch.int64), *ctr[1:], *key)
                got = tuple(int(w) if isinstance(w, int) else int(w[0]) for w in words)
            else:
                got = tuple(int(w) for w in _STATE["kernels"].philox_scalar(*ctr, *key))
            if got != want:
                raise AssertionError(
                    f"Philox4x32-10 known-answer test failed on the {name} implementation: counter {ctr}, "
                    f"key {key} gave {[hex(g) for g in got]}, expected {[hex(w) for w in want]}."
                )
        out[name] = True
    return out
