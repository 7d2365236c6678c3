"""Presets: how a whole model is initialized — like PyTorch, Keras 3 or Flax would, or by its activations.

A preset is a function ``fn(ctx: PresetContext) -> None`` that looks at every parameter initlab knows
(``ctx.sites``: path, parameter, :class:`~initlab.modules.LayerInfo`, :class:`~initlab.modules.ParamInfo`)
and chooses an initializer for it, or for each of its slices, with the reason::

    import initlab
    from initlab.presets import PresetContext, register_preset

    def my_preset(ctx: PresetContext) -> None:
        ctx.apply_preset("auto")                       # start from another preset ...
        for site in ctx.sites:
            if site.info.role == "bias":               # ... and change what you need
                ctx.set(site, initlab.Constant(0.01), "small positive bias for ReLU units")
        ctx.add_post_step("rescale", lambda model: ..., "why the step runs after every value is filled")

    register_preset("mine", my_preset, description="auto, with 0.01 biases", needs_example_input=True)
    initlab.plan(model, preset="mine", example_input=x).apply(seed=0)

``ctx.set(site, init, why, part=..., fans=...)`` records a choice (a later call for the same parameter or
slice replaces an earlier one), ``ctx.leave(site, why)`` leaves a parameter as is, ``ctx.activation_after
(site)`` returns the activation that follows the site's layer (needs ``example_input`` or an fx-traceable
model), and ``ctx.add_post_step(name, fn, why)`` attaches a callable ``fn(model)`` that
:meth:`~initlab.plan.Plan.apply` runs after all parameters are filled (data-driven rescaling such as
LSUV); the plan prints it. A post step that raises restores every parameter.

Built-in presets:

- ``torch``: what each module's ``reset_parameters`` draws (frameworks.md §4): U(±1/√fan_in) for
  Linear/Conv weights and biases (the bias bound uses the *weight's* fan_in; ConvTranspose reads it from the
  output channels), U(±1/√H) for every recurrent parameter, N(0, 1) embeddings with the ``padding_idx``
  row zeroed, the packed (3E, E) ``in_proj_weight`` Xavier-uniform as one matrix, ``out_proj.weight``
  U(±1/√E), zero attention biases, ``nn.Transformer``'s Xavier on every matrix.
- ``keras``: what Keras 3 gives the same architecture (§2): Glorot-uniform kernels with Keras's fans, zero
  biases, orthogonal recurrent kernels on the whole (u, G·u) block, LSTM forget-gate bias 1,
  Embedding U(±0.05), PReLU 0. For Keras layers: each layer's own configured initializers.
- ``flax``: LeCun-normal kernels (truncated, fan_in with feature groups), zero biases, orthogonal
  recurrent kernels per H×H gate, ``Embed`` N(0, 1/√features) (§5.2).
- ``auto``: activation-aware. Dense (2-D) kernels followed by a ReLU-like or tanh-like activation:
  ``Orthogonal(gain)`` — √(2/(1+a²)) for the ReLU family, √σ_w² with σ_w² the edge-of-chaos scale at
  σ_b² = 0.05 (1.327 for tanh) — measured to train better than the i.i.d. laws on deep MLPs
  (option ``dense='variance'`` restores those). Otherwise: He for the ReLU family (the leaky slope
  respected, He et al. 2015), the forward gain of ``initlab.gain`` for any other smooth activation
  (var = g²/fan_in), Glorot for tanh, sigmoid and linear layers (Glorot & Bengio 2010), orthogonal
  recurrent weights per gate (Saxe et al. 2014) with LSTM forget bias 1 (Jozefowicz et al. 2015); true
  fans throughout (grouped and depthwise convolutions included).

Options. A preset may declare typed options (:class:`PresetOption`, passed to :func:`register_preset`);
``initlab.plan(model, preset, options={...})`` checks them before anything runs (an unknown name or a
bad value is an error naming the option and what it accepts) and the preset reads them from
``ctx.options``. ``preset_options(name)`` lists them. ``auto``'s options::

    initlab.plan(model, preset="auto", example_input=x,
                 options={"saturating": "critical", "smooth": "critical", "sigma_b2": 0.05, "orthogonal": True})

- ``saturating``: ``"glorot"`` (default) or ``"critical"`` — layers followed by a tanh-like (tanh,
  softsign, hardtanh) or sigmoid-like activation get ``Critical(φ, sigma_b2)``: σ_w² with χ₁ = 1 at the
  fixed point q* (Poole et al. 2016; Schoenholz et al. 2017), and their biases N(0, σ_b²);
- ``smooth``: ``"gain"`` (default) or ``"critical"`` — the same for GELU, SiLU, ELU, SELU, … layers;
- ``sigma_b2`` (number ≥ 0, default 0.05): the bias variance the critical σ_w² is solved for;
- ``dense``: ``"orthogonal"`` (default) or ``"variance"`` — the orthogonal rule for dense kernels above,
  or the i.i.d. law (He, Glorot) everywhere;
- ``orthogonal`` (bool, default False): scaled (delta-)orthogonal critical weights — dynamical isometry
  (Pennington et al. 2017).

Where φ has no usable critical point (none at this σ_b², only an unstable one, or one that inputs of
mean square 1 do not reach — GELU, SiLU, Mish, softplus at σ_b² = 0.05), the layer keeps auto's usual
choice and its ``why`` says so and why. Only dense and convolutional layers are covered (the mean-field
theory's setting).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import activations as _acts
from .activations import Activation, activation
from .fans import Fans
from .gain import gain
from .initializers import (
    Constant,
    GlorotUniform,
    HeUniform,
    Initializer,
    KaimingUniform,
    LecunNormal,
    Ones,
    Orthogonal,
    RandomNormal,
    RandomUniform,
    TorchDefault,
    VarianceScaling,
    XavierNormal,
    XavierUniform,
    Zeros,
    get,
)
from .modules import LayerInfo, ParamInfo, Part

__all__ = [
    "AUTO_OPTIONS",
    "PRESETS",
    "ParamSite",
    "PostStep",
    "PresetContext",
    "PresetOption",
    "PresetSpec",
    "preset_names",
    "preset_options",
    "register_preset",
]


# ---------------------------------------------------------------------------------------------------
# What a preset works with
# ---------------------------------------------------------------------------------------------------


@dataclass
class ParamSite:
    """One parameter of the model: ``path`` (as ``named_parameters`` or the Keras variable path gives it),
    the parameter, and — when initlab knows the layer — ``layer`` and ``info``; else ``reason`` says why
    it is unknown."""

    path: str
    param: torch.Tensor
    module_path: str
    module: Any
    layer: LayerInfo | None = None
    info: ParamInfo | None = None
    reason: str | None = None

    @property
    def known(self) -> bool:
        return self.info is not None


@dataclass(frozen=True)
class PostStep:
    """A callable ``fn(model)`` that :meth:`Plan.apply` runs after every parameter is filled."""

    name: str
    fn: Callable[[nn.Module], Any]
    why: str
    preset: str | None = None


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


class PresetContext:
    """What a preset function sees and records; see the module docstring for the protocol."""

    def __init__(self, model: Any, sites: list[ParamSite], *, preset: str, example_input: Any = None,
                 options: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self.sites = sites
        self.preset = preset
        self.example_input = example_input
        #: The running preset's options, checked and completed with their defaults (see PresetOption).
        self.options: dict[str, Any] = dict(options or {})
        self.choices: dict[str, list[Choice]] = {}
        self.post_steps: list[PostStep] = []
        self.notes: list[str] = []
        self._follow: dict[int, Follow] | None = None
        #: Paths a rule of the plan() call covers: a preset may skip work for them (auto does).
        self.ruled: set[str] = set()
        self._stack: list[str] = []

    @property
    def known_sites(self) -> list[ParamSite]:
        return [s for s in self.sites if s.known]

    def set(
        self,
        site: ParamSite,
        initializer: Initializer | None,
        why: str,
        *,
        part: Part | None = None,
        fans: Fans | None = None,
        label: str | None = None,
        index: tuple[Any, ...] | None = None,
        shape: tuple[int, ...] | None = None,
        fixed: bool = False,
    ) -> None:
        """Choose ``initializer`` for ``site`` (or for its slice ``part``, or for an ad-hoc slice
        ``index``/``label``); ``fans`` are those the initializer reads (default: the true fans).
        A whole-parameter choice replaces every earlier choice for the site. ``initializer`` may be
        anything :func:`initlab.get` accepts (an instance, a name, a Keras config dict)."""
        if initializer is not None and not isinstance(initializer, Initializer):
            try:
                initializer = get(initializer)
            except (ValueError, TypeError) as e:
                raise ValueError(f"initializer: preset {self.preset!r} chose {initializer!r} for {site.path!r}: {e}") from e
        if part is not None:
            label, index, shape = part.label, part.index, part.shape
            fans = fans if fans is not None else part.fans.get("true")
        elif fans is None and site.info is not None:
            fans = site.info.fans.get("true")
        ch = Choice(initializer, why, fans, label, index, shape, fixed, partition=part is not None)
        lst = self.choices.setdefault(site.path, [])
        if label is None:
            lst[:] = [ch]
            return
        lst[:] = [c for c in lst if c.label != label]
        lst.append(ch)

    def leave(self, site: ParamSite, why: str) -> None:
        """Leave ``site`` as it is (the plan lists it with ``why``)."""
        self.choices[site.path] = [Choice(None, why, None)]

    def apply_preset(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        """Run another registered preset on this context (its choices and post steps are kept).

        ``options`` are that preset's own options (checked like :func:`initlab.plan`'s; the rest take
        their defaults), e.g. ``ctx.apply_preset("auto", options={"saturating": "critical"})``; while it
        runs, ``ctx.options`` holds them, and the calling preset's options come back afterwards."""
        spec = _get_preset(name)
        if name in self._stack:
            raise ValueError(f"preset: {name!r} applies itself (via {' -> '.join(self._stack)}).")
        resolved = resolve_options(name, options)
        outer = self.options
        self._stack.append(name)
        self.options = resolved
        try:
            spec.fn(self)
        finally:
            self._stack.pop()
            self.options = outer

    def add_post_step(self, name: str, fn: Callable[[nn.Module], Any], why: str) -> None:
        """Attach ``fn(model)``, run by :meth:`Plan.apply` after all values are filled, in order."""
        if not callable(fn):
            raise TypeError(f"fn: a post step must be callable as fn(model), got {type(fn).__name__}.")
        self.post_steps.append(PostStep(name, fn, why, self.preset))

    def activation_after(self, site: ParamSite) -> Follow:
        """The activation that follows ``site``'s layer: a Keras layer's own ``activation``; for torch
        modules found by running ``example_input`` with hooks (functional activations included, through
        a ``TorchFunctionMode``), or by ``torch.fx`` tracing when no ``example_input`` is given."""
        layer = site.layer
        if layer is None:
            raise ValueError(f"site: {site.path!r} belongs to no known layer.")
        if layer.framework == "keras":
            return _keras_follow(layer)
        if self._follow is None:
            self._follow = find_followers(self.model, self.known_sites, self.example_input)
        f = self._follow.get(id(layer.module))
        if f is None and self.example_input is None:
            raise ValueError(
                f"example_input: the layer {site.module_path!r} ({layer.type_name}) is not called in the forward "
                "torch.fx traced, so the activation after it is unknown; pass example_input=<a batch> or a rule "
                f"for {site.path!r}."
            )
        if f is None:
            raise ValueError(
                f"example_input: the layer {site.module_path!r} ({layer.type_name}) did not run when "
                "example_input went through the model, so the activation after it is unknown; pass an input "
                f"that reaches it, or a rule for {site.path!r}."
            )
        return f


# ---------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------


_KINDS = ("bool", "nonnegative")


@dataclass(frozen=True)
class PresetOption:
    """One typed option of a preset: its ``name``, ``default`` and ``doc``, and what it accepts —
    exactly one of the values in ``choices``, or a value of ``kind`` ``"bool"`` (True/False) or
    ``"nonnegative"`` (a finite number >= 0, stored as float).

    >>> PresetOption("saturating", "glorot", "what tanh layers get", choices=("glorot", "critical")).check("critical")
    'critical'
    """

    name: str
    default: Any
    doc: str
    choices: tuple[Any, ...] | None = None
    kind: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"name: an option name must be an identifier string, got {self.name!r}.")
        if (self.choices is None) == (self.kind is None):
            raise ValueError(f"option {self.name!r}: give exactly one of choices=(...) or kind= (one of "
                             f"{', '.join(map(repr, _KINDS))}); got choices={self.choices!r}, kind={self.kind!r}.")
        if self.kind is not None and self.kind not in _KINDS:
            raise ValueError(f"kind: option {self.name!r} has kind {self.kind!r}; valid kinds: "
                             f"{', '.join(map(repr, _KINDS))}.")
        if self.choices is not None and not self.choices:
            raise ValueError(f"choices: option {self.name!r} needs at least one valid value.")
        self.check(self.default)

    @property
    def valid(self) -> str:
        """What the option accepts, in words."""
        if self.choices is not None:
            return "one of " + ", ".join(map(repr, self.choices))
        return "True or False" if self.kind == "bool" else "a finite number >= 0"

    def check(self, value: Any) -> Any:
        """``value`` as the preset will see it; raises naming the option, the value and what is valid."""
        bad = ValueError(f"options[{self.name!r}]: expected {self.valid}, got {value!r}.")
        if self.choices is not None:
            for c in self.choices:
                if type(value) is type(c) and value == c:
                    return c
            raise bad
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise bad
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise bad
        return float(value)


@dataclass(frozen=True)
class PresetSpec:
    name: str
    fn: Callable[[PresetContext], None]
    description: str = ""
    needs_example_input: bool = False
    options: tuple[PresetOption, ...] = ()


PRESETS: dict[str, PresetSpec] = {}


def register_preset(
    name: str,
    fn: Callable[[PresetContext], None],
    *,
    description: str = "",
    needs_example_input: bool = False,
    replace: bool = False,
    options: Sequence[PresetOption] = (),
) -> Callable[[PresetContext], None]:
    """Make ``fn`` available as ``initlab.plan(model, preset=name)``.

    ``fn(ctx)`` records choices on a :class:`PresetContext` (see the module docstring);
    ``needs_example_input=True`` makes :func:`initlab.plan` reject a call without ``example_input``
    before anything runs. ``options``: the :class:`PresetOption` s the preset accepts; ``plan(...,
    options={...})`` checks what it is given against them and ``fn`` reads ``ctx.options`` (every
    declared name, defaults filled in). Re-registering a name is an error unless ``replace=True``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name: a preset needs a non-empty string name, got {name!r}.")
    if not callable(fn):
        raise TypeError(f"fn: expected a callable fn(ctx: PresetContext) -> None, got {type(fn).__name__}.")
    if name in PRESETS and not replace:
        raise ValueError(f"name: preset {name!r} is already registered; pass replace=True to redefine it.")
    opts = tuple(options)
    for o in opts:
        if not isinstance(o, PresetOption):
            raise TypeError(f"options: expected PresetOption objects, got {type(o).__name__} ({o!r}).")
    names = [o.name for o in opts]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"options: preset {name!r} declares {', '.join(map(repr, dup))} more than once.")
    PRESETS[name] = PresetSpec(name, fn, description, needs_example_input, opts)
    return fn


def preset_names() -> list[str]:
    """The registered preset names."""
    return list(PRESETS)


def preset_options(name: str) -> dict[str, PresetOption]:
    """The options preset ``name`` accepts, by name (empty for a preset without options).

    >>> sorted(preset_options("auto"))
    ['dense', 'orthogonal', 'saturating', 'sigma_b2', 'smooth']
    """
    return {o.name: o for o in _get_preset(name).options}


def _options_summary(spec: PresetSpec) -> str:
    return "; ".join(f"{o.name!r} ({o.valid}, default {o.default!r})" for o in spec.options)


def resolve_options(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` for preset ``name`` checked (:meth:`PresetOption.check`) and completed with the
    defaults. Raises ``TypeError`` for a non-dict and ``ValueError`` for an unknown name or bad value,
    naming it and listing what is valid."""
    spec = _get_preset(name)
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise TypeError(f"options: expected a dict {{option name: value}}, got {type(options).__name__} "
                        f"({options!r}).")
    declared = {o.name: o for o in spec.options}
    unknown = [k for k in options if k not in declared]
    if unknown:
        if not declared:
            with_opts = [p.name for p in PRESETS.values() if p.options]
            raise ValueError(
                f"options: preset {name!r} takes no options, got {', '.join(map(repr, unknown))}; presets with "
                f"options: {', '.join(map(repr, with_opts)) or 'none'}."
            )
        raise ValueError(
            f"options: preset {name!r} has no option {', '.join(map(repr, unknown))}; its options are "
            f"{_options_summary(spec)}."
        )
    return {n: (o.check(options[n]) if n in options else o.default) for n, o in declared.items()}


def _get_preset(name: str) -> PresetSpec:
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"preset: unknown preset {name!r}; registered presets: {', '.join(map(repr, PRESETS))}.")
    return PRESETS[name]


# ---------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------


def _bound(fan_in: int) -> Initializer:
    return Zeros() if fan_in <= 0 else RandomUniform(-1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in))


def _parts_or_whole(ctx: PresetContext, site: ParamSite, make: Callable[[Fans | None], Initializer], why: str,
                    fans_key: str = "true") -> None:
    info = site.info
    if info.parts:
        for p in info.parts:
            ctx.set(site, make(p.fans.get(fans_key)), why, part=p, fans=p.fans.get(fans_key))
    else:
        f = info.fans.get(fans_key)
        ctx.set(site, make(f), why, fans=f)


def _padding_fixup(ctx: PresetContext, site: ParamSite) -> None:
    pad = site.info.meta.get("padding_idx")
    if pad is None:
        return
    n = site.info.shape[0]
    row = pad % n
    ctx.set(site, Zeros(), "padding_idx row: zero, as torch's reset_parameters leaves it (its gradient is "
            "masked, so it keeps this value)", label=f"padding_idx={pad}", index=(slice(row, row + 1),),
            shape=(1, *site.info.shape[1:]), fixed=True)


def _forget_bias(ctx: PresetContext, site: ParamSite, value: float, why: str) -> None:
    """Set the forget-gate slice of an LSTM bias."""
    for p in site.info.parts:
        if p.label == "f":
            ctx.set(site, Constant(value) if value else Zeros(), why, part=p)


def _torch_transformer_paths(ctx: PresetContext) -> set[str]:
    """Paths of every >1-D parameter under an ``nn.Transformer`` (its ``_reset_parameters`` applies
    ``xavier_uniform_`` to all of them after construction)."""
    out: set[str] = set()
    if not isinstance(ctx.model, nn.Module):
        return out
    for mpath, m in ctx.model.named_modules():
        if isinstance(m, nn.Transformer):
            prefix = f"{mpath}." if mpath else ""
            for n, p in m.named_parameters():
                if p.dim() > 1:
                    out.add(prefix + n)
    return out


def _keras_init(site: ParamSite) -> Initializer | None:
    from .keras_support import keras_initializer

    init = site.info.meta.get("initializer")
    return None if init is None else keras_initializer(init)


# ---------------------------------------------------------------------------------------------------
# torch
# ---------------------------------------------------------------------------------------------------


def torch_preset(ctx: PresetContext) -> None:
    """What each module's ``reset_parameters`` draws (distributions; frameworks.md §4)."""
    transformer = _torch_transformer_paths(ctx)
    for site in ctx.known_sites:
        layer, info = site.layer, site.info
        role, kind = info.role, layer.kind
        tf = info.fans["torch"]
        name = layer.type_name if layer.framework == "torch" else f"(torch's equivalent of Keras {layer.type_name})"
        if site.path in transformer:
            ctx.set(site, XavierUniform(), "nn.Transformer._reset_parameters: xavier_uniform_ on every "
                    "parameter with dim > 1, after the submodules' own defaults", fans=tf)
        elif kind == "mha":
            _torch_mha(ctx, site)
        elif kind in ("rnn", "lstm", "gru"):
            h = info.meta["hidden_size"]
            ctx.set(site, _bound(h), f"{name}.reset_parameters: every weight and both biases "
                    f"U(±1/√hidden_size) = U(±1/√{h})", fans=tf)
        elif role == "kernel" and kind == "bilinear":
            ctx.set(site, _bound(tf.fan_in), f"nn.Bilinear.reset_parameters: U(±1/√in1_features) = "
                    f"U(±1/√{tf.fan_in})", fans=tf)
        elif role == "kernel":
            extra = " (ConvTranspose: torch reads fan_in from the output channels, PR #30079)" \
                if kind == "conv_transpose" else ""
            ctx.set(site, TorchDefault(), f"{name}.reset_parameters: kaiming_uniform_(a=√5) = "
                    f"U(±1/√fan_in), fan_in {tf.fan_in}{extra}", fans=tf)
        elif role == "bias":
            ctx.set(site, _bound(tf.fan_in), f"{name}.reset_parameters: bias U(±1/√fan_in) with "
                    f"the weight's fan_in {tf.fan_in}", fans=tf)
        elif role == "embedding":
            ctx.set(site, RandomNormal(0.0, 1.0), f"{name}.reset_parameters: normal_ = N(0, 1)", fans=None)
            _padding_fixup(ctx, site)
        elif role in ("norm_scale", "norm_moving_var"):
            ctx.set(site, Ones(), "normalization scale (running variance): ones", fans=None)
        elif role in ("norm_shift", "norm_moving_mean"):
            ctx.set(site, Zeros(), "normalization shift (running mean): zeros", fans=None)
        elif role == "prelu":
            v = float(info.meta.get("init", 0.25))
            ctx.set(site, Constant(v), f"nn.PReLU: init={v:g}", fans=None)
        else:
            ctx.leave(site, f"the torch preset has no rule for role {role!r} of {layer.type_name}")


def _torch_mha(ctx: PresetContext, site: ParamSite) -> None:
    info = site.info
    role = info.role
    if role == "attn_in":
        if info.meta.get("packed"):
            f = info.fans["torch"]
            ctx.set(site, XavierUniform(), "MultiheadAttention._reset_parameters: xavier_uniform_ on the packed "
                    f"(3E, E) matrix, fans ({f.fan_in}, {f.fan_out}): half the per-projection variance "
                    "(pytorch/pytorch#166378)", fans=f)
        else:
            ctx.set(site, XavierUniform(), "MultiheadAttention._reset_parameters: xavier_uniform_ on each "
                    "separate projection", fans=info.fans["torch"])
    elif role in ("attn_in_bias", "attn_out_bias"):
        ctx.set(site, Zeros(), "MultiheadAttention._reset_parameters: constant_(0) on in_proj_bias and "
                "out_proj.bias", fans=None)
    elif role == "attn_out":
        ctx.set(site, TorchDefault(), "out_proj keeps nn.Linear's U(±1/√E) (MultiheadAttention never resets "
                "out_proj.weight)", fans=info.fans["torch"])
    elif role == "attn_bias_kv":
        ctx.set(site, XavierNormal(), "MultiheadAttention._reset_parameters: xavier_normal_ on bias_k/bias_v "
                "(std 1/√E)", fans=info.fans["torch"])


# ---------------------------------------------------------------------------------------------------
# keras
# ---------------------------------------------------------------------------------------------------


def keras_preset(ctx: PresetContext) -> None:
    """What Keras 3 gives the same architecture (frameworks.md §2), with Keras's fans."""
    for site in ctx.known_sites:
        layer, info = site.layer, site.info
        role, kind = info.role, layer.kind
        if layer.framework == "keras":
            _keras_layer_own(ctx, site)
            continue
        kf = info.fans["keras"]
        if kind == "mha":
            if role == "attn_in":
                _parts_or_whole(ctx, site, lambda f: GlorotUniform(),
                                "Keras MultiHeadAttention: glorot_uniform on each of the query/key/value kernels "
                                "(d, H, Dk), fans (d, H·Dk) as Keras 3.15 derives them from the einsum")
            elif role == "attn_out":
                ctx.set(site, GlorotUniform(), "Keras MultiHeadAttention output kernel (H, Dv, d): glorot_uniform, "
                        "fans (H·Dv, d)", fans=kf)
            else:
                ctx.set(site, Zeros(), "Keras MultiHeadAttention biases: zeros (bias_k/bias_v have no Keras "
                        "counterpart: zeros as well)", fans=None)
        elif kind in ("rnn", "lstm", "gru"):
            keras_name = {"rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}[kind]
            if role == "kernel":
                ctx.set(site, GlorotUniform(), f"Keras {keras_name}: glorot_uniform on the whole (in, "
                        f"{len(info.meta['gates'])}·units) kernel", fans=kf)
            elif role == "recurrent_kernel":
                ctx.set(site, Orthogonal(), f"Keras {keras_name}: orthogonal on the whole (units, "
                        f"{len(info.meta['gates'])}·units) recurrent kernel", fans=kf)
            elif role == "projection":
                ctx.set(site, GlorotUniform(), "LSTM projection (proj_size): no Keras counterpart; glorot_uniform "
                        "like a Dense kernel", fans=kf)
            else:
                ctx.set(site, Zeros(), f"Keras {keras_name}: zero bias", fans=None)
                if kind == "lstm" and role == "bias":
                    _forget_bias(ctx, site, 1.0, "Keras LSTM unit_forget_bias=True: forget gate bias 1; torch "
                                 "adds bias_ih and bias_hh, so bias_ih[f] = 1 and bias_hh[f] = 0")
        elif role == "kernel":
            note = {"conv": " (Keras's fans: a depthwise kernel counts fan_in = in·∏k, grouped fan_out ignores "
                            "groups)", "conv_transpose": " (Keras's fans: fan_in from the filters)"}.get(kind, "")
            ctx.set(site, GlorotUniform(), f"Keras default kernel_initializer glorot_uniform{note}", fans=kf)
        elif role == "bias":
            ctx.set(site, Zeros(), "Keras default bias_initializer: zeros", fans=None)
        elif role == "embedding":
            ctx.set(site, RandomUniform(-0.05, 0.05), "Keras Embedding default 'uniform' = U(±0.05)", fans=None)
            _padding_fixup(ctx, site)
        elif role in ("norm_scale", "norm_moving_var"):
            ctx.set(site, Ones(), "Keras normalization gamma (moving variance): ones", fans=None)
        elif role in ("norm_shift", "norm_moving_mean"):
            ctx.set(site, Zeros(), "Keras normalization beta (moving mean): zeros", fans=None)
        elif role == "prelu":
            ctx.set(site, Zeros(), "Keras PReLU alpha_initializer: zeros (torch uses 0.25)", fans=None)
        else:
            ctx.leave(site, f"the keras preset has no rule for role {role!r} of {layer.type_name}")


def _keras_layer_own(ctx: PresetContext, site: ParamSite) -> None:
    """A Keras layer: its own configured initializer (what Keras itself gives this model)."""
    info = site.info
    try:
        init = _keras_init(site)
    except (ValueError, TypeError) as e:
        ctx.leave(site, f"its Keras initializer cannot be read as an initlab initializer: {e}")
        return
    if init is None:
        ctx.leave(site, f"{site.layer.type_name} has no initializer attribute for {site.path!r}")
        return
    name = type(info.meta.get("initializer")).__name__
    ctx.set(site, init, f"the layer's own {name} (what Keras gives this layer)", fans=info.fans["keras"])
    if site.layer.kind == "lstm" and info.role == "bias" and info.meta.get("unit_forget_bias"):
        _forget_bias(ctx, site, 1.0, "Keras LSTM unit_forget_bias=True: forget gate bias 1")


# ---------------------------------------------------------------------------------------------------
# flax
# ---------------------------------------------------------------------------------------------------


def flax_preset(ctx: PresetContext) -> None:
    """Flax linen/nnx defaults (frameworks.md §5.2): lecun_normal kernels, zero biases."""
    for site in ctx.known_sites:
        layer, info = site.layer, site.info
        role, kind = info.role, layer.kind
        ff = info.fans["flax"]
        if kind == "mha":
            if role == "attn_in":
                _parts_or_whole(ctx, site, lambda f: LecunNormal(), "Flax MultiHeadDotProductAttention: "
                                "lecun_normal per projection, fan_in = the input features", "flax")
            elif role == "attn_out":
                ctx.set(site, LecunNormal(), "Flax MultiHeadDotProductAttention out: lecun_normal, fan_in = H·Dh",
                        fans=ff)
            else:
                ctx.set(site, Zeros(), "Flax attention biases: zeros", fans=None)
        elif kind in ("rnn", "lstm", "gru"):
            if role in ("kernel", "projection"):
                _parts_or_whole(ctx, site, lambda f: LecunNormal(), "Flax recurrent cell: one Dense per gate, "
                                "lecun_normal (fan_in = input features)", "flax")
            elif role == "recurrent_kernel":
                _parts_or_whole(ctx, site, lambda f: Orthogonal(), "Flax recurrent cell: orthogonal per H×H gate "
                                "(Keras treats the whole block)", "flax")
            else:
                ctx.set(site, Zeros(), "Flax recurrent cell: zero bias (no forget-gate offset)", fans=None)
        elif role == "kernel":
            ctx.set(site, LecunNormal(), f"Flax {'Conv' if 'conv' in kind else 'Dense'} default lecun_normal: "
                    f"truncated normal, var 1/fan_in, fan_in {ff.fan_in}", fans=ff)
        elif role == "bias":
            ctx.set(site, Zeros(), "Flax default bias_init: zeros", fans=None)
        elif role == "embedding":
            ctx.set(site, VarianceScaling(1.0, "fan_in", "untruncated_normal"),
                    f"Flax Embed: variance_scaling(1, 'fan_in', 'normal', out_axis=0) = N(0, 1/√features), "
                    f"features {ff.fan_in}", fans=ff)
            _padding_fixup(ctx, site)
        elif role in ("norm_scale", "norm_moving_var"):
            ctx.set(site, Ones(), "Flax norm scale: ones", fans=None)
        elif role in ("norm_shift", "norm_moving_mean"):
            ctx.set(site, Zeros(), "Flax norm bias: zeros", fans=None)
        elif role == "prelu":
            ctx.set(site, Constant(0.01), "Flax PReLU negative_slope_init: 0.01", fans=None)
        else:
            ctx.leave(site, f"the flax preset has no rule for role {role!r} of {layer.type_name}")


# ---------------------------------------------------------------------------------------------------
# auto
# ---------------------------------------------------------------------------------------------------

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
)

# Which auto option governs a layer followed by an activation of this family.
_CRITICAL_OPTION = {"tanh": "saturating", "sigmoid": "saturating", "smooth": "smooth"}
# Layer kinds the mean-field theory (dense: Poole et al. 2016; convolutions: Xiao et al. 2018) covers.
_CRITICAL_KINDS = ("linear", "conv", "conv_transpose")


def _auto_options(ctx: PresetContext) -> dict[str, Any]:
    """auto's options from ``ctx.options`` (defaults for any missing), with the cross-option check:
    ``sigma_b2`` or ``orthogonal`` away from its default needs a ``'critical'`` option to act on."""
    opts = {o.name: ctx.options.get(o.name, o.default) for o in AUTO_OPTIONS}
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
    from .critical import Critical
    from .plan import _init_label as _label

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
    from . import theory

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
            ctx.set(site, RandomNormal(0.0, 1.0), "embedding rows are the layer's output: unit variance, "
                    "the scale the next layer's variance-scaling assumes", fans=None)
            _padding_fixup(ctx, site)
        elif role in ("norm_scale", "norm_moving_var"):
            ctx.set(site, Ones(), "normalization scale: ones (identity at init)", fans=None)
        elif role in ("norm_shift", "norm_moving_mean"):
            ctx.set(site, Zeros(), "normalization shift: zeros", fans=None)
        elif role == "prelu":
            v = float(info.meta.get("init", 0.25))
            ctx.set(site, Constant(v), f"PReLU slope {v:g} (torch's default); the layer before it uses this slope",
                    fans=None)
        else:
            ctx.leave(site, f"the auto preset has no rule for role {role!r} of {layer.type_name}")
    for site in ctx.known_sites:  # the biases of critical layers: N(0, σ_b²), the σ_b² σ_w² was solved for
        crit = critical.get(id(site.module))
        if crit is None or site.info.role != "bias":
            continue  # (a ruled bias is set too: the rule then names what it replaced, truthfully)
        law = "zero (σ_b² = 0)" if crit.sigma_b2 == 0 else f"N(0, σ_b² = {crit.sigma_b2:g})"
        ctx.set(site, crit.init, f"{crit.option}='critical': bias {law}, the σ_b² the critical σ_w² of "
                f"{crit.kernel_path} was solved for (without the option: Zeros)", fans=None)


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


# ---------------------------------------------------------------------------------------------------
# Finding the activation after each layer
# ---------------------------------------------------------------------------------------------------

_ACT_FUNCS = {
    "relu", "relu6", "leaky_relu", "gelu", "silu", "mish", "elu", "selu", "celu", "softplus", "softsign",
    "hardtanh", "hardswish", "hardsigmoid", "logsigmoid", "tanhshrink", "tanh", "sigmoid", "rrelu",
}
_OUTPUT_FUNCS = {"softmax", "log_softmax"}
_TRANSPARENT_FUNCS = {
    "view", "reshape", "flatten", "unflatten", "permute", "transpose", "contiguous", "squeeze", "unsqueeze",
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout", "to", "float",
    "clone", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "layer_norm", "batch_norm", "group_norm", "rms_norm",
    "instance_norm", "pad", "type_as", "detach",
}
_TRANSPARENT_MODULES: tuple[type, ...] = (
    nn.modules.dropout._DropoutNd, nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.batchnorm._NormBase,
    nn.LayerNorm, nn.GroupNorm, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
_ACT_MODULES: tuple[type, ...] = tuple(t for t in _acts._MODULE_TYPES if t is not nn.Identity)
_OUTPUT_MODULES: tuple[type, ...] = (nn.Softmax, nn.LogSoftmax)


def _func_name(f: Any) -> str:
    name = f if isinstance(f, str) else (getattr(f, "__name__", "") or "")
    return name[:-1] if name.endswith("_") and not name.endswith("__") else name  # relu_ -> relu


def _activation_of_call(kind: str, target: Any, args: tuple, kwargs: dict) -> tuple[str, Activation | None]:
    """Classify one call: ("act", Activation) | ("transparent", None) | ("other", None)."""
    if kind == "module":
        if isinstance(target, _OUTPUT_MODULES):
            return "act", Activation(type(target).__name__.lower(), lambda x: x, "linear")
        if isinstance(target, _ACT_MODULES):
            return "act", activation(target)
        if isinstance(target, _TRANSPARENT_MODULES):
            return "transparent", None
        return "other", None
    name = _func_name(target)
    if name in _OUTPUT_FUNCS:
        return "act", Activation(name, lambda x: x, "linear")
    if name in _ACT_FUNCS:
        if name == "leaky_relu":
            slope = kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)
            return "act", activation("leaky_relu", float(slope))
        if name == "elu":
            alpha = kwargs.get("alpha", args[1] if len(args) > 1 else 1.0)
            return "act", activation("elu", float(alpha))
        if name == "gelu" and (kwargs.get("approximate") == "tanh" or (len(args) > 1 and args[1] == "tanh")):
            return "act", activation("gelu_tanh")
        if name == "rrelu":
            return "act", activation("leaky_relu", (1 / 8 + 1 / 3) / 2)
        return "act", activation(name)
    if name in _TRANSPARENT_FUNCS:
        return "transparent", None
    return "other", None


@dataclass
class _Event:
    kind: str  # "module" | "function"
    target: Any
    inputs: set[int]
    outputs: set[int]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    name: str = ""


def _describe_target(ev: _Event, names: dict[int, str]) -> str:
    if ev.kind == "module":
        return f"module {names.get(id(ev.target), type(ev.target).__name__)!r}"
    return f"{_func_name(ev.target)}()"


def _follow_from(events: list[_Event], start: int, names: dict[int, str]) -> Follow:
    frontier = set(events[start].outputs)
    via: list[str] = []
    for ev in events[start + 1:]:
        if not (ev.inputs & frontier):
            continue
        if ev.target == "output":
            break
        cls, act = _activation_of_call(ev.kind, ev.target, ev.args, ev.kwargs)
        if cls == "act":
            return Follow(act, " → ".join([*via, _describe_target(ev, names)]))
        if cls == "transparent":
            via.append(_describe_target(ev, names))
            frontier |= ev.outputs
            continue
        return Follow(activation("linear"), f"its output goes straight into {_describe_target(ev, names)}")
    return Follow(activation("linear"), "its output is the model's output")


def _flat_tensors(x: Any, out: list) -> list:
    if isinstance(x, torch.Tensor):
        out.append(x)
    elif isinstance(x, (list, tuple)):
        for y in x:
            _flat_tensors(y, out)
    elif isinstance(x, dict):
        for y in x.values():
            _flat_tensors(y, out)
    return out


def find_followers(model: nn.Module, sites: list[ParamSite], example_input: Any = None) -> dict[int, Follow]:
    """For each known torch layer (by ``id(module)``) the activation its output meets first.

    With ``example_input``: one forward pass (no grad, eval mode, training flags restored) with hooks on
    every module and a ``TorchFunctionMode`` that records functional calls (``F.relu``, ``x.tanh()``)
    made outside the known layers; the output tensors are followed through shape ops, dropout, norms and
    pooling to the first consumer. Without it: ``torch.fx`` symbolic tracing with the known layers as leaves.
    """
    layers = {id(s.layer.module): s.layer for s in sites if s.layer is not None and s.layer.framework == "torch"}
    names = {id(m): n for n, m in model.named_modules()}
    if example_input is not None:
        events = _events_by_running(model, layers, example_input)
    else:
        events = _events_by_fx(model, layers)
    out: dict[int, Follow] = {}
    for i, ev in enumerate(events):
        if ev.kind == "module" and id(ev.target) in layers and id(ev.target) not in out:
            out[id(ev.target)] = _follow_from(events, i, names)
    return out


def _events_by_running(model: nn.Module, layers: dict[int, LayerInfo], example_input: Any) -> list[_Event]:
    from torch.overrides import TorchFunctionMode

    events: list[_Event] = []
    keep: list[torch.Tensor] = []  # keep every seen tensor alive so ids stay unique
    depth = [0]

    def opaque(m: nn.Module) -> bool:
        return id(m) in layers or isinstance(m, (*_ACT_MODULES, *_TRANSPARENT_MODULES, *_OUTPUT_MODULES))

    def pre(m, args):
        if opaque(m):
            depth[0] += 1

    def post(m, args, kwargs, output):
        if not opaque(m):
            return
        depth[0] -= 1
        if depth[0] == 0:
            ins = _flat_tensors(args, []) + _flat_tensors(kwargs, [])
            outs = _flat_tensors(output, [])
            keep.extend(ins)
            keep.extend(outs)
            events.append(_Event("module", m, {id(t) for t in ins}, {id(t) for t in outs}))

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            result = func(*args, **kwargs)
            if depth[0] == 0:
                ins = _flat_tensors(args, []) + _flat_tensors(kwargs, [])
                outs = _flat_tensors(result, [])
                if ins and outs:
                    keep.extend(ins)
                    keep.extend(outs)
                    events.append(_Event("function", func, {id(t) for t in ins}, {id(t) for t in outs},
                                         tuple(args), kwargs))
            return result

    handles = []
    modes = {m: m.training for m in model.modules()}
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post, with_kwargs=True))
    try:
        model.eval()
        with torch.no_grad(), Recorder():
            if isinstance(example_input, dict):
                model(**example_input)
            elif isinstance(example_input, tuple):
                model(*example_input)
            else:
                model(example_input)
    except Exception as e:
        raise ValueError(
            f"example_input: running the model on it failed ({type(e).__name__}: {e}); pass an input the model "
            "accepts (a tensor, a tuple of positional arguments or a dict of keyword arguments)."
        ) from e
    finally:
        for h in handles:
            h.remove()
        for m, t in modes.items():
            m.training = t
    return events


def _events_by_fx(model: nn.Module, layers: dict[int, LayerInfo]) -> list[_Event]:
    import torch.fx as fx

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return id(m) in layers or isinstance(m, (*_ACT_MODULES, *_TRANSPARENT_MODULES, *_OUTPUT_MODULES)) \
                or super().is_leaf_module(m, qualname)

    try:
        graph = Tracer().trace(model)
    except Exception as e:
        raise ValueError(
            f"example_input: preset 'auto' needs the activation after each layer, and torch.fx could not trace "
            f"{type(model).__name__} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); pass "
            "example_input=<a batch the model accepts> so initlab can run it with hooks instead."
        ) from e
    events = []
    for node in graph.nodes:
        ins = {id(n) for n in node.all_input_nodes}
        if node.op == "call_module":
            events.append(_Event("module", model.get_submodule(node.target), ins, {id(node)}))
        elif node.op in ("call_function", "call_method"):
            events.append(_Event("function", node.target, ins, {id(node)}, tuple(node.args), dict(node.kwargs)))
        elif node.op == "output":
            events.append(_Event("function", "output", ins, set()))
    return events


def _keras_follow(layer: LayerInfo) -> Follow:
    from .keras_support import keras_activation_after

    spec, via = keras_activation_after(layer.module)
    if spec is None:
        return Follow(activation("linear"), via)
    if isinstance(spec, tuple):
        return Follow(activation(spec[0], spec[1]), via)
    name = spec if isinstance(spec, str) else getattr(spec, "__name__", None)
    if name in ("softmax", "log_softmax"):
        return Follow(Activation(name, lambda x: x, "linear"), via)
    try:
        return Follow(activation(name), via)
    except (ValueError, TypeError):
        return Follow(activation(spec), via)  # any other callable: the gain is computed numerically


register_preset("torch", torch_preset, description="what each module's reset_parameters draws")
register_preset("keras", keras_preset, description="what Keras 3 gives the same architecture")
register_preset("flax", flax_preset, description="Flax linen/nnx defaults: lecun_normal kernels, zero biases")
register_preset("auto", auto_preset, description="activation-aware: He / gain / Glorot / orthogonal, with why; "
                "options saturating/smooth='critical' for edge-of-chaos layers", options=AUTO_OPTIONS)
