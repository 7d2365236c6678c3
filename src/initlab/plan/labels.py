"""How a plan prints an initializer (``Orthogonal(gain=1.414)``) and a number."""

from __future__ import annotations

import math
from typing import Any

from ..initializers import Initializer

__all__: list[str] = []


def _init_label(init: Initializer) -> str:
    cfg = {k: v for k, v in init.get_config().items() if k not in ("seed", "input_axes", "output_axes")}
    if not cfg:
        return type(init).__name__
    def arg(k: str, v: Any) -> str:
        if isinstance(v, str):
            return v
        return f"{k}={_fmt(v)}" if isinstance(v, float) else f"{k}={v!r}"

    args = ", ".join(arg(k, v) for k, v in cfg.items())
    return f"{type(init).__name__}({args})"


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return ""
    if x == 0:
        return "0"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"
