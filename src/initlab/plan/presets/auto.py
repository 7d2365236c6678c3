"""The ``auto`` preset: activation-aware initialization with true fans, each choice saying which activation
it serves, and its options (:data:`AUTO_OPTIONS`: edge-of-chaos layers, the dense rule).

Dense (2-D) kernels followed by a ReLU-like or tanh-like activation get ``Orthogonal(gain)`` — √(2/(1+a²))
for the ReLU family, √σ_w² with σ_w² the edge-of-chaos scale at σ_b² = 0.05 (1.327 for tanh) — measured to
train better than the i.i.d. laws on deep MLPs (``dense='variance'`` restores those). Otherwise: He for the
ReLU family (leaky slope respected), the forward gain of :func:`initlab.gain` for other smooth
activations, Glorot for tanh, sigmoid and linear layers, orthogonal recurrent weights per gate with LSTM
forget bias 1. The activation after each layer comes from :mod:`initlab.plan.follow`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...initializers import (
    Constant,
    GlorotUniform,
    HeUniform,
    Initializer,
    KaimingUniform,
    Ones,
    Orthogonal,
    VarianceScaling,
    XavierNormal,
    Zeros,
)
from ...initializers import activations as _acts
from ...initializers.activations import Activation, activation
from ...initializers.fans import Fans
from ...initializers.gain import gain
from ..context import PresetContext
from ..registry import PresetOption, register_preset
from ..sites import Follow, ParamSite
from .auto_residual import RESIDUAL_RULES, embedding_choice, residual_choices
from .common import _forget_bias, _padding_fixup, _parts_or_whole, _traced_role

__all__ = ["AUTO_OPTIONS", "DENSE_SIGMA_B2", "auto_preset"]


_GAINS: dict[str, float] = {}


def _for_activation(follow: Follow, layer_fans: Fans) -> tuple[Initializer, str]:
    """The initializer an activation calls for, and why."""
    a = follow.activation
    where = f"followed by {a.label} ({follow.via})"
    if a.family == "relu":
        slope = dict(a.params).get("negative_slope")
        if slope:
            return (KaimingUniform(a=float(slope), nonlinearity="leaky_relu"),
                    f"{where}: He with the leaky slope, var 2/((1+a²)·fan_in) = 2/((1+{slope:g}²)·"
                    f"{layer_fans.fan_in}) (He et al. 2015)")
        return HeUniform(), f"{where}: He, var 2/fan_in = 2/{layer_fans.fan_in} (He et al. 2015)"
    if a.family in ("tanh", "sigmoid", "linear"):
        what = f"no nonlinearity follows ({follow.via})" if a.name == "linear" else where
        return (GlorotUniform(), f"{what}: Glorot, var 2/(fan_in+fan_out) = 2/({layer_fans.fan_in}+"
                f"{layer_fans.fan_out}) (Glorot & Bengio 2010)")
    key = a.label
    if key not in _GAINS:
        _GAINS[key] = gain(a, "forward")
    g = _GAINS[key]
    lecun = " = LeCun (Klambauer et al. 2017)" if abs(g - 1.0) < 1e-3 else ""
    return (VarianceScaling(g * g, "fan_in", "uniform"),
            f"{where}: forward gain g = 1/√E[φ(z)²] = {g:.4f}, var g²/fan_in = {g * g:.4f}/{layer_fans.fan_in}"
            f"{lecun}")


AUTO_OPTIONS: tuple[PresetOption, ...] = (
    PresetOption("saturating", "glorot", "layers followed by a tanh-like (tanh, softsign, hardtanh) or sigmoid-like "
                 "activation: 'glorot' (Glorot & Bengio 2010) or 'critical' (Critical(φ, sigma_b2): χ₁ = 1, "
                 "Poole et al. 2016, Schoenholz et al. 2017; biases N(0, sigma_b2))",
                 choices=("glorot", "critical")),
    PresetOption("smooth", "gain", "layers followed by another smooth activation (GELU, SiLU, ELU, SELU, Mish, "
                 "softplus, any callable): 'gain' (var g²/fan_in, g the forward gain) or 'critical' (as above)",
                 choices=("gain", "critical")),
    PresetOption("sigma_b2", 0.05, "the bias variance σ_b² the critical σ_w² is solved for (needs "
                 "saturating='critical' or smooth='critical')", kind="nonnegative"),
    PresetOption("dense", "orthogonal", "dense (2-D) kernels: 'orthogonal' (a (semi-)orthogonal matrix × the "
                 "activation's gain, norm-preserving: Saxe et al. 2014) or 'variance' (the i.i.d. law: He, "
                 "Glorot, var g²/fan_in)", choices=("orthogonal", "variance")),
    PresetOption("orthogonal", False, "critical weights as scaled (delta-)orthogonal matrices with the same "
                 "E[w²]: dynamical isometry, Pennington et al. 2017 (needs saturating='critical' or "
                 "smooth='critical')", kind="bool"),
    PresetOption("residual", "auto", "residual branches (read from the forward pass on example_input): 'gpt2' "
                 "(output projections × 1/√N, Radford et al. 2019), 'deepnet' (DeepNorm's β, α folded on post-LN, "
                 "Wang et al. 2022), 'tfixup' (Huang et al. 2020), 'measured' (each branch to RMS(skip)/√N on "
                 "example_input, at apply), 'none', or 'auto' (gpt2 on pre-LN streams, deepnet on post-LN)",
                 choices=RESIDUAL_RULES),
    PresetOption("deepnet_alpha", "fold", "DeepNorm's α on post-LN streams (residual='deepnet', or 'auto' on a "
                 "post-LN stream): 'fold' (the skip's norm × α, the branch's input kernels ÷ α: DeepNorm's forward "
                 "at init) or 'none' (β only)", choices=("fold", "none")),
)

# Which auto option governs a layer followed by an activation of this family.
_CRITICAL_OPTION = {"tanh": "saturating", "sigmoid": "saturating", "smooth": "smooth"}
# Layer kinds the mean-field theory (dense: Poole et al. 2016; convolutions: Xiao et al. 2018) covers.
_CRITICAL_KINDS = ("linear", "conv", "conv_transpose")


def _auto_options(ctx: PresetContext) -> dict[str, Any]:
    """auto's options from ``ctx.options`` (defaults for any missing), with the cross-option check:
    ``sigma_b2`` or ``orthogonal`` away from its default needs a ``'critical'`` option to act on."""
    opts = {o.name: ctx.options.get(o.name, o.default) for o in AUTO_OPTIONS}
    if opts["deepnet_alpha"] != "fold" and opts["residual"] not in ("deepnet", "auto"):
        raise ValueError(f"options['deepnet_alpha']: {opts['deepnet_alpha']!r} tunes DeepNorm's α, and "
                         f"residual={opts['residual']!r} does not use it; add residual='deepnet', or drop it.")
    if "critical" not in (opts["saturating"], opts["smooth"]):
        for o in (o for o in AUTO_OPTIONS if o.name in ("sigma_b2", "orthogonal")):
            if opts[o.name] != o.default:
                raise ValueError(
                    f"options[{o.name!r}]: {opts[o.name]!r} only tunes the layers auto gives Critical, and no "
                    f"option asks for it (saturating={opts['saturating']!r}, smooth={opts['smooth']!r}); add "
                    "saturating='critical' and/or smooth='critical', or drop it."
                )
    return opts


@dataclass(frozen=True)
class _CriticalChoice:
    init: Initializer
    sigma_b2: float
    option: str
    kernel_path: str


def _auto_critical(site: ParamSite, follow: Follow, usual: Initializer, usual_why: str, opts: dict[str, Any],
                   points: dict[Any, Any]) -> tuple[Initializer, str, _CriticalChoice | None]:
    """``Critical(φ)`` for a kernel when an auto option asks for it and φ has a usable critical point;
    else auto's ``usual`` choice, with a why that says what the option did (or why it did not act)."""
    from ...theory.critical_init import Critical
    from ..labels import _init_label as _label

    a = follow.activation
    name = _CRITICAL_OPTION.get(a.family)
    if name is None or opts[name] != "critical":
        return usual, usual_why, None
    tag = f"{name}='critical'"
    kept = f"kept auto's {_label(usual)}: {usual_why}"
    kind = site.layer.kind
    if kind not in _CRITICAL_KINDS:
        return usual, (f"{tag} not applied: the mean-field theory behind Critical covers dense and convolutional "
                       f"layers, not a {kind} layer; {kept}"), None
    sb = opts["sigma_b2"]
    spec = _critical_activation(a)
    point = _critical_point(a, sb, points)
    if isinstance(point, ValueError):
        reason = str(point).removeprefix("act: ")
        return usual, f"{tag} not applied: no usable edge of chaos ({reason}); {kept}", None
    if not point.attracts(1.0):
        return usual, (f"{tag} not applied: {a.label}'s critical point at σ_b² = {sb:g} (σ_w² = {point.sigma_w2:.4g}, "
                       f"q* = {point.q_star:.4g}) does not attract inputs of mean square 1 (its basin is q in "
                       f"[{point.q_min:.4g}, {point.q_max:.4g}]); {kept}"), None
    orthogonal = opts["orthogonal"]
    init = Critical(spec, sigma_b2=sb, sigma_w2=point.sigma_w2, orthogonal=orthogonal)
    fan_in = site.info.fans["true"].fan_in
    at = "every q" if math.isnan(point.q_star) else f"q* = {point.q_star:.4g}"
    law = (f"scaled orthogonal with E[w²] = σ_w²/fan_in = {point.sigma_w2:.4g}/{fan_in} (dynamical isometry, "
           "Pennington et al. 2017)" if orthogonal else f"N(0, σ_w²/fan_in = {point.sigma_w2:.4g}/{fan_in})")
    why = (f"{tag}: followed by {a.label} ({follow.via}): edge of chaos, σ_w² = {point.sigma_w2:.4g} makes χ₁ = 1 "
           f"at {at} with σ_b² = {sb:g} (Poole et al. 2016, Schoenholz et al. 2017); {law}; without the option "
           f"auto would choose {_label(usual)}")
    return init, why, _CriticalChoice(init, sb, name, site.path)


#: The σ_b² whose edge-of-chaos σ_w² sets the orthogonal gain of tanh-like layers (Schoenholz et al. 2017).
DENSE_SIGMA_B2 = 0.05


def _dense_orthogonal(follow: Follow, layer_fans: Fans, points: dict[Any, Any]) -> tuple[Initializer, str]:
    """``Orthogonal(gain)`` for a dense kernel followed by a ReLU-like or tanh-like activation, and why.

    An orthogonal map keeps norms (‖Wx‖ = g‖x‖ when W has orthonormal columns; each output unit's weight
    vector has length g when it has orthonormal rows), so the gain only has to undo what φ does to the
    signal. Measured on plain MLPs (``benchmarks/trainability.py``, README "Experiments"): against i.i.d.
    He and Glorot, orthogonal trains ReLU depth 10 to higher accuracy, and gain √σ_w²* lets tanh depth 30
    train with Adam where Glorot, He and gain 1 stall. Other dense layers (GELU, SiLU, linear outputs)
    keep the i.i.d. laws, where no such measurement backs a change (and QR costs ~20× a draw at 3072×768).
    """
    a = follow.activation
    where = f"followed by {a.label} ({follow.via})"
    law = (f"Orthogonal: the {layer_fans.fan_out}×{layer_fans.fan_in} matrix has orthonormal rows or columns, "
           "×g, so it keeps the signal's norm ×g (Saxe et al. 2014)")
    if a.family == "relu":
        slope = float(dict(a.params).get("negative_slope") or 0.0)
        g = math.sqrt(2.0 / (1.0 + slope * slope))
        return Orthogonal(gain=g), (f"{where}: {law}; g = √(2/(1+a²)) = {g:.4g} undoes the rectifier's halving of "
                                    "the second moment (He et al. 2015)")
    point = _critical_point(a, DENSE_SIGMA_B2, points)
    if isinstance(point, ValueError) or not point.attracts(1.0):
        return Orthogonal(gain=1.0), (f"{where}: {law}; g = 1, Glorot's variance on a square layer ({a.label} "
                                      f"has no usable edge of chaos at σ_b² = {DENSE_SIGMA_B2:g})")
    g = math.sqrt(point.sigma_w2)
    return Orthogonal(gain=g), (
        f"{where}: {law}; g = √σ_w² = {g:.4g}, σ_w² = {point.sigma_w2:.4g} the edge-of-chaos weight scale at "
        f"σ_b² = {DENSE_SIGMA_B2:g} (Schoenholz et al. 2017); with zero biases the signal settles at a fixed "
        "point q* > 0 instead of decaying with depth as it does for g = 1")


def _critical_point(a: Activation, sigma_b2: float, points: dict[Any, Any]) -> Any:
    """``theory.critical_point(a, sigma_b2)``, or the ValueError it raised, solved once per activation
    and σ_b² in a plan: a name says everything; any other φ is keyed by its function's identity (the
    function is kept in the cache, so its id cannot be reused meanwhile)."""
    from ... import theory

    spec = _critical_activation(a)
    key = (spec, sigma_b2) if isinstance(spec, str) else (id(a.fn), sigma_b2)
    if key not in points:
        try:
            points[key] = (a.fn, theory.critical_point(a, sigma_b2))
        except ValueError as err:
            points[key] = (a.fn, err)
    return points[key][1]


def _critical_activation(a: Activation) -> Any:
    """What to hand ``Critical``: the name when the name rebuilds the same φ (same label, parameters
    included: a clean, serializable config), else the resolved :class:`Activation` itself."""
    if a.name in _acts._NAMED and activation(a.name).label == a.label:
        return a.name
    return a


def auto_preset(ctx: PresetContext) -> None:
    """Activation-aware initialization with true fans; each choice says which activation it serves.

    ``ctx.options`` (see :data:`AUTO_OPTIONS`): ``saturating='critical'`` / ``smooth='critical'`` give
    layers followed by such activations ``Critical(φ, sigma_b2, orthogonal=...)`` and their biases
    N(0, σ_b²), where φ has a critical point that inputs of mean square 1 reach; elsewhere auto's usual
    choice stays, and the why says why."""
    opts = _auto_options(ctx)
    points: dict[Any, Any] = {}
    critical: dict[int, _CriticalChoice] = {}
    for site in ctx.known_sites:
        layer, info = site.layer, site.info
        role, kind = info.role, layer.kind
        tf = info.fans["true"]
        if kind == "mha":
            if role == "attn_in":
                _parts_or_whole(ctx, site, lambda f: GlorotUniform(), "q/k/v projections feed the attention "
                                "softmax, no elementwise nonlinearity: Glorot per projection with its own fans "
                                "(not the packed (3E, E) matrix)")
            elif role == "attn_out":
                ctx.set(site, GlorotUniform(), "attention output projection, linear (into the residual): Glorot",
                        fans=tf)
            elif role == "attn_bias_kv":
                ctx.set(site, XavierNormal(), "bias_k/bias_v act as an extra key/value row: N(0, 1/√E) like torch",
                        fans=info.fans["torch"])
            else:
                ctx.set(site, Zeros(), "attention bias: zero", fans=None)
        elif kind in ("rnn", "lstm", "gru"):
            _auto_recurrent(ctx, site)
        elif role == "kernel":
            if site.path in ctx.ruled:
                ctx.leave(site, "a rule covers it, so auto does not look for its activation")
                continue
            follow = ctx.activation_after(site)
            if (kind == "linear" and len(info.shape) == 2 and opts["dense"] == "orthogonal"
                    and follow.activation.family in ("relu", "tanh")):
                init, why = _dense_orthogonal(follow, tf, points)
            else:
                init, why = _for_activation(follow, tf)
            init, why, crit = _auto_critical(site, follow, init, why, opts, points)
            if crit is not None:
                critical[id(site.module)] = crit
            if layer.attrs.get("depthwise"):
                why += f"; depthwise: true fan_in = ∏k = {tf.fan_in}"
            elif layer.attrs.get("groups", 1) > 1:
                why += f"; {layer.attrs['groups']} groups: true fan_out {tf.fan_out}"
            ctx.set(site, init, why, fans=tf)
        elif role == "bias":
            ctx.set(site, Zeros(), "bias: zero, so the layer's output variance is the weights' alone", fans=None)
        elif role == "embedding":
            init, why = embedding_choice(ctx, site)
            ctx.set(site, init, why, fans=None)
            _padding_fixup(ctx, site)
        elif role in ("norm_scale", "norm_moving_var"):
            ctx.set(site, Ones(), "normalization scale: ones (identity at init)", fans=None)
        elif role in ("norm_shift", "norm_moving_mean"):
            ctx.set(site, Zeros(), "normalization shift: zeros", fans=None)
        elif role == "prelu":
            v = float(info.meta.get("init", 0.25))
            ctx.set(site, Constant(v), f"PReLU slope {v:g} (torch's default); the layer before it uses this slope",
                    fans=None)
        elif _traced_role(ctx, site):
            pass
        else:
            ctx.leave(site, f"the auto preset has no rule for role {role!r} of {layer.type_name}")
    for site in ctx.known_sites:  # the biases of critical layers: N(0, σ_b²), the σ_b² σ_w² was solved for
        crit = critical.get(id(site.module))
        if crit is None or site.info.role != "bias":
            continue  # (a ruled bias is set too: the rule then names what it replaced, truthfully)
        law = "zero (σ_b² = 0)" if crit.sigma_b2 == 0 else f"N(0, σ_b² = {crit.sigma_b2:g})"
        ctx.set(site, crit.init, f"{crit.option}='critical': bias {law}, the σ_b² the critical σ_w² of "
                f"{crit.kernel_path} was solved for (without the option: Zeros)", fans=None)
    residual_choices(ctx, opts["residual"], opts["deepnet_alpha"])


def _auto_recurrent(ctx: PresetContext, site: ParamSite) -> None:
    layer, info = site.layer, site.info
    role, kind = info.role, layer.kind
    nl = layer.attrs.get("nonlinearity")
    if role in ("kernel", "projection"):
        if kind == "rnn" and nl == "relu":
            _parts_or_whole(ctx, site, lambda f: HeUniform(), "input weights of a ReLU RNN: He, var 2/fan_in")
        else:
            _parts_or_whole(ctx, site, lambda f: GlorotUniform(), "input weights feed sigmoid/tanh gates: Glorot "
                            "per gate, fans (in, hidden)")
    elif role == "recurrent_kernel":
        _parts_or_whole(ctx, site, lambda f: Orthogonal(), "recurrent weights: orthogonal per gate, so the hidden "
                        "state keeps its norm through time (Saxe et al. 2014)")
    else:
        ctx.set(site, Zeros(), "recurrent bias: zero", fans=None)
        if kind == "lstm" and role == "bias":
            _forget_bias(ctx, site, 1.0, "LSTM forget-gate bias 1, so the cell remembers at the start of "
                         "training (Gers et al. 2000; Jozefowicz et al. 2015)")




register_preset("auto", auto_preset, description="activation-aware: He / gain / Glorot / orthogonal, with why; "
                "options saturating/smooth='critical' for edge-of-chaos layers", options=AUTO_OPTIONS)
