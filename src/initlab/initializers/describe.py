"""``describe()``: what distribution an initializer gives a shape, and why (see :class:`Description`)."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Initializer
from .description import Description
from .fans import Fans
from .registry import get

__all__ = ["Description", "describe"]


def describe(
    init: Initializer | str | dict,
    shape: Sequence[int],
    layout: str = "torch",
    *,
    groups: int = 1,
    fans: Fans | tuple[int, int] | None = None,
) -> Description:
    """Explain the distribution ``init`` gives a tensor of ``shape`` stored in ``layout``.

    >>> import initlab
    >>> d = initlab.describe("glorot_uniform", (250, 16), layout="keras")
    >>> print(d)
    Uniform(-0.1502, 0.1502)  var = 2/(fan_in+fan_out) = 2/266 = 0.00752  std 0.0867
    >>> d.fan_in, d.fan_out
    (250, 16)
    """
    return get(init).describe(shape, layout, groups=groups, fans=fans)
