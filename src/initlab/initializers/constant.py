"""Deterministic fills: ``Zeros``, ``Ones``, ``Constant`` (Keras 3 names and semantics)."""

from __future__ import annotations

import math

import torch

from .base import Initializer
from .counter_fill import ConstantLaw
from .description import Description
from .fans import Fans

__all__ = ["Constant", "Ones", "Zeros"]


class Constant(Initializer):
    """Every value equals ``value`` (Keras ``Constant``; scalars only).

    >>> Constant(0.1).sample((2, 3))[0, 0].item() == torch.tensor(0.1).item()
    True
    """

    name = "Constant"
    _config_keys = ("value",)
    random = False

    def __init__(self, value: float = 0.0) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(
                f"value: Constant takes one finite scalar (int or float), got {value!r}; for a tensor of "
                "values, copy it into the parameter directly."
            )
        self.value = float(value)

    def _describe(self, shape: tuple[int, ...], layout: str, fans: Fans | None) -> Description:
        return self._desc(shape, layout, fans, "constant", self.value, 0.0, self.value, self.value,
                          f"every value = {self.value:g} (variance 0)", value=self.value)

    def fill_cannot_fail(self) -> bool:
        return True

    def _counter_law(self, desc: Description) -> ConstantLaw:
        return ConstantLaw(self.value)

    def _fill(self, work: torch.Tensor, desc: Description, gen: torch.Generator | None) -> None:
        if self.value == 0.0:
            work.zero_()
        else:
            work.fill_(self.value)


class Zeros(Constant):
    """All zeros (Keras ``Zeros``; the default bias initializer)."""

    name = "Zeros"
    _config_keys = ()

    def __init__(self) -> None:
        super().__init__(0.0)


class Ones(Constant):
    """All ones (Keras ``Ones``; the default scale of normalization layers)."""

    name = "Ones"
    _config_keys = ()

    def __init__(self) -> None:
        super().__init__(1.0)
