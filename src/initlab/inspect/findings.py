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

__all__ = [
    "FINDING_KINDS",
    "RESIDUAL_KINDS",
    "RESIDUAL_OPTIONS",
    "SIGMOID_FAMILY",
    "Finding",
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
#: Findings a residual-branch scaling heals (``initlab.plan(model, "auto", options={"residual": ...})``).
RESIDUAL_KINDS = ("residual_growth", "token_collapse")
#: The residual options of the transformer-aware ``auto`` preset (issue 14).
RESIDUAL_OPTIONS = ("gpt2", "deepnet", "tfixup", "measured", "none")

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
    names = [_branch(r) for r in main_stream(residual)] if on_stream else [_name(c) for c in layers]
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

    out += _residual_findings(residual, tau)

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


def residual_option_missing(preset: str, options: dict[str, Any]) -> str | None:
    """Why ``initlab.plan(model, preset, options=options)`` cannot take ``options["residual"]`` here (the
    installed ``auto`` preset has no such option or value), or None when it can or none is asked."""
    want = options.get("residual")
    if want is None:
        return None
    try:
        from ..plan.presets import preset_options

        declared = preset_options(preset).get("residual")
    except (ImportError, ValueError) as e:
        return f"initlab.plan(preset={preset!r}) is unavailable: {e}"
    if declared is None:
        return (f"the recommended fix is initlab.plan(model, {preset!r}, example_input=x, options={{'residual': "
                f"{want!r}}}), but this initlab's {preset!r} preset has no 'residual' option (the transformer-aware "
                f"auto of issue 14); a plan without it would leave the residual branches unscaled")
    try:
        declared.check(want)
    except ValueError as e:
        return f"the {preset!r} preset does not accept the recommended residual option: {e}"
    return None


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


def _branch(r: Any) -> str:
    """A residual add's label: the module of its branch's output projection."""
    return r.out_proj.rpartition(".")[0] or r.out_proj


def collapse_threshold(tokens: int) -> float:
    """The mean token cosine c* = 1 − 1/(S − 1) above which S tokens are collapsed (see
    :func:`_residual_findings`)."""
    return 1.0 - 1.0 / (tokens - 1)


def _residual_findings(residual: list[Any], tau: float) -> list[Finding]:
    """``residual_growth`` and ``token_collapse``, judged per traced residual stream (one finding of each
    kind at most, for the streams that show it).

    **Residual growth.** Along a stream x_k = x_{k−1} + f_k whose branches are uncorrelated with it (at
    init the branch ends in a projection with independent zero-mean weights),
    E‖x_N‖² = E‖x_0‖² + Σ_k E‖f_k‖², so G² − 1 = Σ_k Δ_k with G = RMS(x_N)/RMS(x_0) and
    Δ_k = (ms(x_k) − ms(x_{k−1}))/ms(x_0) (measured, cross terms included). A residual-unaware fan-in
    init of a pre-LN stack feeds every branch a normalized input, so each Δ_k is one constant c at any
    depth: G = √(1 + cN), the √L growth. Scaling each branch's output projection by 1/√N (GPT-2,
    Megatron: std/√(2L)) makes Δ_k = c/N: G = √(1 + c) at any depth. The rule compares the accumulated
    variance A = G² − 1 with the tolerance, as the other rules compare a change over the whole depth
    with τ: it fires when A > τ (G > √(1 + τ) = 3.32 at τ = 10) **and** the growth is spread along the
    stream — no single add brings more than half of A (one exploding branch is not √L growth). A
    residual-unaware init reaches it at N > τ/c branches (measured c ≈ 0.27 on GPT-2 with fan-in
    weights and N(0, 1) embeddings: from ~40 branches, L ≈ 20 blocks; c ≈ 2.5 with N(0, 0.02) weights
    and HF's 0.02 embeddings: from 4 branches), a 1/√N-scaled one only if a single branch out-weighs
    the stream's input by c > τ. Post-LN streams are renormalized after every add and are left out
    (their failure is token collapse). The evidence gives c = A/N and the growth 1/√N scaling would
    leave, √(1 + A/N) (cross terms neglected).

    **Token collapse** (Dong, Cordonnier & Loukas 2021: without the skip, self-attention drives the
    tokens of a sequence to one vector). For S unit vectors with pairwise cosine c the Gram matrix has
    eigenvalues 1 + (S − 1)c (the common direction) and 1 − c (S − 1 times), so the directions other
    than the common one hold a share (S − 1)(1 − c)/S of the tokens' energy. The tokens are collapsed
    when all those directions together hold less than one token's share, 1/S: c > c* = 1 − 1/(S − 1)
    (:func:`collapse_threshold`; 0.857 at S = 8, 0.968 at S = 32, 0.992 at S = 128). The mean cosine is
    averaged over the batch's sequences. Fires for a stream whose mean token cosine after its last add
    is ≥ c* while before its first add it was below c* — the collapse happened along the stream, not in
    the input (a sequence of one repeated token). Sequences of fewer than 4 tokens are not judged.

    **The residual option** each recommends (``initlab.plan(model, "auto", example_input=x,
    options={"residual": option})``): for a post-LN stream ``"deepnet"`` (Wang et al. 2022, β on the
    value, output and FFN projections; measured on a 12–24-block BERT with fan-in weights: the last
    token cosine 0.999–1.000 → 0.34, the model's own init 0.30–0.33, ``"gpt2"`` 0.42); for a pre-LN (or
    post-activation) stream ``"gpt2"`` (1/√N) when √(1 + A/N) ≤ √(1 + τ), i.e. scaling heals it, else
    ``"measured"`` (each branch brought to RMS(skip)/√N in a forward pass: growth ≤ √e at any depth).
    """
    by: dict[int, list[Any]] = {}
    for r in residual:
        by.setdefault(r.stream, []).append(r)
    growth_hits: list[dict[str, Any]] = []
    collapse_hits: list[dict[str, Any]] = []
    for rows in by.values():
        n = len(rows)
        name, placement = rows[0].stream_name, rows[0].placement
        g = rows[-1].growth
        if n >= 2 and placement != "post" and g is not None and math.isfinite(g):
            acc = g * g - 1.0
            prev = [1.0] + [r.growth ** 2 for r in rows[:-1]]
            steps = [r.growth ** 2 - p for r, p in zip(rows, prev, strict=True)]
            if acc > tau and max(steps) <= acc / 2:
                per = acc / n
                after = math.sqrt(1.0 + per)
                option = "gpt2" if per <= tau else "measured"
                growth_hits.append({
                    "stream": name, "placement": placement, "branches": n, "growth": g,
                    "accumulated_variance": acc, "per_branch_variance": per,
                    "largest_step": max(steps), "unaware_reference": math.sqrt(1.0 + n),
                    "threshold_growth": math.sqrt(1.0 + tau), "growth_after_gpt2_scaling": after,
                    "residual_option": option, "rows": rows,
                })
        tokens = rows[-1].tokens
        c_in, c_out = rows[0].token_cosine_in, rows[-1].token_cosine
        if tokens is not None and tokens >= 4 and c_in is not None and c_out is not None:
            cstar = collapse_threshold(tokens)
            if c_out >= cstar > c_in:
                collapse_hits.append({
                    "stream": name, "placement": placement, "tokens": tokens, "token_cosine_in": c_in,
                    "token_cosine_last": c_out, "threshold": cstar,
                    "residual_option": "deepnet" if placement == "post" else "gpt2", "rows": rows,
                })
    out: list[Finding] = []
    if growth_hits:
        worst = max(growth_hits, key=lambda h: h["growth"])
        option = "measured" if any(h["residual_option"] == "measured" for h in growth_hits) else "gpt2"
        why = (
            "1/√N on every branch's output projection leaves √(1 + A/N) = "
            f"{worst['growth_after_gpt2_scaling']:.3g} ≤ √(1 + τ)"
            if option == "gpt2"
            else "a branch out-weighs the stream's input by more than τ, so 1/√N alone would not bound it; "
            "'measured' brings each branch to RMS(skip)/√N in a forward pass (growth ≤ √e at any depth)"
        )
        out.append(Finding(
            "residual_growth",
            [_branch(r) for h in growth_hits for r in h["rows"]],
            {
                "streams": [{k: v for k, v in h.items() if k != "rows"} for h in growth_hits],
                "growth": worst["growth"],
                "branches": worst["branches"],
                "accumulated_variance": worst["accumulated_variance"],
                "per_branch_variance": worst["per_branch_variance"],
                "threshold_growth": worst["threshold_growth"],
                "unaware_reference": worst["unaware_reference"],
                "growth_after_gpt2_scaling": worst["growth_after_gpt2_scaling"],
                "tolerance": tau,
                "residual_option": option,
                "residual_option_why": why,
            },
            f"the residual stream {worst['stream'] or '<model>'} grows ×{worst['growth']:.3g} in RMS over its "
            f"{worst['branches']} branches (√(1 + cN) with c = {worst['per_branch_variance']:.2g} per branch; "
            f"bounded growth needs ≤ √(1 + τ) = {worst['threshold_growth']:.3g}): its branches are not scaled "
            f"with depth. Fix: residual={option!r} ({why}).",
        ))
    if collapse_hits:
        worst = max(collapse_hits, key=lambda h: h["token_cosine_last"])
        post = any(h["placement"] == "post" for h in collapse_hits)
        option = "deepnet" if post else "gpt2"
        why = (
            "post-LN: DeepNet's β on the value, output and FFN projections (measured on BERT 12–24 blocks with "
            "fan-in weights: last token cosine 1.00 → 0.34)"
            if post
            else "pre-LN: 1/√N on every branch's output projection keeps the skip path dominant"
        )
        out.append(Finding(
            "token_collapse",
            [_branch(h["rows"][-1]) for h in collapse_hits],
            {
                "streams": [{k: v for k, v in h.items() if k != "rows"} for h in collapse_hits],
                "token_cosine_in": worst["token_cosine_in"],
                "token_cosine_last": worst["token_cosine_last"],
                "threshold": worst["threshold"],
                "tokens": worst["tokens"],
                "residual_option": option,
                "residual_option_why": why,
            },
            f"the tokens of each sequence collapse to one vector along the stream {worst['stream'] or '<model>'}: "
            f"mean token cosine {worst['token_cosine_in']:.3f} → {worst['token_cosine_last']:.4f} "
            f"(collapsed above 1 − 1/(S − 1) = {worst['threshold']:.3f} for S = {worst['tokens']} tokens; Dong "
            f"et al. 2021). Fix: residual={option!r} ({why}).",
        ))
    return out
