"""Whole-model plans: which initializer every parameter (and every slice of a packed one) gets, with its fans,
std and the reason — then apply it.

``initlab.plan(model, preset, example_input=..., rules=..., options=...)`` returns a :class:`Plan`; on the
package object ``initlab`` the name ``plan`` is that function, so import this package's modules by their
full path (``from initlab.plan.presets import register_preset``).

Modules, lowest first: :mod:`~initlab.plan.layers` (the records: LayerInfo, ParamInfo, Part),
:mod:`~initlab.plan.keras` (the Keras 3 adapter) and :mod:`~initlab.plan.modules` (torch module
knowledge), :mod:`~initlab.plan.sites` (what a preset works with), :mod:`~initlab.plan.follow` (the
activation after each layer), :mod:`~initlab.plan.registry` and :mod:`~initlab.plan.context` (the preset
machinery), :mod:`~initlab.plan.mup` (μP's width dimensions and learning-rate factors),
:mod:`~initlab.plan.trace` (each parameter read from the op that uses it, for modules initlab
does not know), :mod:`~initlab.plan.presets` (one module per built-in preset), :mod:`~initlab.plan.rules`,
:mod:`~initlab.plan.apply` (the Plan and its all-or-nothing apply) and :mod:`~initlab.plan.build`
(``plan()``). This layer uses the catalogue and the theory, never inspection or experiments.
"""

from .apply import Plan, PlanEntry
from .build import plan
from .mup import BaseShapes, LrScale, WidthShape, base_shapes, width_shapes
from .trace import ModelTrace, ParamReading, trace_model

__all__ = ["BaseShapes", "LrScale", "ModelTrace", "ParamReading", "Plan", "PlanEntry", "WidthShape", "base_shapes", "plan",
           "trace_model", "width_shapes"]
