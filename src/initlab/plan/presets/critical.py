"""The ``critical`` and ``critical_orthogonal`` presets: ``auto``, then every Linear/Conv layer followed by φ
gets :class:`~initlab.theory.critical_init.Critical` (σ_w² with χ₁ = 1) for its weight and bias, where φ
has a usable critical point (σ_b² = 0.05; 0 for ReLU-like); elsewhere auto's choice stays, with a note."""

from __future__ import annotations

import math

from ... import theory
from ...theory.critical_init import Critical
from ..registry import PRESETS, register_preset

_PRESET_SIGMA_B2 = 0.05


def _critical_preset(ctx, orthogonal: bool) -> None:
    """Start from ``auto``; then every Linear/Conv layer followed by φ gets ``Critical(φ)`` for weight and bias."""
    from torch import nn

    ctx.apply_preset("auto", options={"residual": "none"})  # its Critical kernels replace auto's anyway
    by_module: dict[int, list] = {}
    for site in ctx.known_sites:
        by_module.setdefault(id(site.module), []).append(site)
    for site in ctx.known_sites:
        if site.info.role != "kernel" or not isinstance(site.module, (nn.Linear, nn.modules.conv._ConvNd)):
            continue
        if site.path in ctx.ruled:
            continue
        follow = ctx.activation_after(site)
        act = follow.activation
        sb = 0.0 if act.family in ("relu", "linear") else _PRESET_SIGMA_B2
        try:
            point = theory.critical_point(act, sb)
        except ValueError as err:
            ctx.notes.append(f"{site.path}: kept auto's choice — {err}")
            continue
        if not point.attracts(1.0):
            ctx.notes.append(
                f"{site.path}: kept auto's choice — {act.label}'s critical point at σ_b²={sb:g} has q* = "
                f"{point.q_star:.3g}, which unit-variance inputs do not reach (basin [{point.q_min:.3g}, "
                f"{point.q_max:.3g}])")
            continue
        init = Critical(act, sigma_b2=sb, sigma_w2=point.sigma_w2, orthogonal=orthogonal)
        kind = "scaled orthogonal (dynamical isometry, Pennington et al. 2017)" if orthogonal else "Gaussian"
        at = "every q" if math.isnan(point.q_star) else f"q* = {point.q_star:.3g}"
        ctx.set(site, init, f"edge of chaos for {act.label} ({follow.via}): σ_w² = {point.sigma_w2:.4g} makes "
                f"χ₁ = 1 at {at} with σ_b² = {sb:g} (Poole 2016, Schoenholz 2017); {kind}")
        for other in by_module.get(id(site.module), []):
            if other.info.role == "bias" and other.path not in ctx.ruled:
                ctx.set(other, init, f"bias N(0, σ_b² = {sb:g}), the σ_b² the critical σ_w² was solved for",
                        fans=None)


def _register_presets() -> None:
    if "critical" not in PRESETS:
        register_preset("critical", lambda ctx: _critical_preset(ctx, False),
                        description="edge of chaos: σ_w² with χ₁ = 1 for the activation after each layer "
                                    "(σ_b² = 0.05; 0 for ReLU-like), Gaussian")
    if "critical_orthogonal" not in PRESETS:
        register_preset("critical_orthogonal", lambda ctx: _critical_preset(ctx, True),
                        description="edge of chaos with scaled orthogonal weights (dynamical isometry)")


_register_presets()
