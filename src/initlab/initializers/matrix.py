"""Structured initializers: orthogonal, identity, Dirac, delta-orthogonal and sparse.

Their laws are about the whole matrix, not one entry; ``describe`` reports the empirical law of the
entries (for ``Orthogonal``, E[x²] = gain²/max(rows, cols) exactly, since the squared entries of an
orthonormal frame sum to min(rows, cols)).
"""

from __future__ import annotations

import math

import torch

from .base import Initializer, Seed, _check_seed
from .counter_fill import DiracLaw, IdentityLaw, SparseLaw

__all__ = ["DeltaOrthogonal", "Dirac", "Identity", "Orthogonal", "Sparse"]

_TORCH_LAYOUTS = ("torch", "torch_transposed")


def _gain(g: float) -> float:
    if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g):
        raise ValueError(f"gain: must be a finite number, got {g!r}.")
    return float(g)


def _orthonormal(rows: int, cols: int, gen, dtype, device, torch_order: bool) -> torch.Tensor:
    """A (rows, cols) matrix with orthonormal rows or columns (whichever are fewer), sign-fixed so the
    law is Haar (Mezzadri 2007). ``torch_order`` draws in ``orthogonal_``'s order, else Keras's."""
    if torch_order:
        a = torch.empty(rows, cols, dtype=dtype, device=device).normal_(0.0, 1.0, generator=gen)
        if rows < cols:
            a = a.t()
    else:
        a = torch.empty(max(rows, cols), min(rows, cols), dtype=dtype, device=device).normal_(0.0, 1.0, generator=gen)
    q, r = torch.linalg.qr(a)
    q *= torch.sign(torch.diagonal(r))
    return q.t() if rows < cols else q


class Orthogonal(Initializer):
    """A (semi-)orthogonal matrix times ``gain`` (Saxe et al. 2014). Keras ``Orthogonal``/torch
    ``orthogonal_``.

    The matrix view follows the layout: in torch layouts rows = size(0) (the output units) and the
    trailing dims are flattened, exactly like ``torch.nn.init.orthogonal_``; in Keras layouts the
    leading dims are flattened and cols = shape[-1], exactly like Keras. Either way each output unit's
    weight vector is part of an orthonormal frame.
    """

    name = "Orthogonal"
    _config_keys = ("seed", "gain")
    min_rank = 2

    def __init__(self, gain: float = 1.0, seed: Seed = None) -> None:
        _check_seed(seed)
        self.gain, self.seed = _gain(gain), seed

    def _view(self, shape, layout):
        if layout in _TORCH_LAYOUTS:
            return shape[0], math.prod(shape[1:])
        return math.prod(shape[:-1]), shape[-1]

    def _describe(self, shape, layout, fans):
        rows, cols = self._view(shape, layout)
        var = self.gain**2 / max(rows, cols, 1)
        g = abs(self.gain)
        return self._desc(shape, layout, fans, "orthogonal", 0.0, var, -g, g,
                          f"E[x²] = gain²/max(rows, cols) = {self.gain:g}²/{max(rows, cols)} = {var:.3g} "
                          f"({'rows' if rows <= cols else 'columns'} of the {rows}×{cols} view orthonormal)",
                          gain=self.gain, rows=rows, cols=cols)

    def _fill(self, work, desc, gen):
        if work.numel() == 0:
            return
        rows, cols = desc.params["rows"], desc.params["cols"]
        q = _orthonormal(rows, cols, gen, work.dtype, work.device, desc.layout in _TORCH_LAYOUTS)
        work.view(rows, cols).copy_(q).mul_(self.gain)


class Identity(Initializer):
    """``gain`` times the (possibly rectangular) identity matrix; 2-D only. Keras ``Identity``, torch
    ``eye_``. Unlike Keras, ``get_config`` keeps ``gain``."""

    name = "Identity"
    _config_keys = ("gain",)
    min_rank = max_rank = 2
    random = False

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = _gain(gain)

    def _describe(self, shape, layout, fans):
        r, c = shape
        n = max(r * c, 1)
        k = min(r, c)
        mean = self.gain * k / n
        var = self.gain**2 * k / n - mean * mean
        return self._desc(shape, layout, fans, "identity", mean, var, min(0.0, self.gain), max(0.0, self.gain),
                          f"{k} diagonal entries = {self.gain:g}, the rest 0", gain=self.gain)

    def _counter_law(self, desc):
        return IdentityLaw(self.gain)

    def _fill(self, work, desc, gen):
        work.zero_()
        work.diagonal().fill_(self.gain)


def _centre_indices(kernel: tuple[int, ...], jax_centre: bool) -> tuple[int, ...]:
    return tuple((k - 1) // 2 if jax_centre else k // 2 for k in kernel)


class Dirac(Initializer):
    """torch's ``dirac_(groups)``: a convolution kernel that passes each input channel through
    unchanged (1 at the kernel centre k//2 for channel d → d, per group); rank 3–5.
    In the Keras layout (*k, in, out) the same identity is written transposed."""

    name = "Dirac"
    _config_keys = ("groups",)
    min_rank, max_rank = 3, 5
    random = False

    def __init__(self, groups: int = 1) -> None:
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"groups: expected an int >= 1, got {groups!r}.")
        self.groups = groups

    def _torch_shape(self, shape, layout):
        if layout == "torch":
            return shape
        if layout == "keras":
            return (shape[-1], shape[-2], *shape[:-2])
        raise ValueError(f"layout: Dirac supports 'torch' (out, in, *k) and 'keras' (*k, in, out), got {layout!r}.")

    def _describe(self, shape, layout, fans):
        ts = self._torch_shape(shape, layout)
        if ts[0] % self.groups:
            raise ValueError(f"groups: {self.groups} does not divide the {ts[0]} output channels of shape {shape}.")
        ones = self.groups * min(ts[0] // self.groups, ts[1])
        n = math.prod(shape)
        mean = ones / n
        return self._desc(shape, layout, fans, "dirac", mean, mean - mean * mean, 0.0, 1.0,
                          f"{ones} ones at the kernel centre, the rest 0", gain=1.0, ones=ones)

    def _counter_law(self, desc):
        return DiracLaw(self.groups, desc.layout)

    def _fill(self, work, desc, gen):
        ts = self._torch_shape(tuple(work.shape), desc.layout)
        per = ts[0] // self.groups
        centre = _centre_indices(ts[2:], jax_centre=False)
        m = min(per, ts[1])
        # Output channel g·per + d reads input channel d of its group, for d < m: one scatter, in place.
        d = torch.arange(m, device=work.device)
        out_idx = (torch.arange(self.groups, device=work.device).unsqueeze(1) * per + d).flatten()
        in_idx = d.repeat(self.groups)
        work.zero_()
        if desc.layout == "torch":
            work[(out_idx, in_idx, *centre)] = 1.0
        else:
            work[(*centre, in_idx, out_idx)] = 1.0


class DeltaOrthogonal(Initializer):
    """Delta-orthogonal convolution kernel (Xiao et al. 2018, "10,000-layer vanilla CNNs"; JAX's
    ``delta_orthogonal``): zeros except an orthogonal (in × out) matrix × gain at the spatial centre
    (k−1)//2. Needs out ≥ in; rank 3–5."""

    name = "DeltaOrthogonal"
    _config_keys = ("seed", "gain")
    min_rank, max_rank = 3, 5

    def __init__(self, gain: float = 1.0, seed: Seed = None) -> None:
        _check_seed(seed)
        self.gain, self.seed = _gain(gain), seed

    def _channels(self, shape, layout):
        if layout == "torch":
            return shape[1], shape[0], tuple(shape[2:])
        if layout == "keras":
            return shape[-2], shape[-1], tuple(shape[:-2])
        raise ValueError(
            f"layout: DeltaOrthogonal supports 'torch' (out, in, *k) and 'keras' (*k, in, out), got {layout!r}."
        )

    def _describe(self, shape, layout, fans):
        cin, cout, k = self._channels(shape, layout)
        if cout < cin:
            raise ValueError(
                f"shape: DeltaOrthogonal needs out_channels >= in_channels (fan_in <= fan_out), got "
                f"in={cin}, out={cout} for shape {shape}."
            )
        n = math.prod(shape)
        var = self.gain**2 * cin / n
        return self._desc(shape, layout, fans, "delta_orthogonal", 0.0, var, -abs(self.gain), abs(self.gain),
                          f"orthogonal {cin}×{cout} × gain at the centre of a {'×'.join(map(str, k))} kernel; "
                          f"E[x²] = gain²·in/numel = {var:.3g}", gain=self.gain)

    def _fill(self, work, desc, gen):
        cin, cout, k = self._channels(tuple(work.shape), desc.layout)
        q = _orthonormal(cin, cout, gen, work.dtype, work.device, torch_order=False) * self.gain  # (in, out)
        work.zero_()
        centre = _centre_indices(k, jax_centre=True)
        if desc.layout == "keras":
            work[(*centre, slice(None), slice(None))] = q
        else:
            work[(slice(None), slice(None), *centre)] = q.t()


def _random_subsets(n: int, cols: int, k: int, gen, device) -> torch.Tensor:
    """An (n, cols) bool mask with exactly k True entries per column, each column an independent
    uniformly random k-subset of range(n) — Floyd's algorithm (Bentley & Floyd 1987, "Programming
    pearls: a sample of brilliance"), vectorized over the columns: min(k, n − k) steps of one
    ``randint`` per column, instead of a permutation (or a sort) of every column."""
    pick_true = k <= n - k
    m = k if pick_true else n - k
    mask = torch.zeros(n * cols, dtype=torch.bool, device=device)  # row-major (n, cols), flat
    col = torch.arange(cols, device=device)
    for j in range(n - m, n):
        t = torch.randint(0, j + 1, (cols,), generator=gen, device=device) * cols + col
        taken = mask.index_select(0, t)
        mask.index_fill_(0, torch.where(taken, j * cols + col, t), True)
    mask = mask.view(n, cols)
    return mask if pick_true else ~mask


class Sparse(Initializer):
    """torch's ``sparse_(sparsity, std)`` (Martens 2010): N(0, std) with ceil(sparsity·rows) zeros in
    every column of a 2-D weight (in torch layout (out, in), each input unit's outgoing weights).
    Unlike torch, the zero positions come from the same generator, so a seed fixes them too."""

    name = "Sparse"
    _config_keys = ("seed", "sparsity", "std")
    min_rank = max_rank = 2

    def __init__(self, sparsity: float = 0.1, std: float = 0.01, seed: Seed = None) -> None:
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity <= 1:
            raise ValueError(f"sparsity: expected a fraction in [0, 1], got {sparsity!r}.")
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not math.isfinite(std) or std <= 0:
            raise ValueError(f"std: must be a finite number > 0, got {std!r}.")
        _check_seed(seed)
        self.sparsity, self.std, self.seed = float(sparsity), float(std), seed

    def _describe(self, shape, layout, fans):
        rows = shape[0] if layout in _TORCH_LAYOUTS else shape[1]
        zeros = math.ceil(self.sparsity * rows)
        keep = 1 - zeros / rows if rows else 0.0
        var = keep * self.std**2
        return self._desc(shape, layout, fans, "sparse_normal", 0.0, var, -math.inf, math.inf,
                          f"var = (1 − {zeros}/{rows})·std² = {var:.3g}",
                          stddev=self.std, zeros_per_column=zeros)

    def _counter_law(self, desc):
        return SparseLaw(self.std, desc.params["zeros_per_column"], desc.layout)

    def _fill(self, work, desc, gen):
        w = work if desc.layout in _TORCH_LAYOUTS else work.t()
        rows, cols = w.shape
        w.normal_(0.0, self.std, generator=gen)
        zeros = desc.params["zeros_per_column"]
        if zeros and cols:
            w.masked_fill_(_random_subsets(rows, cols, zeros, gen, work.device), 0.0)
