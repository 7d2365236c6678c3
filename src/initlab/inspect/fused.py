"""Fused single-pass statistics for CPU tensors, compiled with numba when it is installed.

:func:`initlab.inspect` measures every call of every layer: the mean and std of a tensor, the mean
cosine between inputs, saturation and dead-unit counts, gradient norms. With torch ops each quantity is
its own pass and its own dispatch — about 17 small reductions per Linear + ReLU pair, each ~10 µs on a
256 × 256 tensor, which on a 50-layer MLP of 1 ms layers cost ~0.7× a forward + backward. Each kernel
here reads its tensor once and returns every quantity of that tensor, accumulated in float64 (so
float32 squares cannot overflow or underflow and need no fallback); measured on that MLP, inspect went
from 1.64–1.72× a plain pass to 1.31–1.44× on one thread (benchmarks/bench_inspect.py).

numba is optional (``pip install initlab[fast]``); without it, or for tensors these kernels do not take
(not CPU, not contiguous float32/float64), inspect uses torch ops with the same results. Set the
environment variable ``INITLAB_FUSED=0`` (or ``off``) to turn the kernels off, or use :func:`disabled`
for a block of code. The kernels compile once after install
(~3 s, cached next to this module); a process's first use imports numba and loads them (~0.6 s).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch

from ..initializers.compiled import switch_on, switched_off

__all__ = ["available", "disabled", "kernels", "ref", "takes"]

_STATE: dict[str, Any] = {}
_DTYPES = (torch.float32, torch.float64)


def available() -> bool:
    """Whether the compiled kernels can be used (numba importable and not turned off)."""
    return switch_on(_STATE, "INITLAB_FUSED", _load, "the compiled statistics")


def disabled() -> AbstractContextManager[None]:
    """Run a block with the kernels off (torch ops only), e.g. to compare the two paths side by side."""
    return switched_off(_STATE)


def takes(t: torch.Tensor | None) -> bool:
    """Whether the kernels take ``t``: they are on, and ``t`` is a non-empty contiguous float32/float64
    tensor on the CPU whose memory holds its values as they are (no lazy negation bit, not a wrapper
    such as a DTensor, whose values live in its local shard)."""
    return (
        t is not None
        and t.is_cpu
        and t.dtype in _DTYPES
        and t.layout == torch.strided
        and t.numel() > 0
        and t.is_contiguous()
        and not t.is_neg()  # a lazily negated view shares memory that holds the un-negated values
        and t.data_ptr() != 0  # a wrapper subclass (a DTensor) holds no memory of its own: address 0
        and bool(_STATE.get("ok") or available())
    )


def ref(t: torch.Tensor | None) -> tuple[int, int, bool] | None:
    """``t`` as the kernels take it — (address of its first element, number of elements, float64?) — or
    None where they do not take it (:func:`takes`). Valid only while ``t`` is alive: pass it straight
    to a kernel, e.g. ``kernels().moments(*ref(t))``."""
    if not takes(t):
        return None
    return t.data_ptr(), t.numel(), t.dtype is torch.float64  # type: ignore[union-attr]


def kernels() -> Any:
    """The compiled kernels (a namespace); call only after :func:`available` returned True."""
    return _STATE["kernels"]


def _load() -> Any:
    # numba compiles each kernel at its first call (or loads it from its cache), not here
    from . import _fused_kernels  # ImportError without numba

    return _fused_kernels
