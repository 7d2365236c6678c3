"""The ``lsuv`` and ``lsuv_residual`` presets: ``auto``, then orthonormal weights and zero biases for every
Linear/Conv, then :func:`~initlab.theory.lsuv.lsuv` on ``example_input`` as a post step."""

from __future__ import annotations

from typing import Any

from torch import nn

from ...initializers import Zeros
from ...initializers.matrix import Orthogonal
from ...theory.lsuv import DEFAULT_LAYERS, LSUVResult, lsuv
from ..registry import PRESETS, PresetOption, register_preset


def _lsuv_preset(ctx: Any, residual: bool) -> None:
    """``auto``, then orthonormal weights and zero biases for every Linear/Conv, then LSUV as a post step
    (with ``ctx.options["mean_correction"]``: ``"none"``, ``"tensor"`` or ``"per_unit"``)."""
    ctx.apply_preset("auto", options={"residual": "none"})  # LSUV sets every layer's scale from data
    for site in ctx.known_sites:
        if not isinstance(site.module, DEFAULT_LAYERS) or site.path in ctx.ruled:
            continue
        if site.info.role == "kernel":
            ctx.set(site, Orthogonal(), "LSUV pre-init: orthonormal (Mishkin & Matas 2016); the post step "
                    "then rescales it to unit output std")
        elif site.info.role == "bias":
            ctx.set(site, Zeros(), "LSUV pre-init: zero bias", fans=None)
    data = ctx.example_input

    mc = {"none": False, "tensor": True, "per_unit": "per_unit"}[ctx.options.get("mean_correction", "none")]

    def step(model: nn.Module) -> LSUVResult:
        return lsuv(model, data, 1.0, orthonormal=False, zero_bias=False, residual=residual, mean_correction=mc)

    why = ("LSUV on example_input: one forward pass, each Linear/Conv call rescaled to std 1 in execution "
           "order")
    if mc == "per_unit":
        why += ("; each unit's bias first set to b = −W·E[h] (its output centred over the batch), which "
                "removes a sigmoid's mean ½ from the next layer so σ(z) ≈ ½ + z/4 acts as a scaled tanh "
                "and unit std keeps χ₁ = σ_w²·E[σ'(z)²] ≈ 1 forward and backward (Pennington, Schoenholz "
                "& Ganguli 2017)")
    elif mc:
        why += "; biases shifted so each layer's output has mean 0"
    if residual:
        why += "; residual branches' last layers to 1/√L so the stream stays ≤ √2"
    ctx.add_post_step("lsuv_residual" if residual else "lsuv", step, why)


def _register_presets() -> None:
    mc = (PresetOption("mean_correction", "none", "LSUV's bias correction: 'none', 'tensor' (the whole "
                       "output's mean) or 'per_unit' (each unit's mean: b = −W·E[h], for sigmoid nets)",
                       choices=("none", "tensor", "per_unit")),)
    if "lsuv" not in PRESETS:
        register_preset("lsuv", lambda ctx: _lsuv_preset(ctx, False), needs_example_input=True, options=mc,
                        description="orthonormal pre-init, then LSUV (unit std per layer call) on example_input")
    if "lsuv_residual" not in PRESETS:
        register_preset("lsuv_residual", lambda ctx: _lsuv_preset(ctx, True), needs_example_input=True, options=mc,
                        description="LSUV with residual branches scaled to 1/√L (stream stays ≤ √2)")


_register_presets()
