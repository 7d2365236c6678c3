"""The :class:`Description`: the law of the values an initializer writes into a tensor, with its formula.

It is the single source of truth: sampling is written against it and the tests check samples against it,
so the text a user reads is the law the values follow. :meth:`Initializer.describe
<initlab.initializers.Initializer.describe>` returns one; :func:`initlab.describe` is the entry point by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .fans import Fans

__all__ = ["Description"]


@dataclass(frozen=True)
class Description:
    """The law of the values an initializer writes into a tensor of ``shape``.

    ``mean`` and ``variance`` are those of one entry drawn at random from the tensor (for random
    initializers, the per-entry law; for deterministic ones such as ``Identity``, the empirical law of
    the entries). ``low``/``high`` bound every value (±inf when unbounded). ``formula`` says in words
    where the variance comes from, with the numbers filled in.
    """

    initializer: str
    family: str
    shape: tuple[int, ...]
    layout: str
    fans: Fans | None
    mean: float
    variance: float
    low: float
    high: float
    formula: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def std(self) -> float:
        return math.sqrt(max(self.variance, 0.0))

    @property
    def fan_in(self) -> int | None:
        return None if self.fans is None else self.fans.fan_in

    @property
    def fan_out(self) -> int | None:
        return None if self.fans is None else self.fans.fan_out

    @property
    def distribution(self) -> str:
        """The family with its parameters, e.g. ``Uniform(-0.1502, 0.1502)``."""
        p = self.params
        f = self.family
        if f == "uniform":
            return f"Uniform({_g(self.low)}, {_g(self.high)})"
        if f == "normal":
            return f"Normal(mean={_g(p['mean'])}, std={_g(p['stddev'])})"
        if f == "truncated_normal":
            return (
                f"TruncatedNormal(mean={_g(p['mean'])}, stddev={_g(p['stddev'])}, "
                f"cut to [{_g(self.low)}, {_g(self.high)}])"
            )
        if f == "constant":
            return f"Constant({_g(self.mean)})"
        if f == "sparse_normal":
            return f"SparseNormal(std={_g(p['stddev'])}, zeros per column={p['zeros_per_column']})"
        if f == "stft":
            win = p["window"] if p["window"] is None or isinstance(p["window"], str) else "given"
            return f"STFT(side={p['side']}, window={win}, scaling={p['scaling']})"
        return f"{f.replace('_', ' ').title().replace(' ', '')}(gain={_g(p.get('gain', 1.0))})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "initializer": self.initializer,
            "family": self.family,
            "distribution": self.distribution,
            "shape": list(self.shape),
            "layout": self.layout,
            "fan_in": self.fan_in,
            "fan_out": self.fan_out,
            "receptive_field": None if self.fans is None else self.fans.receptive_field,
            "mean": self.mean,
            "variance": self.variance,
            "std": self.std,
            "low": self.low,
            "high": self.high,
            "formula": self.formula,
            "params": dict(self.params),
        }

    def __str__(self) -> str:
        return f"{self.distribution}  {self.formula}  std {_g(self.std, 3)}"


def _g(x: float, digits: int = 4) -> str:
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    mag = abs(x)
    if 1e-4 <= mag < 1e5:
        decimals = max(digits - 1 - math.floor(math.log10(mag)), 0)
        return f"{x:.{decimals}f}".rstrip("0").rstrip(".") if decimals else f"{x:.0f}"
    return f"{x:.{digits - 1}e}"
