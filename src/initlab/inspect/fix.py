"""``fix``: inspect, plan the recommended initialization, and show (or apply) its measured effect.

``fix(model, x)`` is a dry run: it inspects the model, makes the recommended whole-model plan
(:func:`initlab.inspect.findings.recommended_preset`: ``initlab.plan(model, preset="auto", example_input=x)``, or
for saturation / vanishing signals in a sigmoid net ``preset="lsuv"`` with per-unit mean correction,
b = −W·E[h] — Pennington, Schoenholz & Ganguli 2017), applies it *temporarily*, inspects again and
restores the model exactly (parameters, buffers, ``.grad``, modes, RNG — as :func:`initlab.inspect`),
so the "predicted effect" is measured on the user's own model and batch, not extrapolated.
``fix(model, x, apply=True)`` applies the plan for good and re-inspects: before/after side by side.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .discovery import _discover
from .report import Report
from .run import _devices, inspect
from .snapshot import _Snapshot

__all__ = ["DiffRow", "FixResult", "fix"]


@dataclass
class DiffRow:
    """One planned parameter: its current std and the planned initializer and std."""

    path: str
    shape: tuple[int, ...]
    current_std: float | None
    planned_std: float | None
    initializer: str
    why: str

    @property
    def factor(self) -> float | None:
        """planned std / current std (None when either is unknown or the current std is 0)."""
        if self.current_std is None or self.planned_std is None or self.current_std == 0:
            return None
        return self.planned_std / self.current_std


@dataclass
class FixResult:
    """``before`` and ``after`` reports, the ``plan``, its ``diff`` and whether it was ``applied``.

    With ``applied=False`` the ``after`` report was measured with the plan applied temporarily and
    the model then restored. ``note`` says where the plan is not the recommended one (the recommended
    residual option is not available in this initlab's ``auto``).
    """

    before: Report
    after: Report
    plan: Any
    diff: list[DiffRow] = field(default_factory=list)
    applied: bool = False
    note: str | None = None

    @property
    def fixed(self) -> bool:
        """The model was unhealthy before and is healthy after."""
        return (not self.before.healthy) and self.after.healthy

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.table import Table

        opts = getattr(self.plan, "options", None) or {}
        label = repr(getattr(self.plan, "preset", "?")) + (
            " (" + ", ".join(f"{k}={v!r}" for k, v in opts.items()) + ")" if opts else ""
        )
        d = Table(title=f"Plan diff (preset {label})", header_style="bold")
        for col in ("parameter", "shape", "current std", "planned std", "×", "initializer", "why"):
            d.add_column(col, justify="right" if col in ("current std", "planned std", "×") else "left")
        for r in self.diff:
            d.add_row(
                r.path,
                "×".join(map(str, r.shape)),
                _f(r.current_std),
                _f(r.planned_std),
                _f(r.factor),
                r.initializer,
                r.why,
            )
        yield d
        for step in getattr(self.plan, "post_steps", None) or []:
            yield f"then {step.name}: {step.why}"
        t = Table(
            title="Before / after"
            + (" (applied)" if self.applied else " (dry run: measured, then restored)"),
            header_style="bold",
        )
        for col in ("", "before", "after"):
            t.add_column(col, justify="left" if not col else "right")
        b, a = self.before.trends, self.after.trends
        t.add_row("verdict", ", ".join(self.before.verdict), ", ".join(self.after.verdict))
        t.add_row("‖dL/dz₁‖/‖dL/dz_L‖", _f(b.dz_ratio), _f(a.dz_ratio))
        unit, z = ("residual add", "stream RMS") if b.axis == "residual stream" else ("layer", "std(z)")
        t.add_row(f"‖dL/dz‖ backward rate / {unit}", _f(b.grad_rate), _f(a.grad_rate))
        t.add_row(f"{z} rate / {unit}", _f(b.z_std_rate), _f(a.z_std_rate))
        t.add_row(f"{z} last / first", _f(b.z_std_change), _f(a.z_std_change))
        t.add_row("cosine last layer", _f(b.cosine_last), _f(a.cosine_last))
        if self.before.residual or self.after.residual:
            t.add_row("residual stream growth", _f(b.residual_growth), _f(a.residual_growth))
            t.add_row("token cosine after the last block", _f(b.token_cosine_last), _f(a.token_cosine_last))
        if self.before.attention or self.after.attention:
            t.add_row("attention entropy / log(keys), mean", _f(_mean_norm(self.before)), _f(_mean_norm(self.after)))
        sat_b = [c.saturation for c in self.before.calls if c.saturation is not None]
        sat_a = [c.saturation for c in self.after.calls if c.saturation is not None]
        t.add_row(
            "mean saturation",
            _f(sum(sat_b) / len(sat_b)) if sat_b else "–",
            _f(sum(sat_a) / len(sat_a)) if sat_a else "–",
        )
        yield t
        if self.note:
            yield f"[yellow]note[/yellow]: {self.note}"
        yield ("[green]fixed[/green]" if self.fixed else "[yellow]not fixed[/yellow]") + (
            "" if self.applied else " — run initlab.fix(model, x, apply=True) to apply"
        )

    def __str__(self) -> str:
        from rich.console import Console

        buf = io.StringIO()
        Console(file=buf, width=180, force_terminal=False, color_system=None).print(self)
        return buf.getvalue()


def _mean_norm(r: Report) -> float | None:
    vals = [v for a in r.attention for v in a.entropy_normalized if v is not None]
    return sum(vals) / len(vals) if vals else None


def _f(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return f"{v:.3g}"


def fix(
    model: Any,
    x: Any,
    apply: bool = False,
    *,
    preset: str | None = None,
    rules: Mapping[Any, Any] | None = None,
    seed: int = 0,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    target: Any = None,
    tolerance: float = 10.0,
) -> FixResult:
    """Inspect ``model`` on ``x``, plan ``initlab.plan(model, preset=preset, example_input=x, rules=rules)``,
    and measure the plan's effect by inspecting again with it applied.

    ``preset=None`` (default) takes the recommendation for the findings
    (:func:`initlab.inspect.findings.recommended_preset`): ``"auto"``, or — when a net whose activations are
    mostly sigmoid-like saturates or loses its signal — ``"lsuv"`` with
    ``options={"mean_correction": "per_unit"}``. No variance scale alone can fix such a net: σ's mean ½
    feeds each unit of the next layer an offset W·½ (saturation) while σ' ≤ ¼ shrinks the gradient.
    Centring every unit (b = −W·E[h]) makes σ(z) ≈ ½ + z/4 a scaled tanh near 0, and unit output std
    then gives χ₁ = σ_w²·E[σ'(z)²] ≈ 1 (Pennington, Schoenholz & Ganguli 2017); the plan's ``why``
    says so. A named ``preset`` is used as given, with its default options.

    ``apply=False`` (default) is a dry run: the plan is applied, the model re-inspected and then
    restored exactly. ``apply=True`` keeps the new initialization (``Plan.apply(seed=seed)``).
    ``loss_fn``, ``target`` and ``tolerance`` are passed to :func:`initlab.inspect`.
    """
    from ..plan.build import plan as make_plan
    from .findings import RESIDUAL_KINDS, recommended_preset, residual_option_missing

    if not isinstance(apply, bool):
        raise TypeError(f"fix: apply must be True or False, got {apply!r}.")
    if preset is not None and not isinstance(preset, str):
        raise TypeError(f"fix: preset must be a preset name or None (the recommendation), got {preset!r}.")
    kw: dict[str, Any] = {"loss_fn": loss_fn, "target": target, "tolerance": tolerance, "recommend": False}
    before = inspect(model, x, **kw)
    options: dict[str, Any] = {}
    note = None
    if preset is None:
        preset, options = recommended_preset(before.calls, [f.kind for f in before.findings], before.findings)
        note = residual_option_missing(preset, options)
        if note:
            options = {k: v for k, v in options.items() if k != "residual"}
            note += f"; planned {preset!r} without it"
    p = make_plan(model, preset=preset, example_input=x, rules=rules, options=options or None)
    diff = _diff(p, before)
    # Applied for the measurement and, without apply=True, undone; with apply=True undone only if the
    # re-inspection fails, so a failing fix never leaves the model half-way.
    snap = _Snapshot(model, [(q, m) for q, m, _ in _discover(model)], _devices(model.parameters(), x))
    try:
        p.apply(seed=seed)
        after = inspect(model, x, **kw)
    except BaseException:
        snap.restore()
        raise
    if not apply:
        snap.restore()
    for f in before.findings:
        if not f.healthy and not (note and f.kind in RESIDUAL_KINDS):
            f.fix = p
    return FixResult(before=before, after=after, plan=p, diff=diff, applied=apply, note=note)


def _diff(p: Any, before: Report) -> list[DiffRow]:
    params = getattr(p, "_params", {})
    rows = []
    for e in p.entries:
        if getattr(e, "initializer", None) is None:
            continue
        t = params.get(getattr(e, "param_path", e.path))
        cur = None
        if isinstance(t, torch.Tensor) and not t.is_meta and t.numel() > 1:
            view = t.detach() if getattr(e, "index", None) is None else t.detach()[e.index]
            cur = float(view.to(torch.float64).std()) if view.numel() > 1 else None
        rows.append(
            DiffRow(
                path=e.path,
                shape=tuple(e.shape),
                current_std=cur,
                planned_std=e.std,
                initializer=e.initializer_label,
                why=e.why,
            )
        )
    return rows
