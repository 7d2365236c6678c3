"""``plan()``: collect every parameter with its layer knowledge, run the preset and the rules, and return
the :class:`~initlab.plan.apply.Plan` — a dry run; :meth:`Plan.apply <initlab.plan.apply.Plan.apply>` fills
the values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..initializers.base import FLOAT_DTYPES
from . import presets as _builtin_presets  # noqa: F401  (registers the built-in presets)
from .apply import Plan, PlanEntry
from .context import PresetContext
from .keras import is_keras_layer, keras_layer_info, keras_layers
from .labels import _init_label
from .layers import LayerInfo
from .modules import module_info
from .registry import _get_preset, resolve_options
from .rules import _apply_rules, _parse_rules
from .sharded import bind_to_sharded, refuse_meta_fsdp_forward
from .sites import Choice, ParamSite
from .trace import ModelTrace, layer_info, trace_model

__all__ = ["plan"]


def _collect_sites(model: Any) -> tuple[list[ParamSite], list[str], set[str]]:
    """Every parameter, each once (a tied tensor under its first name, its other names as ``aliases``), with
    its layer knowledge or the reason it has none; and the paths of the parameters whose module (or whose
    place in a known module) initlab does not know — those a trace of the forward pass may read."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model: expected a torch.nn.Module (a Keras 3 model on the torch backend is one), got "
            f"{type(model).__name__}."
        )
    sites: list[ParamSite] = []
    seen: dict[int, str] = {}
    notes: list[str] = []
    skip: set[int] = set()
    seen_keras: set[int] = set()
    known_modules: dict[int, str] = {}

    def add(module_path: str, layer: LayerInfo) -> None:
        for pi in layer.params:
            if layer.framework == "keras":
                param = pi.meta["variable"].value
                path = pi.name
            else:
                try:
                    param = layer.module.get_parameter(pi.name)
                except AttributeError:  # e.g. a parametrized weight (torch.nn.utils.parametrize)
                    continue
                path = f"{module_path}.{pi.name}" if module_path else pi.name
            if id(param) in seen:
                continue
            seen[id(param)] = path
            sites.append(ParamSite(path, param, module_path, layer.module, layer, pi))

    for mpath, m in model.named_modules():
        if id(m) in skip:
            continue
        if is_keras_layer(m):
            for kl in keras_layers(m):
                if id(kl) in seen_keras:
                    continue
                seen_keras.add(id(kl))
                info = keras_layer_info(kl)
                if info is not None:
                    add(getattr(kl, "path", kl.name), info)
            for sub in m.modules():
                skip.add(id(sub))
            continue
        info = module_info(m)
        if info is None:
            continue
        known_modules[id(m)] = info.kind
        add(mpath, info)
        for c in info.covers:
            for sub in m.get_submodule(c).modules():
                skip.add(id(sub))

    owners = {}
    for mpath, m in model.named_modules():
        for p in m.parameters(recurse=False):
            owners.setdefault(id(p), (mpath, m))
    readable: set[str] = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen[id(p)] = name
        mpath, m = owners.get(id(p), ("", model))
        if isinstance(p, nn.parameter.UninitializedParameter):
            reason = f"{type(m).__name__} is a lazy module not yet materialized; run one forward pass first"
        elif p.dtype not in FLOAT_DTYPES:
            reason = f"not a floating-point tensor ({p.dtype}), e.g. a seed-generator state"
        elif ".parametrizations." in f".{name}":
            reason = ("a parametrization's tensor (torch.nn.utils.parametrize); initlab does not guess how it maps "
                      "to the layer's weight — a rule can initialize it")
        elif seen_keras and isinstance(m, nn.ParameterDict):
            reason = (f"Keras variable {name.rsplit('.', 1)[-1]!r} is not one initlab knows for its layer; a rule "
                      "can initialize it")
        elif id(m) in known_modules:
            reason = (f"{type(m).__name__} is a {known_modules[id(m)]} layer, but initlab does not know its "
                      f"parameter {name.rsplit('.', 1)[-1]!r}; a rule can initialize it")
            readable.add(name)
        else:
            reason = (f"initlab does not know {type(m).__name__}; a rule (by path, name or type) can initialize "
                      "it")
            readable.add(name)
        sites.append(ParamSite(name, p, mpath, m, None, None, reason))
    if not seen_keras:  # torch models: rows in named_parameters order (Keras keeps its own layer order)
        order = {id(p): i for i, (_, p) in enumerate(model.named_parameters())}
        sites.sort(key=lambda s: order.get(id(s.param), len(order)))
        names: dict[int, list[str]] = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            names.setdefault(id(p), []).append(name)
        for site in sites:
            site.aliases = tuple(n for n in names.get(id(site.param), ()) if n != site.path)
            if site.aliases:
                notes.append(f"{site.path} is also {', '.join(site.aliases)} (tied: one tensor); it is planned and "
                             f"filled once, as {site.path}.")
    return sites, notes, readable


def _read_unknown(sites: list[ParamSite], readable: set[str], trace: ModelTrace) -> list[str]:
    """Give the sites initlab's module knowledge missed the layer knowledge the trace read from their ops
    (:func:`~initlab.plan.trace.layer_info`); the rest keep their reason, prefixed with the op seen."""
    read: dict[str, int] = {}
    unread = 0
    for site in sites:
        if site.path not in readable:
            continue
        reading = trace.reading(site.path)
        layer = layer_info(reading, site.module, trace)
        if layer is None:
            site.reason = f"{reading.how}; {site.reason}"
            unread += 1
            continue
        site.layer, site.info, site.reason = layer, layer.params[0], None
        key = type(site.module).__name__
        read[key] = read.get(key, 0) + 1
    notes = []
    if read or unread:
        kinds = ", ".join(f"{k} ×{n}" for k, n in read.items()) or "none"
        notes.append(f"example_input: {sum(read.values())} parameters of modules initlab does not know were read "
                     f"from the ops that use them ({kinds}); {unread} could not be read and are left as is.")
    if trace.flow.errors:
        notes.append(f"example_input: the trace could not read {len(trace.flow.errors)} ops (the forward itself "
                     f"ran): {'; '.join(trace.flow.errors[:3])}")
    return notes


_PART_WORD = {"kernel": "weight", "embedding": "weight", "norm_scale": "weight", "bias": "bias",
              "norm_shift": "bias"}


def _explain(site: ParamSite, why: str, trace: ModelTrace | None) -> str:
    """A choice's ``why`` with how the trace recognised the parameter (traced sites) and its tied names."""
    info = site.info
    if info is not None and info.meta.get("recognised"):
        like = site.layer.attrs.get("as") if site.layer is not None else None
        word = _PART_WORD.get(info.role)
        treated = f"like {like}'s {word}: " if like and word else ""
        why = f"{info.meta['recognised']}; {treated}{why}"
    if site.aliases:
        if trace is not None:
            why = f"{why}; {trace.alias_text(site.path)}"
        else:
            why = f"{why}; tied: also {', '.join(site.aliases)}; one tensor, initialized once"
    return why


def plan(
    model: Any,
    preset: str = "torch",
    *,
    example_input: Any = None,
    rules: Mapping[Any, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    twin: Any = None,
) -> Plan:
    """Plan the initialization of every parameter of ``model`` — a dry run; :meth:`Plan.apply` does it.

    ``preset``: ``"torch"``, ``"keras"``, ``"flax"``, ``"auto"`` or any name given to
    :func:`initlab.plan.presets.register_preset` (see :mod:`initlab.plan.presets` for what each draws).
    ``example_input``: a batch the model accepts (a tensor, a tuple of positional arguments or a dict of
    keyword arguments). With it, every preset runs the model once (no grad, eval mode, the model left as it
    was; on the meta device too) and reads each parameter of a module initlab does not know from the op that
    uses it (:mod:`initlab.plan.trace`): HF ``Conv1D`` is ``addmm(b, x, W)``, a dense kernel in Keras layout;
    a manual RMSNorm's weight multiplies a normalized tensor; a ViT's position embedding is added to the
    activations — each then gets the law the preset gives a layer of that role, and ``why`` says how it was
    recognised. The plan's ``trace`` keeps what was read, ``residual`` the residual streams. ``auto`` also
    uses the run to find the activation after each layer, and falls back to ``torch.fx`` without it.
    ``rules``: ``{key: initializer}`` overriding the preset; a key is a module type (``nn.Embedding``), a
    path glob (``"*.out_proj.weight"``) or a parameter name (``"bias"``); the value is anything
    :func:`initlab.get` accepts, or ``None`` to leave the parameter as is. The first matching rule wins
    and the plan names it; a rule that matches nothing is an error.
    ``options``: ``{name: value}`` for the preset's own options (:func:`initlab.plan.presets.preset_options`
    lists them), checked before anything runs: an unknown name or a bad value is an error naming the
    option and what it accepts. ``auto`` has ``saturating`` (``"glorot"`` | ``"critical"``), ``smooth``
    (``"gain"`` | ``"critical"``), ``sigma_b2`` (>= 0, default 0.05) and ``orthogonal`` (bool):
    ``options={"saturating": "critical"}`` gives every layer followed by tanh/sigmoid-like φ
    ``Critical(φ, sigma_b2)`` — σ_w² with χ₁ = 1 (Poole et al. 2016, Schoenholz et al. 2017) — where φ has
    a usable critical point, and says in ``why`` what it did (or why it kept auto's usual choice).
    A parameter initlab does not understand is listed as left as is, with the reason (with ``example_input``:
    the op that used it). A tensor under several names (tied embeddings and LM head) is one entry, filled
    once; its ``why`` names the other names.
    ``twin``: an unsharded copy of ``model`` with the same parameter names, typically built under
    ``torch.device("meta")``, planned in its place — for a model that FSDP2 has already sharded on meta,
    whose forward pass (``auto``'s) cannot run; the plan applies to ``model`` by path. Planning before
    ``fully_shard`` needs no twin: ``apply`` binds the sharded parameters by path.
    """
    if twin is not None:
        return bind_to_sharded(plan(twin, preset, example_input=example_input, rules=rules, options=options), model)
    if example_input is not None:
        refuse_meta_fsdp_forward(model)
    spec = _get_preset(preset)
    resolved = resolve_options(preset, options)
    if spec.needs_example_input and example_input is None:
        raise ValueError(f"example_input: preset {preset!r} runs the model on data; pass example_input=<a batch>.")
    sites, notes, readable = _collect_sites(model)
    keras_model = any(s.layer is not None and s.layer.framework == "keras" for s in sites)
    trace = None
    if example_input is not None and not keras_model:
        trace = trace_model(model, example_input)
        notes.extend(_read_unknown(sites, readable, trace))
    parsed = _parse_rules(rules) if rules is not None else []
    ctx = PresetContext(model, sites, preset=preset, example_input=example_input, options=resolved, trace=trace)
    ctx.notes.extend(notes)
    ctx.ruled = {s.path for s in sites if any(match(s) for _, match, _ in parsed)}
    spec.fn(ctx)
    if parsed:
        _apply_rules(ctx, parsed)
    unread = [s for s in sites if s.path in readable and not any(c.initializer for c in ctx.choices.get(s.path, []))]
    if trace is None and unread and not keras_model:  # a preset that plans them anyway (hf) needs no such note
        kinds = sorted({type(s.module).__name__ for s in unread})
        ctx.notes.append(f"{len(unread)} parameters of modules initlab does not know ({', '.join(kinds)}) are left "
                         "as is; with example_input=<a batch> initlab runs the model once and reads each from the "
                         "op that uses it (a dense kernel, an embedding, a norm scale, …).")
    entries: list[PlanEntry] = []
    params: dict[str, torch.Tensor] = {}
    for site in sites:
        params[site.path] = site.param
        choices = ctx.choices.get(site.path)
        if not choices:
            why = site.reason if site.reason else f"preset {preset!r} made no choice for it"
            choices = [Choice(None, why, None)]
        for ch in choices:
            entries.append(_entry(site, ch, _explain(site, ch.why, trace)))
    given = {k: resolved[k] for k in (options or {})}
    return Plan(model, preset, entries, list(ctx.post_steps), ctx.notes, params, given, trace=trace,
                lr_scales=dict(ctx.lr_scales))


def _entry(site: ParamSite, ch: Choice, why: str) -> PlanEntry:
    info, layer = site.info, site.layer
    shape = tuple(int(d) for d in (ch.shape if ch.shape is not None else site.param.shape))
    layout = info.layout if info is not None else "torch"
    path = site.path if ch.label is None else f"{site.path}[{ch.label}]"
    desc = None
    fans = ch.fans
    if ch.initializer is not None:
        if site.param.dtype not in FLOAT_DTYPES:
            raise ValueError(
                f"{'rules[' + ch.rule + ']' if ch.rule else 'preset'}: {path!r} has dtype {site.param.dtype}; "
                "initializers fill floating tensors only."
            )
        try:
            desc = ch.initializer.describe(shape, layout, fans=fans)
        except (ValueError, TypeError) as e:
            who = f"rules[{ch.rule}]" if ch.rule else "preset"
            raise ValueError(
                f"{who}: {_init_label(ch.initializer)} cannot initialize {path!r} of shape {shape} "
                f"(role {info.role if info else 'unknown'}): {e}"
            ) from e
        if fans is None:
            fans = desc.fans
    return PlanEntry(
        path=path, shape=shape, layout=layout, fans=fans, initializer=ch.initializer,
        std=None if desc is None else desc.std, why=why, rule=ch.rule, param_path=site.path,
        part=ch.label, index=ch.index, module_type=layer.type_name if layer else type(site.module).__name__,
        role=info.role if info else None, description=desc, fixed=ch.fixed, aliases=site.aliases,
    )
