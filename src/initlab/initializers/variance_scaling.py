"""Variance scaling: var = scale / fan. Glorot/Xavier, He/Kaiming and LeCun are all instances.

Keras ``VarianceScaling(scale, mode, distribution)`` (Glorot & Bengio 2010; He et al. 2015;
LeCun et al. 1998), JAX's ``fan_geo_avg`` mode, and torch's ``xavier_*``/``kaiming_*`` semantics
(untruncated normals, gains from ``calculate_gain``) as their own classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .base import Initializer, Seed, _check_seed
from .counter_fill import NormalLaw, TruncNormalLaw, UniformLaw
from .fans import Fans
from .sampling import TRUNC_STD_2SIGMA, truncated_normal_

__all__ = [
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "KaimingNormal",
    "KaimingUniform",
    "LecunNormal",
    "LecunUniform",
    "TorchDefault",
    "VarianceScaling",
    "XavierNormal",
    "XavierUniform",
]

MODES = ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")
DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")


def _n(x: float) -> str:
    return f"{x:.6g}"


class VarianceScaling(Initializer):
    """Values with variance ``scale / n``, n = fan_in, fan_out, (fan_in+fan_out)/2 or √(fan_in·fan_out).

    - ``truncated_normal``: N(0, √var/0.8796) cut at ±2 of that std, so the variance is exactly var;
    - ``untruncated_normal``: N(0, √var);
    - ``uniform``: U[−√(3·var), √(3·var)).

    As in Keras, ``distribution`` is case-insensitive and ``"normal"`` means ``"truncated_normal"``
    (JAX's ``"normal"`` is untruncated: pass ``"untruncated_normal"``); n is ``max(1, n)``.
    ``input_axes``/``output_axes`` (both or neither) define the fans for einsum-style kernels.

    >>> VarianceScaling(2.0, "fan_in", "uniform").describe((16, 250)).high  # He uniform, torch layout
    0.15491933384829668
    """

    name = "VarianceScaling"
    _config_keys = ("scale", "mode", "distribution", "seed", "input_axes", "output_axes")
    needs_fans = True
    min_rank = 1

    def __init__(
        self,
        scale: float = 1.0,
        mode: str = "fan_in",
        distribution: str = "truncated_normal",
        seed: Seed = None,
        input_axes: Sequence[int] | None = None,
        output_axes: Sequence[int] | None = None,
    ) -> None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale: must be a finite number > 0, got {scale!r}.")
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(map(repr, MODES))}, got {mode!r}.")
        dist = distribution.lower() if isinstance(distribution, str) else distribution
        if dist == "normal":
            dist = "truncated_normal"
        if dist not in DISTRIBUTIONS:
            raise ValueError(
                f"distribution: expected one of {', '.join(map(repr, DISTRIBUTIONS))} (or 'normal', which "
                f"Keras treats as 'truncated_normal'), got {distribution!r}."
            )
        if (input_axes is None) != (output_axes is None):
            raise ValueError(
                "input_axes/output_axes: give both or neither (Keras silently ignores a lone one); got "
                f"input_axes={input_axes!r}, output_axes={output_axes!r}."
            )
        _check_seed(seed)
        self.scale, self.mode, self.distribution, self.seed = float(scale), mode, dist, seed
        self.input_axes = None if input_axes is None else list(input_axes)
        self.output_axes = None if output_axes is None else list(output_axes)

    def _axes(self) -> dict[str, Any]:
        return {"input_axes": self.input_axes, "output_axes": self.output_axes}

    def variance(self, fans: Fans) -> float:
        return self.scale / max(1.0, fans.get(self.mode))

    def _formula(self, fans: Fans, var: float) -> str:
        s = self.scale
        if self.mode == "fan_avg":
            return f"var = {_n(2 * s)}/(fan_in+fan_out) = {_n(2 * s)}/{_n(fans.fan_in + fans.fan_out)} = {var:.3g}"
        if self.mode == "fan_geo_avg":
            return f"var = {_n(s)}/√(fan_in·fan_out) = {_n(s)}/{fans.fan_geo_avg:.4g} = {var:.3g}"
        return f"var = {_n(s)}/{self.mode} = {_n(s)}/{_n(fans.get(self.mode))} = {var:.3g}"

    def _describe(self, shape, layout, fans):
        var = self.variance(fans)
        formula = self._formula(fans, var)
        if self.distribution == "uniform":
            lim = math.sqrt(3 * var)
            return self._desc(shape, layout, fans, "uniform", 0.0, var, -lim, lim, formula,
                              limit=lim, scale=self.scale, mode=self.mode)
        if self.distribution == "untruncated_normal":
            return self._desc(shape, layout, fans, "normal", 0.0, var, -math.inf, math.inf, formula,
                              mean=0.0, stddev=math.sqrt(var), scale=self.scale, mode=self.mode)
        sd = math.sqrt(var) / TRUNC_STD_2SIGMA
        return self._desc(shape, layout, fans, "truncated_normal", 0.0, var, -2 * sd, 2 * sd, formula,
                          mean=0.0, stddev=sd, scale=self.scale, mode=self.mode)

    def fill_cannot_fail(self) -> bool:
        # The truncated sampler may redraw into scratch tensors: an allocation that could fail half way.
        return self.distribution in ("uniform", "untruncated_normal")

    def _counter_law(self, desc) -> UniformLaw | NormalLaw | TruncNormalLaw:
        if self.distribution == "uniform":
            return UniformLaw(desc.low, desc.high)
        if self.distribution == "untruncated_normal":
            return NormalLaw(0.0, desc.std)
        sd = desc.params["stddev"]
        return TruncNormalLaw(0.0, sd, -2 * sd, 2 * sd)

    def _fill(self, work: torch.Tensor, desc, gen) -> None:
        if self.distribution == "uniform":
            work.uniform_(desc.low, desc.high, generator=gen)
        elif self.distribution == "untruncated_normal":
            work.normal_(0.0, desc.std, generator=gen)
        else:
            truncated_normal_(work, -2.0, 2.0, gen, desc.params["stddev"])


class _Preset(VarianceScaling):
    """A fixed (scale, mode, distribution); the config holds only seed and axes, as in Keras."""

    _config_keys = ("seed", "input_axes", "output_axes")
    _preset: tuple[float, str, str] = (1.0, "fan_in", "truncated_normal")

    def __init__(self, seed: Seed = None, input_axes: Sequence[int] | None = None,
                 output_axes: Sequence[int] | None = None) -> None:
        super().__init__(*self._preset, seed=seed, input_axes=input_axes, output_axes=output_axes)


class GlorotUniform(_Preset):
    """Glorot & Bengio (2010), "normalized" init: U(±√(6/(fan_in+fan_out))). Keras's default kernel init.

    >>> print(GlorotUniform().describe((250, 16), layout="keras"))
    Uniform(-0.1502, 0.1502)  var = 2/(fan_in+fan_out) = 2/266 = 0.00752  std 0.0867
    """

    name = "GlorotUniform"
    _preset = (1.0, "fan_avg", "uniform")


class GlorotNormal(_Preset):
    """Glorot & Bengio (2010): variance 2/(fan_in+fan_out), truncated normal (Keras/JAX semantics)."""

    name = "GlorotNormal"
    _preset = (1.0, "fan_avg", "truncated_normal")


class HeUniform(_Preset):
    """He et al. (2015) for ReLU: U(±√(6/fan_in)), variance 2/fan_in."""

    name = "HeUniform"
    _preset = (2.0, "fan_in", "uniform")


class HeNormal(_Preset):
    """He et al. (2015) for ReLU: variance 2/fan_in, truncated normal (Keras/JAX semantics)."""

    name = "HeNormal"
    _preset = (2.0, "fan_in", "truncated_normal")


class LecunUniform(_Preset):
    """LeCun et al. (1998): U(±√(3/fan_in)), variance 1/fan_in."""

    name = "LecunUniform"
    _preset = (1.0, "fan_in", "uniform")


class LecunNormal(_Preset):
    """LeCun et al. (1998): variance 1/fan_in, truncated normal. Flax's default kernel init; SELU's init."""

    name = "LecunNormal"
    _preset = (1.0, "fan_in", "truncated_normal")


class XavierUniform(VarianceScaling):
    """torch's ``xavier_uniform_(gain)``: U(±gain·√(6/(fan_in+fan_out)))."""

    name = "XavierUniform"
    _config_keys = ("gain", "seed")
    _dist = "uniform"

    def __init__(self, gain: float = 1.0, seed: Seed = None) -> None:
        if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not math.isfinite(gain) or gain <= 0:
            raise ValueError(f"gain: must be a finite number > 0, got {gain!r}.")
        self.gain = float(gain)
        super().__init__(self.gain**2, "fan_avg", self._dist, seed)


class XavierNormal(XavierUniform):
    """torch's ``xavier_normal_(gain)``: N(0, gain·√(2/(fan_in+fan_out))), **untruncated**."""

    name = "XavierNormal"
    _dist = "untruncated_normal"


class KaimingUniform(VarianceScaling):
    """torch's ``kaiming_uniform_(a, mode, nonlinearity)``: U(±gain·√(3/fan)),
    gain = ``calculate_gain(nonlinearity, a)``; the defaults give gain √2 (He uniform).

    For an activation torch has no gain for (GELU, SiLU, …) use
    ``VarianceScaling(initlab.gain(act)**2, "fan_in", "uniform")``.
    """

    name = "KaimingUniform"
    _config_keys = ("a", "mode", "nonlinearity", "seed")
    _dist = "uniform"

    def __init__(self, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                 seed: Seed = None) -> None:
        mode_l = mode.lower() if isinstance(mode, str) else mode
        if mode_l not in ("fan_in", "fan_out"):
            raise ValueError(f"mode: torch's kaiming init takes 'fan_in' or 'fan_out', got {mode!r}.")
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a):
            raise ValueError(f"a: the negative slope must be a finite number, got {a!r}.")
        try:
            g = torch.nn.init.calculate_gain(nonlinearity, a)
        except ValueError:
            raise ValueError(
                f"nonlinearity: torch's calculate_gain has no entry for {nonlinearity!r} (it knows linear, "
                "conv*, sigmoid, tanh, relu, leaky_relu, selu). For any activation use "
                "VarianceScaling(scale=initlab.gain(act)**2, mode='fan_in')."
            ) from None
        self.a, self.mode_name, self.nonlinearity = float(a), mode_l, nonlinearity
        super().__init__(g * g, mode_l, self._dist, seed)

    def get_config(self) -> dict[str, Any]:
        return {"a": self.a, "mode": self.mode, "nonlinearity": self.nonlinearity, "seed": self.seed}


class KaimingNormal(KaimingUniform):
    """torch's ``kaiming_normal_(a, mode, nonlinearity)``: N(0, gain/√fan), **untruncated**."""

    name = "KaimingNormal"
    _dist = "untruncated_normal"


class TorchDefault(VarianceScaling):
    """What ``nn.Linear``/``nn.ConvNd`` draw for their weights: ``kaiming_uniform_(a=√5)``,
    i.e. U(±1/√fan_in), variance 1/(3·fan_in) — Glorot & Bengio's "standard" init (eq. 1).
    """

    name = "TorchDefault"
    _config_keys = ("seed",)

    def __init__(self, seed: Seed = None) -> None:
        super().__init__(1.0 / 3.0, "fan_in", "uniform", seed)

    def _formula(self, fans: Fans, var: float) -> str:
        return f"var = 1/(3·fan_in) = 1/(3·{fans.fan_in}) = {var:.3g}"
