"""What a preset works with and what it records: a parameter's :class:`ParamSite`, the activation that
:class:`Follow` s its layer, a :class:`Choice` for a parameter or a slice, and a :class:`PostStep`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..initializers.activations import Activation
from ..initializers.base import Initializer
from ..initializers.fans import Fans
from .layers import LayerInfo, ParamInfo

__all__ = ["Choice", "Follow", "ParamSite", "PostStep"]


@dataclass
class ParamSite:
    """One parameter of the model: ``path`` (as ``named_parameters`` or the Keras variable path gives it),
    the parameter, and — when initlab knows the layer, from its module or from the ops that use it
    (:mod:`initlab.plan.trace`; then ``layer.attrs["traced"]`` is true) — ``layer`` and ``info``; else
    ``reason`` says why it is unknown. ``aliases``: the other names of the same tensor (tied parameters
    are one site, planned and filled once)."""

    path: str
    param: torch.Tensor
    module_path: str
    module: Any
    layer: LayerInfo | None = None
    info: ParamInfo | None = None
    reason: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        return self.info is not None


@dataclass(frozen=True)
class PostStep:
    """A callable ``fn(model)`` that :meth:`Plan.apply` runs after every parameter is filled; with
    ``seeded=True`` it is called ``fn(model, seed)`` with apply's seed (a step that draws values)."""

    name: str
    fn: Callable[..., Any]
    why: str
    preset: str | None = None
    seeded: bool = False


@dataclass
class Choice:
    """A preset's (or rule's) decision for a parameter or one slice of it."""

    initializer: Initializer | None
    why: str
    fans: Fans | None
    label: str | None = None  # slice label ("i", "q", "padding_idx=0"); None for the whole parameter
    index: tuple[Any, ...] | None = None
    shape: tuple[int, ...] | None = None
    fixed: bool = False  # a fix-up (a zeroed padding row) that rules keep
    partition: bool = False  # one block of a packed parameter (gate, q/k/v)
    rule: str | None = None


@dataclass(frozen=True)
class Follow:
    """The activation that follows a layer, and how it was found (``via``)."""

    activation: Activation
    via: str
