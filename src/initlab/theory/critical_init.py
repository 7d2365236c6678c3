"""Critical (edge-of-chaos) initialization as an :class:`~initlab.initializers.Initializer`.

``Critical("tanh", sigma_b2=0.05)`` draws W ~ N(0, σ_w²/fan_in) with σ_w² = :func:`initlab.theory.critical`
(χ₁ = 1: signals neither collapse nor decorrelate with depth, so ξ_c = ∞; Poole et al. 2016,
Schoenholz et al. 2017) and, for a rank-1 tensor (a bias), b ~ N(0, σ_b²).
``orthogonal=True`` draws a scaled orthogonal matrix instead (a delta-orthogonal kernel for
convolutions with out ≥ in channels): with the same second moment E[w²] = σ_w²/fan_in, but all
singular values of the input-output Jacobian concentrate near 1 at criticality — dynamical isometry
(Pennington, Schoenholz & Ganguli 2017, arXiv:1711.04735; Xiao et al. 2018 for convolutions). Dynamical
isometry needs a sigmoidal φ (tanh); for ReLU it cannot be reached (Pennington et al.), and the
initializer says so in ``describe``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..initializers.activations import ActivationLike
from ..initializers.activations import activation as resolve_activation
from ..initializers.base import Initializer, Seed, _check_seed
from ..initializers.counter_fill import ConstantLaw, NormalLaw
from ..initializers.matrix import DeltaOrthogonal, Orthogonal
from ..initializers.registry import register
from . import critical_search, maps

__all__ = ["Critical"]


def _config_activation(spec: ActivationLike, act) -> ActivationLike:
    """What ``get_config`` stores: a name when the name says everything (``nn.Tanh()`` → ``"tanh"``),
    else the object itself (``nn.LeakyReLU(0.2)``: its slope is not in a name)."""
    if isinstance(spec, str):
        return spec
    return act.name if not act.params and act.fn is not spec else spec


class Critical(Initializer):
    """Edge-of-chaos weights for ``act``: N(0, σ_w²/fan_in) with σ_w² = ``theory.critical(act, sigma_b2)``.

    Rank ≥ 2 tensors are weights (fans read from ``layout``); rank-1 tensors are biases, drawn from
    N(0, σ_b²) (``sigma_b2=0`` gives zeros). ``sigma_w2`` may be given to skip the solve (it is then
    checked, not trusted: ``describe`` reports χ₁ there). ``orthogonal=True``: scaled (delta-)
    orthogonal weights with the same E[w²] (dynamical isometry).

    >>> init = Critical("tanh", sigma_b2=0.05)
    >>> round(init.sigma_w2, 2)
    1.76
    >>> print(init.describe((256, 256)).formula.split(";")[0])
    var = σ_w²/fan_in = 1.761/256 = 0.006879
    """

    name = "Critical"
    _config_keys = ("activation", "sigma_b2", "sigma_w2", "orthogonal", "seed")
    needs_fans = True
    min_rank = 1

    def __init__(
        self,
        activation: ActivationLike = "tanh",
        sigma_b2: float = 0.05,
        sigma_w2: float | None = None,
        orthogonal: bool = False,
        seed: Seed = None,
    ) -> None:
        _check_seed(seed)
        if not isinstance(orthogonal, bool):
            raise TypeError(f"orthogonal: expected True or False, got {orthogonal!r}.")
        act = resolve_activation(activation)
        self._act = act
        # A name round-trips through get_config; a module or callable is stored by its resolved name.
        self.activation = _config_activation(activation, act)
        self._chi1: float | None = None
        if isinstance(sigma_b2, bool) or not isinstance(sigma_b2, (int, float)) or not math.isfinite(sigma_b2) \
                or sigma_b2 < 0:
            raise ValueError(f"sigma_b2: must be a finite number >= 0, got {sigma_b2!r}.")
        self.sigma_b2 = float(sigma_b2)
        if sigma_w2 is None:
            self.sigma_w2 = critical_search.critical(act, self.sigma_b2)
        else:
            if isinstance(sigma_w2, bool) or not isinstance(sigma_w2, (int, float)) or not math.isfinite(sigma_w2) \
                    or sigma_w2 <= 0:
                raise ValueError(f"sigma_w2: must be a finite number > 0 (or None to solve χ₁ = 1), got {sigma_w2!r}.")
            self.sigma_w2 = float(sigma_w2)
        self.orthogonal, self.seed = orthogonal, seed

    def get_config(self) -> dict[str, Any]:
        return {
            "activation": self.activation,
            "sigma_b2": self.sigma_b2,
            "sigma_w2": self.sigma_w2,
            "orthogonal": self.orthogonal,
            "seed": self.seed,
        }

    def _fans(self, shape, layout, groups, given):
        if len(shape) == 1:  # a bias: no fans
            return super()._fans(shape, layout, groups, given) if given is not None else None
        return super()._fans(shape, layout, groups, given)

    def _matrix(self, shape: tuple[int, ...], layout: str, fan_in: int) -> Initializer:
        """The (delta-)orthogonal initializer with E[w²] = σ_w²/fan_in for this shape."""
        if len(shape) >= 3 and layout in ("torch", "keras"):
            cin, cout = (shape[1], shape[0]) if layout == "torch" else (shape[-2], shape[-1])
            if cout >= cin:
                # Delta-orthogonal: E[w²] = gain²·cin/numel; matching σ_w²/fan_in gives gain² = σ_w²·numel/(cin·fan_in).
                gain = math.sqrt(self.sigma_w2 * math.prod(shape) / (cin * fan_in))
                return DeltaOrthogonal(gain=gain)
        rows, cols = (shape[0], math.prod(shape[1:])) if layout.startswith("torch") else (
            math.prod(shape[:-1]), shape[-1])
        # Orthogonal: E[w²] = gain²/max(rows, cols).
        return Orthogonal(gain=math.sqrt(self.sigma_w2 * max(rows, cols) / fan_in))

    def _describe(self, shape, layout, fans):
        chi = self.chi1
        crit = f"χ₁ = {chi:.4g} at q* for {self._act.label}, σ_b² = {self.sigma_b2:g}"
        if len(shape) <= 1:
            var = self.sigma_b2
            sd = math.sqrt(var)
            family = "normal" if var > 0 else "constant"
            return self._desc(shape, layout, fans, family, 0.0, var, -math.inf if var else 0.0,
                              math.inf if var else 0.0, f"bias: var = σ_b² = {var:g}; {crit}",
                              mean=0.0, stddev=sd, sigma_w2=self.sigma_w2, sigma_b2=self.sigma_b2)
        fan_in = fans.fan_in
        if fan_in < 1:
            raise ValueError(f"shape: {shape} has fan_in 0 in layout {layout!r}; nothing to scale by.")
        var = self.sigma_w2 / fan_in
        formula = f"var = σ_w²/fan_in = {self.sigma_w2:.4g}/{fan_in} = {var:.4g}; {crit}"
        if self.orthogonal:
            inner = self._matrix(shape, layout, fan_in)
            d = inner.describe(shape, layout)
            note = "" if self._act.family in ("tanh", "linear", "smooth", "sigmoid") else (
                " (dynamical isometry is not reachable for ReLU-like φ: Pennington et al. 2017)")
            return self._desc(shape, layout, fans, d.family, 0.0, d.variance, d.low, d.high,
                              f"{formula}; {type(inner).__name__}(gain={inner.gain:.4g}){note}",
                              gain=inner.gain, sigma_w2=self.sigma_w2, sigma_b2=self.sigma_b2,
                              **{k: v for k, v in d.params.items() if k in ("rows", "cols")})
        return self._desc(shape, layout, fans, "normal", 0.0, var, -math.inf, math.inf, formula,
                          mean=0.0, stddev=math.sqrt(var), sigma_w2=self.sigma_w2, sigma_b2=self.sigma_b2)

    @property
    def chi1(self) -> float:
        """χ₁ at the fixed point for (σ_w², σ_b²); 1 unless ``sigma_w2`` was given off-critical (nan if
        the length map has no finite fixed point)."""
        if self._chi1 is None:
            finite = math.isfinite(maps.fixed_point(self._act, self.sigma_w2, self.sigma_b2))
            self._chi1 = maps.chi1(self._act, self.sigma_w2, self.sigma_b2) if finite else math.nan
        return self._chi1

    def _counter_law(self, desc) -> ConstantLaw | NormalLaw | None:
        if self.orthogonal and len(desc.shape) >= 2:
            return None  # a (delta-)orthogonal matrix needs the whole tensor
        return ConstantLaw(0.0) if desc.variance == 0 else NormalLaw(0.0, math.sqrt(desc.variance))

    def _fill(self, work: torch.Tensor, desc, gen) -> None:
        if work.numel() == 0:
            return
        if self.orthogonal and work.dim() >= 2:
            inner = self._matrix(tuple(work.shape), desc.layout, desc.fans.fan_in)
            # The QR gains nothing from threads at layer sizes, and on an oversubscribed machine
            # multithreaded LAPACK is ~100× slower (measured: 317 ms vs ~1 ms for 64×64), so one thread.
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                inner._fill(work, inner.describe(tuple(work.shape), desc.layout), gen)
            finally:
                torch.set_num_threads(threads)
            return
        if desc.variance == 0:
            work.zero_()
        else:
            work.normal_(0.0, math.sqrt(desc.variance), generator=gen)


register(Critical, "critical", "edge_of_chaos", origin="initlab")
