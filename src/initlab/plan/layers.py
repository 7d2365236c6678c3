"""What initlab knows about a layer: the :class:`LayerInfo` of a known layer, the :class:`ParamInfo` of each
of its parameters and the :class:`Part` slices of a packed one, plus the gate orders of torch and Keras.

These are the shared records of the plan layer: :mod:`initlab.plan.modules` builds them for torch modules,
:mod:`initlab.plan.keras` for Keras 3 layers, and presets read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..initializers.fans import Fans

__all__ = ["GATES", "KERAS_GATES", "FansBy", "LayerInfo", "ParamInfo", "Part"]

#: Gate order of torch's packed recurrent weights, by layer kind.
GATES: dict[str, tuple[str, ...]] = {"rnn": ("h",), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}
#: Keras's gate order for the same kinds (its LSTM "c" is torch's "g"; its GRU "h" is torch's "n").
KERAS_GATES: dict[str, tuple[str, ...]] = {"rnn": ("h",), "lstm": ("i", "f", "c", "o"), "gru": ("z", "r", "h")}

FansBy = dict[str, Fans | None]


@dataclass(frozen=True)
class Part:
    """A block of a packed parameter: ``index`` selects it, ``label`` names it (a gate, q/k/v)."""

    label: str
    index: tuple[Any, ...]
    shape: tuple[int, ...]
    fans: FansBy


@dataclass(frozen=True)
class ParamInfo:
    """What initlab knows about one parameter of a known layer.

    ``name`` is the attribute path relative to the layer (``"weight_ih_l0"``, ``"out_proj.weight"``, or
    a Keras variable's name). ``fans`` maps ``"true"``, ``"torch"``, ``"keras"``, ``"flax"`` to the fans
    each convention reads (``None`` where fans mean nothing, e.g. a norm's scale).
    """

    name: str
    role: str
    shape: tuple[int, ...]
    layout: str
    fans: FansBy
    parts: tuple[Part, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerInfo:
    """A known layer: its ``kind`` (``linear``, ``conv``, ``lstm``, ``mha``, …), its parameters, and the
    child modules whose parameters it already describes (``nn.MultiheadAttention.out_proj``)."""

    kind: str
    framework: str
    module: Any
    params: tuple[ParamInfo, ...]
    covers: tuple[str, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def type_name(self) -> str:
        return type(self.module).__name__
