"""Fixed-scale random initializers: Keras's ``RandomNormal``, ``RandomUniform``, ``TruncatedNormal``,
and torch's ``trunc_normal_`` (absolute bounds) as ``TruncNormal``."""

from __future__ import annotations

import math

from .base import Initializer, Seed, _check_seed
from .counter_fill import NormalLaw, TruncNormalLaw, UniformLaw
from .sampling import TRUNC_STD_2SIGMA, truncated_moments, truncated_normal_

__all__ = ["RandomNormal", "RandomUniform", "TruncNormal", "TruncatedNormal"]


def _finite(name: str, x: float) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ValueError(f"{name}: expected a finite number, got {x!r}.")
    return float(x)


def _positive(name: str, x: float) -> float:
    x = _finite(name, x)
    if x <= 0:
        raise ValueError(f"{name}: must be > 0 (a standard deviation), got {x!r}.")
    return x


class RandomNormal(Initializer):
    """N(mean, stddev²), untruncated. Keras defaults: mean 0, stddev 0.05.

    >>> RandomNormal(stddev=1.0).describe((16, 250)).std
    1.0
    """

    name = "RandomNormal"
    _config_keys = ("seed", "mean", "stddev")

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: Seed = None) -> None:
        _check_seed(seed)
        self.mean, self.stddev, self.seed = _finite("mean", mean), _positive("stddev", stddev), seed

    def _describe(self, shape, layout, fans):
        return self._desc(shape, layout, fans, "normal", self.mean, self.stddev**2, -math.inf, math.inf,
                          f"var = stddev² = {self.stddev:g}² = {self.stddev**2:.4g}",
                          mean=self.mean, stddev=self.stddev)

    def fill_cannot_fail(self) -> bool:
        return True

    def _counter_law(self, desc):
        return NormalLaw(self.mean, self.stddev)

    def _fill(self, work, desc, gen):
        work.normal_(self.mean, self.stddev, generator=gen)


class RandomUniform(Initializer):
    """U[minval, maxval). Keras defaults: ±0.05. Variance (maxval − minval)²/12."""

    name = "RandomUniform"
    _config_keys = ("seed", "minval", "maxval")

    def __init__(self, minval: float = -0.05, maxval: float = 0.05, seed: Seed = None) -> None:
        _check_seed(seed)
        self.minval, self.maxval, self.seed = _finite("minval", minval), _finite("maxval", maxval), seed
        if self.minval > self.maxval:
            raise ValueError(
                f"minval/maxval: minval={minval!r} is greater than maxval={maxval!r}; "
                "pass minval <= maxval."
            )

    def _describe(self, shape, layout, fans):
        w = self.maxval - self.minval
        return self._desc(shape, layout, fans, "uniform", (self.minval + self.maxval) / 2, w * w / 12,
                          self.minval, self.maxval,
                          f"var = (maxval − minval)²/12 = {w:g}²/12 = {w * w / 12:.4g}",
                          minval=self.minval, maxval=self.maxval)

    def fill_cannot_fail(self) -> bool:
        return True

    def _counter_law(self, desc):
        return UniformLaw(self.minval, self.maxval)

    def _fill(self, work, desc, gen):
        work.uniform_(self.minval, self.maxval, generator=gen)


class TruncatedNormal(Initializer):
    """Keras ``TruncatedNormal``: mean + stddev·Z, Z ~ N(0,1) cut to (−2, 2).

    ``stddev`` is the pre-truncation value, so the actual std is c·stddev with c = 0.8796.
    Unlike Keras on its torch backend (which keeps an out-of-range draw when 4 tries miss,
    keras-core PR #193), every value here lies within mean ± 2·stddev.
    """

    name = "TruncatedNormal"
    _config_keys = ("seed", "mean", "stddev")

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: Seed = None) -> None:
        _check_seed(seed)
        self.mean, self.stddev, self.seed = _finite("mean", mean), _positive("stddev", stddev), seed

    def _describe(self, shape, layout, fans):
        s = self.stddev * TRUNC_STD_2SIGMA
        return self._desc(shape, layout, fans, "truncated_normal", self.mean, s * s,
                          self.mean - 2 * self.stddev, self.mean + 2 * self.stddev,
                          f"var = (0.8796·stddev)² = (0.8796·{self.stddev:g})² = {s * s:.4g} "
                          "(N(mean, stddev) cut at ±2·stddev)",
                          mean=self.mean, stddev=self.stddev)

    def _counter_law(self, desc):
        return TruncNormalLaw(self.mean, self.stddev, self.mean - 2 * self.stddev, self.mean + 2 * self.stddev)

    def _fill(self, work, desc, gen):
        truncated_normal_(work, -2.0, 2.0, gen, self.stddev, self.mean)


class TruncNormal(Initializer):
    """torch's ``trunc_normal_(mean, std, a, b)``: N(mean, std) restricted to the **absolute** [a, b].

    Beware the torch convention: ``TruncNormal(std=0.02)`` with the default a=−2, b=2 does not truncate
    at all (the bounds are 100σ away). For the TF/Keras meaning use ``TruncatedNormal``.
    """

    name = "TruncNormal"
    _config_keys = ("seed", "mean", "std", "a", "b")

    def __init__(self, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0,
                 seed: Seed = None) -> None:
        _check_seed(seed)
        self.mean, self.std, self.seed = _finite("mean", mean), _positive("std", std), seed
        self.a, self.b = float(a), float(b)
        if math.isnan(self.a) or math.isnan(self.b) or not self.a < self.b:
            raise ValueError(f"a/b: need a < b (absolute bounds), got a={a!r}, b={b!r}.")
        truncated_moments((self.a - self.mean) / self.std, (self.b - self.mean) / self.std)

    def _describe(self, shape, layout, fans):
        lo, hi = (self.a - self.mean) / self.std, (self.b - self.mean) / self.std
        _, m, v = truncated_moments(lo, hi)
        return self._desc(shape, layout, fans, "truncated_normal", self.mean + self.std * m,
                          self.std**2 * v, self.a, self.b,
                          f"var = std²·Var[Z | {lo:.3g} ≤ Z ≤ {hi:.3g}] = {self.std**2 * v:.4g} "
                          "(torch trunc_normal_, absolute bounds)",
                          mean=self.mean, stddev=self.std)

    def _counter_law(self, desc):
        return TruncNormalLaw(self.mean, self.std, self.a, self.b)

    def _fill(self, work, desc, gen):
        truncated_normal_(work, (self.a - self.mean) / self.std, (self.b - self.mean) / self.std, gen,
                          self.std, self.mean)
