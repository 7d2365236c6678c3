"""Verdicts on an inspection: rules on depth-relative rates, each with its evidence and a fix.

A deep network is judged by how its signals *change with depth*, not by fixed absolute cut-offs
(torchdiag's "max gradient < 1e-7" cannot tell a small loss from a dying signal). With L weight-layer
calls and a tolerance factor τ (default 10):

* **vanishing / exploding gradients** — the backward growth per layer ρ_g (fit of log ‖dL/dz_ℓ‖ on ℓ)
  compounds to ρ_g^(L−1), and the measured ratio ‖dL/dz₁‖/‖dL/dz_L‖ agrees: both below 1/τ is
  vanishing, both above τ exploding (Glorot & Bengio 2010; He et al. 2015, eq. 13) — provided the fitted
  rate is 3 standard errors from 1, with the error and drift of a random walk (finite-width noise:
  ``depth_trends._fit``), so the fluctuation of a correctly scaled narrow net is not a trend. A non-finite
  gradient anywhere is exploding; a gradient of exactly 0 below a non-zero last layer is vanishing
  (it fell below float range).
* **vanishing / exploding activations** — the same on std(z_ℓ): the forward rate ρ_z^(L−1) and the
  measured std(z_L)/std(z₁) both beyond τ (He et al. 2015, eq. 10); std(z) of exactly 0 after a
  non-zero first layer is vanishing, non-finite is exploding.
* **saturation** — activation calls whose saturated fraction (|φ'(z)| < 5 % max|φ'|) exceeds the
  fraction the same activation has at z ~ N(0, 1) by more than 0.2; flagged when at least a quarter of
  the activation calls are so (Glorot & Bengio 2010, §3). Measured against the activation's own
  reference, ReLU's negative half-line is not "saturation".
* **dead units** — activation calls where the fraction of units that are zero for the whole batch
  exceeds by more than 0.25 what the inputs' correlation alone explains. For a ReLU-like φ and
  pre-activations of B inputs with pairwise correlation c (the measured mean cosine over the units
  that fire for some input, so the dead units do not inflate it), a unit is zero
  for all B with probability p(c, B) = E_u[Φ(−u·√(c/(1−c)))^B], u ~ N(0, 1) (equicorrelated
  Gaussians; p → 2^−B for c = 0 and → ½ as c → 1), so deep ReLU nets whose inputs grow alike
  (Lu et al. 2019, "Dying ReLU and initialization") are not blamed twice; the 0.25 margin is > 5
  standard errors of a fraction over ≥ 64 units.
* **correlation collapse** — the mean cosine c_L between different inputs' representations at the
  last layer is ≥ 0.99 and 1 − c_L < 1/(τ·L²). At the edge of chaos 1 − c_ℓ shrinks only
  polynomially, ~1/ℓ² (ReLU with He init: 1 − c_ℓ ≈ 9π²/(2ℓ²) in the mean-field limit, faster by a
  modest factor at finite width, Hanin & Rolnick 2018); in the ordered phase it shrinks exponentially,
  1 − c_ℓ ∝ exp(−ℓ/ξ_c), and networks deeper than ~6ξ_c do not train (Schoenholz et al. 2017). The
  fitted ξ_c is reported as evidence.

If nothing fires the verdict is ``healthy``. Unhealthy findings carry ``fix``, the whole-model plan
of :func:`recommended_preset`: ``initlab.plan(model, preset="auto", example_input=x)``, except for
saturation or vanishing signals in a net whose activations are mostly sigmoid-like. There no variance
scale works (σ's mean ½ feeds the next layer a per-unit offset W·½ that saturates it, while σ' ≤ ¼
shrinks the gradient), so the fix is ``preset="lsuv"`` with ``mean_correction="per_unit"``: each unit's
bias becomes b = −W·E[h], which removes the mean shift so σ(z) ≈ ½ + z/4 behaves as a scaled tanh near
0, and unit output std then sets σ_w² with χ₁ = σ_w²·E[σ'(z)²] ≈ 1 (Pennington, Schoenholz & Ganguli
2017, "Resurrecting the sigmoid"). Measured on the 20-layer sigmoid MLP with N(0, 1) weights: auto
(Glorot) leaves ‖dL/dz₁‖/‖dL/dz_L‖ ≈ 1e-8, LSUV with whole-tensor mean correction ≈ 1e-8, the
per-unit plan ≈ 1.4 (healthy).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import erfc as _erfc

from .depth_trends import main_stream
from .residual_findings import (
    RESIDUAL_KINDS,
    RESIDUAL_OPTIONS,
    branch_label,
    collapse_threshold,
    residual_option_missing,
    residual_verdicts,
)

__all__ = [
    "FINDING_KINDS",
    "RESIDUAL_KINDS",
    "RESIDUAL_OPTIONS",
    "SIGMOID_FAMILY",
    "Finding",
    "collapse_threshold",
    "expected_dead",
    "judge",
    "recommended_preset",
    "residual_option_missing",
]

FINDING_KINDS = (
    "healthy",
    "vanishing_gradients",
    "exploding_gradients",
    "vanishing_activations",
    "exploding_activations",
    "saturation",
    "dead_units",
    "correlation_collapse",
    "residual_growth",
    "token_collapse",
)

SATURATION_EXCESS = 0.2
#: Standard errors by which a per-layer growth rate must differ from 1 before the vanishing/exploding
#: rules consider it: 3 keeps finite-width fluctuation of a correctly scaled deep net (He-initialized
#: ReLU, depth 100–200 at width 64) from being called a trend, while a wrong scale (default init, ×0.41
#: per layer) stands ~30 errors out.
SIGNIFICANCE = 3.0
_SIGMOID_NOTE = (
    " A deep sigmoid net has no healthy variance scale alone: σ's mean ½ reaches the next layer as a"
    " per-unit offset W·½ (saturation) and σ' ≤ ¼ shrinks the gradient; the fix centres every unit"
    " (b = −W·E[h]) and rescales to unit std (LSUV, per-unit mean correction; Pennington et al. 2017)."
)
#: Activation names whose mean is not 0 and whose slope at 0 is ¼-like (the sigmoid family).
SIGMOID_FAMILY = ("sigmoid", "hardsigmoid")
#: Findings a mean-corrected plan addresses in a sigmoid-family net.
_MEAN_SHIFT_KINDS = ("saturation", "vanishing_gradients", "vanishing_activations", "correlation_collapse")
SATURATION_SHARE = 0.25
DEAD_EXCESS = 0.25
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(120)
_GH_W = _GH_W / _GH_W.sum()
COLLAPSE_COSINE = 0.99


@dataclass
class Finding:
    """One verdict: ``kind`` (see :data:`FINDING_KINDS`), the layers concerned, the evidence
    (numbers), a one-line message and the recommended fix (an :class:`initlab.plan.Plan`, or None
    for ``healthy`` or when no plan could be made — then ``evidence['fix_error']`` says why)."""

    kind: str
    layers: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    fix: Any = None

    @property
    def healthy(self) -> bool:
        return self.kind == "healthy"

    def __repr__(self) -> str:
        shown = ", ".join(self.layers[:4]) + (f", … ({len(self.layers)})" if len(self.layers) > 4 else "")
        fix = "None" if self.fix is None else f"<Plan: {len(getattr(self.fix, 'entries', []) or [])} entries>"
        return f"Finding({self.kind!r}, layers=[{shown}], evidence={self.evidence!r}, fix={fix})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "layers": list(self.layers),
            "evidence": _jsonable(self.evidence),
            "message": self.message,
            "fix": _plan_dict(self.fix),
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _plan_dict(plan: Any) -> Any:
    if plan is None or isinstance(plan, dict):
        return plan
    return _jsonable(plan.as_dict())


def _cum(rate: float | None, depth: int) -> float | None:
    if rate is None or depth < 2:
        return None
    try:
        return rate ** (depth - 1)
    except OverflowError:
        return math.inf


def _significant(rate: float | None, se: float | None) -> bool:
    """The fitted slope differs from 0 by more than :data:`SIGNIFICANCE` standard errors (the error of
    a random walk's slope where layers add independent noise: see ``depth_trends._fit``)."""
    if rate is None or rate <= 0:
        return False
    return abs(math.log(rate)) > SIGNIFICANCE * (se or 0.0)


def _signal_findings(
    signal: str,
    names: list[str],
    evidence: dict[str, Any],
    nonfinite: list[int],
    zero: list[int],
    cum: float | None,
    change: float | None,
    rate: float | None,
    rate_se: float | None,
    tau: float,
    *,
    nonfinite_msg: Callable[[int], str],
    zero_msg: Callable[[int], str],
    trend_msg: Callable[[str], str],
) -> list[Finding]:
    """The vanishing / exploding rule for one signal (``"gradients"`` or ``"activations"``).

    Non-finite values at any layer (1-based depths in ``nonfinite``) are exploding; else values of
    exactly 0 (``zero``) are vanishing; else, when the fitted per-layer rate is significant
    (:func:`_significant`), the compounded rate ``cum`` = ρ^(L−1) and the measured end-to-end
    ``change`` both below 1/τ are vanishing, both above τ exploding (He et al. 2015, eqs. 10, 13).
    Messages are built only for the finding that fires: ``nonfinite_msg`` / ``zero_msg`` get the
    number of layers, ``trend_msg`` the verb ``"shrinks"`` or ``"grows"``.
    """
    if nonfinite:
        return [
            Finding(
                f"exploding_{signal}",
                [names[d - 1] for d in nonfinite],
                {**evidence, "nonfinite_at_depth": nonfinite},
                nonfinite_msg(len(nonfinite)),
            )
        ]
    if zero:
        return [
            Finding(
                f"vanishing_{signal}",
                [names[d - 1] for d in zero],
                {**evidence, "zero_at_depth": zero},
                zero_msg(len(zero)),
            )
        ]
    if cum is not None and change is not None and _significant(rate, rate_se):
        if cum < 1 / tau and change < 1 / tau:
            return [Finding(f"vanishing_{signal}", _span(names), evidence, trend_msg("shrinks"))]
        if cum > tau and change > tau:
            return [Finding(f"exploding_{signal}", _span(names), evidence, trend_msg("grows"))]
    return []


def judge(
    report: Any, *, model: Any = None, x: Any = None, recommend: bool = True, tolerance: float = 10.0
) -> list[Finding]:
    """Apply the rules of this module to a report; return the findings (``[healthy]`` if none fire)."""
    tr = report.trends
    calls = report.calls
    layers = [c for c in calls if c.kind == "layer"]
    residual = list(getattr(report, "residual", None) or [])
    on_stream = getattr(tr, "axis", "layers") == "residual stream"
    names = [branch_label(r) for r in main_stream(residual)] if on_stream else [_name(c) for c in layers]
    unit = "residual adds" if on_stream else "layers"
    out: list[Finding] = []
    tau = float(tolerance)
    L = tr.depth

    # ---- gradients ----
    gcum = _cum(tr.grad_rate, L)
    firsts = main_stream(residual) if on_stream else layers
    ev_g = {
        "depth": L,
        "dz_ratio": tr.dz_ratio,
        "grad_rate_per_layer": tr.grad_rate,
        "grad_rate_over_depth": gcum,
        "grad_norm_first": firsts[0].grad_norm if firsts else None,
        "grad_norm_last": firsts[-1].grad_norm if firsts else None,
    }
    if on_stream:
        ev_g["axis"] = "residual stream"
    out += _signal_findings(
        "gradients",
        names,
        ev_g,
        tr.nonfinite_grad_layers,
        tr.zero_grad_layers,
        gcum,
        tr.dz_ratio,
        tr.grad_rate,
        tr.grad_rate_se,
        tau,
        nonfinite_msg=lambda n: f"‖dL/dz‖ is not finite at {n} of {L} {unit}: the backward signal overflows.",
        zero_msg=lambda n: (
            f"‖dL/dz‖ is exactly 0 at {n} of {L} {unit} while ‖dL/dz_L‖ = "
            f"{ev_g['grad_norm_last']:.3g}: the backward signal vanished below float range."
        ),
        trend_msg=lambda verb: (
            f"‖dL/dz‖ {verb} ×{tr.grad_rate:.3g} per {unit[:-1]} on its way back: "
            f"‖dL/dz₁‖/‖dL/dz_L‖ = {tr.dz_ratio:.3g} over {L} {unit}."
        ),
    )

    # ---- activations ----
    zcum = _cum(tr.z_std_rate, L)
    ev_z = {
        "depth": L,
        "z_std_first": (firsts[0].rms_out if on_stream else firsts[0].z_std) if firsts else None,
        "z_std_last": (firsts[-1].rms_out if on_stream else firsts[-1].z_std) if firsts else None,
        "z_std_change": tr.z_std_change,
        "z_std_rate_per_layer": tr.z_std_rate,
        "z_std_rate_over_depth": zcum,
    }
    if on_stream:
        ev_z["axis"] = "residual stream (RMS after each add)"
    out += _signal_findings(
        "activations",
        names,
        ev_z,
        tr.nonfinite_act_layers,
        tr.zero_act_layers,
        zcum,
        tr.z_std_change,
        tr.z_std_rate,
        tr.z_std_rate_se,
        tau,
        nonfinite_msg=lambda n: f"std(z) is not finite at {n} of {L} {unit}: the forward signal overflows.",
        zero_msg=lambda n: (
            f"std(z) is exactly 0 at {n} of {L} {unit} (from {ev_z['z_std_first']:.3g} "
            f"at the first): the forward signal vanished below float range."
        ),
        trend_msg=lambda verb: (
            f"{'the RMS of the residual stream' if on_stream else 'std(z)'} {verb} ×{tr.z_std_rate:.3g} per "
            f"{unit[:-1]}: {ev_z['z_std_first']:.3g} → {ev_z['z_std_last']:.3g} over {L} {unit}."
        ),
    )

    # ---- saturation ----
    acts = [
        c
        for c in calls
        if c.kind == "activation" and c.saturation is not None and c.saturation_ref is not None
    ]
    sat = [c for c in acts if c.saturation - c.saturation_ref > SATURATION_EXCESS]
    if acts and sat and len(sat) >= SATURATION_SHARE * len(acts):
        mean_sat = sum(c.saturation for c in sat) / len(sat)
        out.append(
            Finding(
                "saturation",
                [_name(c) for c in sat],
                {
                    "activation": sat[0].activation,
                    "saturated_calls": len(sat),
                    "activation_calls": len(acts),
                    "mean_saturation": mean_sat,
                    "reference_at_unit_variance": sat[0].saturation_ref,
                    "max_saturation": max(c.saturation for c in sat),
                },
                f"{len(sat)} of {len(acts)} activation calls have |φ'(z)| < 5% of its maximum for "
                f"{mean_sat:.0%} of units on average (at z ~ N(0,1): {sat[0].saturation_ref:.1%})."
                + (
                    _SIGMOID_NOTE
                    if (sat[0].activation or "").split("(")[0] in ("sigmoid", "hardsigmoid") and L > 5
                    else ""
                ),
            )
        )

    # ---- dead units ----
    batch = int(report.meta.get("batch_size") or 0)
    dead = []
    for c in calls:
        if c.kind == "activation" and c.dead is not None and c.dead > DEAD_EXCESS:
            expected = expected_dead(c.activation, c.live_cosine, batch)
            if c.dead - expected > DEAD_EXCESS:
                dead.append((c, expected))
    if dead:
        worst = max(dead, key=lambda ce: ce[0].dead - ce[1])
        out.append(
            Finding(
                "dead_units",
                [_name(c) for c, _ in dead],
                {
                    "calls": len(dead),
                    "max_dead_fraction": max(c.dead for c, _ in dead),
                    "worst_layer": _name(worst[0]),
                    "worst_dead": worst[0].dead,
                    "worst_expected_from_correlation": worst[1],
                    "excess_threshold": DEAD_EXCESS,
                },
                f"{len(dead)} activation calls have more units zero for the whole batch than their inputs' "
                f"correlation explains (worst {_name(worst[0])}: {worst[0].dead:.0%} vs {worst[1]:.0%} expected).",
            )
        )

    # ---- correlation collapse (layer chains; a transformer's tokens: token_collapse below) ----
    if (
        not on_stream
        and tr.cosine_first is not None
        and tr.cosine_last is not None
        and L >= 2
        and tr.cosine_last >= COLLAPSE_COSINE
    ):
        gap = 1.0 - tr.cosine_last
        bound = 1.0 / (tau * L * L)
        xi = tr.collapse_depth
        if gap < bound:
            out.append(
                Finding(
                    "correlation_collapse",
                    _span(names),
                    {
                        "cosine_first": tr.cosine_first,
                        "cosine_last": tr.cosine_last,
                        "one_minus_cosine_last": gap,
                        "polynomial_bound": bound,
                        "depth_scale": xi,
                        "depth": L,
                        "collapse_rate_per_layer": tr.collapse_rate,
                    },
                    f"different inputs become the same vector: mean cosine {tr.cosine_first:.3f} → "
                    f"{tr.cosine_last:.6f} over {L} layers"
                    + (
                        f" (depth scale ξ_c = {xi:.3g}; trainable depth ≈ 6ξ_c = {6 * xi:.3g})."
                        if xi is not None and math.isfinite(xi)
                        else "."
                    ),
                )
            )

    out += [Finding(*v) for v in residual_verdicts(residual, tau)]

    if not out:
        return [
            Finding(
                "healthy",
                [],
                {
                    "depth": L,
                    "dz_ratio": tr.dz_ratio,
                    "grad_rate_per_layer": tr.grad_rate,
                    "z_std_rate_per_layer": tr.z_std_rate,
                    "tolerance": tau,
                },
                f"signals stay within ×{tau:g} across {L} layers forward and backward; no saturation, dead units or collapse.",
            )
        ]
    if recommend and model is not None:
        preset, options = recommended_preset(calls, [f.kind for f in out], out)
        missing = residual_option_missing(preset, options)
        if missing:
            options = {k: v for k, v in options.items() if k != "residual"}
        plan, err = _recommend(model, x, preset, options)
        for f in out:
            if missing and f.kind in RESIDUAL_KINDS:
                f.evidence["fix_error"] = missing  # the plan without the option would not address it
                continue
            f.fix = plan
            if err:
                f.evidence["fix_error"] = err
    return out


def recommended_preset(
    calls: Any, kinds: list[str], findings: list[Finding] | None = None
) -> tuple[str, dict[str, Any]]:
    """The preset (and its options) that fixes the findings ``kinds`` of a report with ``calls``.

    ``("lsuv", {"mean_correction": "per_unit"})`` when a finding is saturation, vanishing signals or
    correlation collapse and at least half of the activation calls are sigmoid-like
    (:data:`SIGMOID_FAMILY`) — the mean shift of σ is the cause, see the module docstring; otherwise
    ``("auto", {})``, with ``{"residual": option}`` when ``findings`` hold a residual-stream finding
    (:data:`RESIDUAL_KINDS`): the option its evidence names (``residual_option``; ``"deepnet"`` wins
    when several findings disagree, as it is the one for post-LN streams)."""
    acts = [(c.activation or "").split("(")[0] for c in calls if c.kind == "activation"]
    sig = sum(a in SIGMOID_FAMILY for a in acts)
    if acts and 2 * sig >= len(acts) and any(k in _MEAN_SHIFT_KINDS for k in kinds):
        return "lsuv", {"mean_correction": "per_unit"}
    wanted = [f.evidence.get("residual_option") for f in findings or () if f.kind in RESIDUAL_KINDS]
    wanted = [w for w in wanted if w in RESIDUAL_OPTIONS]
    if wanted:
        return "auto", {"residual": "deepnet" if "deepnet" in wanted else wanted[0]}
    return "auto", {}


def _recommend(model: Any, x: Any, preset: str = "auto", options: dict[str, Any] | None = None
               ) -> tuple[Any, str | None]:
    """The whole-model plan ``initlab.plan(model, preset=preset, example_input=x, options=options)``."""
    try:
        from ..plan.build import plan as make_plan
    except ImportError as e:
        return None, f"initlab.plan is unavailable: {e}"
    try:
        return make_plan(model, preset=preset, example_input=x, options=options or None), None
    except (ValueError, TypeError, RuntimeError) as e:
        return None, f"initlab.plan(preset={preset!r}, options={options or {}!r}) failed: {e}"


def expected_dead(act: str | None, cosine: float | None, batch: int) -> float:
    """p(c, B): probability that a unit of a ReLU-like activation is zero for all B inputs whose
    pre-activations are equicorrelated Gaussians with correlation c (Gauss–Hermite, 120 nodes)."""
    name = (act or "").split("(")[0]
    if name not in ("relu", "relu6") or batch < 1:
        return 0.0
    c = 0.0 if cosine is None or not math.isfinite(cosine) else min(max(cosine, 0.0), 1.0)
    if c >= 1.0:
        return 0.5
    if c == 0.0:
        return 0.5**batch
    k = math.sqrt(c / (1.0 - c))
    cdf = 0.5 * _erfc(_GH_X * (k / math.sqrt(2.0)))
    return float((_GH_W * cdf**batch).sum())


def _name(c: Any) -> str:
    return c.path if c.call == 1 else f"{c.path}#{c.call}"


def _span(names: list[str]) -> list[str]:
    return list(names)
