"""The ``mup`` preset: μP (Yang et al. 2022, "Tensor Programs V", arXiv:2203.03466) as the ``mup`` package
(1.0.0) sets it up — ``mup.set_base_shapes(model, base, delta=delta)`` on a model with torch's default init,
and ``MuAdam``/``MuSGD``'s per-layer learning rates (:meth:`initlab.plan.Plan.param_groups`)::

    plan = initlab.plan(model, "mup", options={"base": base_model})      # base_model: the same net, base width
    plan.apply(seed=0)
    opt = torch.optim.AdamW(plan.param_groups(3e-3, weight_decay=0.1))   # = mup.MuAdamW(..., lr=3e-3, ...)

At the base width μP is torch's default init (``torch`` preset) and the learning rate you tuned there; at
width m × base:

- hidden weights (fan-in and fan-out both width): torch's U(±1/√fan_in) at the current width, var ∝ 1/fan_in;
  Adam lr ÷ m (fan-in's multiplier), SGD lr × m_out/m_in;
- biases of a layer whose fan-in is width: × √m, i.e. torch's bias law at the base fan-in (constant in width;
  ``mup.layer.rescale_linear_bias``);
- input weights, embeddings, norm scales and other vector-like parameters: torch's law, unchanged; Adam lr
  unchanged, SGD lr × m;
- the readout (fan-in width, fan-out not — e.g. the logits layer): μP needs its output × 1/m. ``mup`` puts that
  multiplier in the forward (``MuReadout``: weight and bias × √m at init, lr unchanged). initlab cannot change a
  forward, so a plain layer gets the equivalent weights W = W_MuReadout / m — torch's law ÷ √m (var ∝ 1/fan_in²,
  Table 3 of the paper) — and its lr ÷ m for Adam and SGD; a ``mup.MuReadout`` layer, which already divides, gets
  the package's own init. ``options={"readout": "zero"}``: zeros instead (``MuReadout(readout_zero_init=True)``).

Not done by an init: attention's 1/d_head logits scale (instead of 1/√d_head) and a tied readout's 1/m multiplier
are forward changes; the plan's ``why`` and notes say what to change.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ...initializers import RandomNormal, RandomUniform, Zeros
from ..context import PresetContext
from ..mup import BaseShapes, LrScale, WidthShape, _shapes_of, base_shapes, width_shapes
from ..registry import PresetOption, register_preset
from ..sites import ParamSite

__all__ = ["MUP_OPTIONS", "mup_preset"]


def _shapes(what: str):
    """A validator: the option's model or dict as base shapes (the plan then shows and serializes shapes, not a
    model)."""
    def check(value: Any) -> BaseShapes | None:
        if value is None or isinstance(value, BaseShapes):
            return value
        shapes, source = _shapes_of(value, what)
        return BaseShapes(shapes, None, source)
    return check


MUP_OPTIONS: tuple[PresetOption, ...] = (
    PresetOption("base", None, "the model at the base width (the width whose learning rate you tuned; an "
                 "nn.Module of the same architecture, built on meta is enough) or a dict {name: shape}: like "
                 "mup.set_base_shapes(model, base), a dimension that differs from it is a width dimension",
                 kind="object", validate=_shapes("options['base']"), valid_text="an nn.Module or a dict {name: shape}"),
    PresetOption("delta", None, "optional: the model at another width, to say which dimensions are width when "
                 "the model itself has the base width (mup's delta=)", kind="object", validate=_shapes("options['delta']"),
                 valid_text="an nn.Module or a dict {name: shape}"),
    PresetOption("readout", "scaled", "the readout's init: 'scaled' (torch's law × the μP readout factor, "
                 "MuReadout's default) or 'zero' (MuReadout(readout_zero_init=True))", choices=("scaled", "zero")),
)

_ATTN = re.compile(r"(^|[._])(attn|attention|self_attn|q_proj|k_proj|query|key|c_attn|in_proj)([._]|$)")
_ATTN_TEXT = ("μP scales attention logits by 1/d_head instead of 1/√d_head; that is the forward, which initlab "
              "cannot change: pass scale=1/d_head to F.scaled_dot_product_attention (or divide q·kᵀ by d_head "
              "instead of √d_head); with d_head fixed as width grows (more heads) nothing changes")


def _dims(site: ParamSite) -> tuple[int, int]:
    """(fan-in dimension, fan-out dimension) of a kernel in its layout."""
    layout = site.info.layout
    if layout == "torch_transposed":
        return 0, 1
    if layout.startswith("keras"):
        n = len(site.info.shape)
        return n - 2, n - 1
    return 1, 0


def _is_mureadout(module: Any) -> bool:
    return any(c.__name__ in ("MuReadout", "MuSharedReadout") and c.__module__.startswith("mup")
               for c in type(module).__mro__)


def _scaled(init: Any, c: float) -> Any:
    """``init`` with its values × ``c`` (the laws the torch preset gives biases and kernels)."""
    if isinstance(init, Zeros):
        return init
    if isinstance(init, RandomUniform):
        return RandomUniform(init.minval * c, init.maxval * c)
    if isinstance(init, RandomNormal):
        return RandomNormal(init.mean * c, init.stddev * c)
    return None


def _readout_of(ctx: PresetContext, site: ParamSite) -> str:
    """How the trace saw the readout's output, for the why."""
    if ctx.example_input is None:
        return ""
    try:
        r = ctx.trace.reading(site.path)
    except (KeyError, ValueError):
        return ""
    from ..trace import _is_output

    return "; the trace confirms its output is the model's output" if any(
        _is_output(ctx.trace.flow, u.node) for u in r.uses) else ""


def _tied_readout(ctx: PresetContext, site: ParamSite) -> str | None:
    """The alias of a tied embedding that a plain Linear uses as a readout, if any."""
    from torch import nn

    for alias in site.aliases:
        owner = alias.rpartition(".")[0]
        try:
            m = ctx.model.get_submodule(owner)
        except AttributeError:
            continue
        if isinstance(m, nn.Linear) and not _is_mureadout(m):  # MuSharedReadout divides in its own forward
            return alias
    return None


def _lr(ws: WidthShape, site: ParamSite | None) -> LrScale:
    """MuAdam's and MuSGD's factors; a known kernel's fan-in comes from its layout (mup reads dimension 1)."""
    if ws.ninf == 2:
        if site is not None and site.info is not None and site.info.role == "kernel":
            i, o = _dims(site)
            m_in, m_out = ws.mult(i), ws.mult(o)
        else:
            m_in, m_out = ws.mult(1), ws.mult(0)
        return LrScale(1.0 / m_in, m_out / m_in, f"matrix-like (hidden): Adam lr ÷ m_in = ÷{m_in:g}, SGD lr × "
                       f"m_out/m_in = ×{m_out / m_in:g}")
    if ws.ninf == 1:
        m = ws.mult(ws.main)
        return LrScale(1.0, m, f"vector-like: Adam lr × 1, SGD lr × m = ×{m:g}")
    return LrScale(1.0, 1.0, "no width dimension: lr as given")


def mup_preset(ctx: PresetContext) -> None:
    """μP: torch's init at the base width, scaled with width as ``mup.set_base_shapes`` does; per-parameter
    learning-rate factors of MuAdam/MuSGD for :meth:`~initlab.plan.Plan.param_groups`."""
    from torch import nn

    opts = ctx.options
    if not isinstance(ctx.model, nn.Module) or any(s.layer is not None and s.layer.framework == "keras"
                                                   for s in ctx.sites):
        raise ValueError("model: preset 'mup' plans torch modules (it reads parameter names and shapes as "
                         "mup.set_base_shapes does); a Keras model is not one.")
    if opts.get("base") is None:
        raise ValueError("options['base']: preset 'mup' needs the model at its base width, e.g. "
                         "options={'base': make_model(width=64)} (built under torch.device('meta') costs nothing), "
                         "or a dict {name: shape}; μP scales each layer by width / base width.")
    bases = opts["base"] if opts.get("delta") is None else base_shapes(opts["base"], opts["delta"])
    widths = width_shapes(ctx.model, bases)
    ctx.apply_preset("torch")
    zero = opts.get("readout") == "zero"
    biases_of = _biases_by_kernel(ctx)
    lr_site: dict[str, ParamSite] = {}
    readouts: dict[str, LrScale] = {}
    attention = False
    for site in ctx.known_sites:
        info = site.info
        ws = widths.get(site.path)
        if ws is None:
            continue
        lr_site[site.path] = site
        kernel = info.role in ("kernel", "attn_in", "attn_out") and len(info.shape) >= 2
        if info.role in ("attn_in", "attn_out") or (kernel and _ATTN.search(site.path)):
            attention = True
            if info.role == "attn_in" or _ATTN.search(site.path):
                _append_why(ctx, site, _ATTN_TEXT)
        if info.role == "embedding":
            alias = _tied_readout(ctx, site)
            if alias is not None:
                m = ws.mult(ws.main) if ws.main is not None else 1.0
                _append_why(ctx, site, f"tied to the readout {alias}: μP wants the embedding unscaled and the logits "
                            f"× 1/m = ×{1 / m:g} (base/width); one tensor cannot be both by its init, and the "
                            f"multiplier is the forward, which initlab cannot change: multiply the logits by "
                            f"{1 / m:g} (or use mup.MuSharedReadout)")
                ctx.notes.append(f"mup: {site.path} is tied to the readout {alias}; multiply the logits by base/width "
                                 f"= {1 / m:g} in the forward (initlab plans the embedding's law only)")
            continue
        if info.role != "kernel" or len(info.shape) < 2:
            continue
        i, o = _dims(site)
        m_in = ws.mult(i)
        biases = biases_of.get(site.path, [])
        if ws.is_width(i) and not ws.is_width(o):
            readouts[site.path] = _readout(ctx, site, biases, m_in, zero)
            continue
        if ws.is_width(i):
            for b in biases:
                _bias(ctx, b, m_in)
    for name, _ in ctx.model.named_parameters():  # every tensor once, under its first name
        site = lr_site.get(name)
        ctx.lr_scales[name] = readouts.get(name) or _lr(widths[name], site)
    for site in ctx.known_sites:
        s = ctx.lr_scales.get(site.path)
        if s is not None:
            _append_why(ctx, site, f"lr: {s.why}")
    if ctx.example_input is not None:
        qk = _attention_qk(ctx.trace.flow)
        attention = attention or bool(qk)
        for name in qk:
            site = ctx.site(name)
            if not _ATTN.search(site.path):  # not already told above
                _append_why(ctx, site, _ATTN_TEXT)
    if readouts:
        ctx.notes.append(f"mup: readouts (fan-in a width dimension, fan-out not: {', '.join(readouts)}) get μP's "
                         "output rule; a hidden layer listed here has a fan-out the base model does not scale")
    if attention:
        ctx.notes.append(f"mup: {_ATTN_TEXT}.")


def _biases_by_kernel(ctx: PresetContext) -> dict[str, list[ParamSite]]:
    """Each kernel's bias sites: its layer's (a known module), or those the trace paired with it (HF Conv1D's
    ``addmm(b, x, W)``: a traced bias is a layer of its own, its reading names the kernel)."""
    out: dict[str, list[ParamSite]] = {}
    kernels: dict[int, str] = {id(s.layer): s.path for s in ctx.known_sites if s.info.role == "kernel"}
    for s in ctx.known_sites:
        if s.info.role != "bias":
            continue
        reading = s.info.meta.get("reading") if s.layer.attrs.get("traced") else None
        kernel = getattr(reading, "kernel", None) if reading is not None else kernels.get(id(s.layer))
        if kernel is not None:
            out.setdefault(ctx.site(kernel).path, []).append(s)
    return out


def _attention_qk(flow: Any) -> list[str]:
    """The kernels whose outputs are the query and key operands of a traced ``scaled_dot_product_attention``
    (walked back through views, transposes and a bias add)."""
    from ...theory.dataflow import ADD, TRANSPARENT

    out: list[str] = []
    for n in flow.nodes:
        if "scaled_dot_product_attention" not in n.op:
            continue
        for i in n.inputs[:2]:
            for _ in range(32):
                node = flow.nodes[i]
                if node.kernel is not None:
                    if node.kernel not in out:
                        out.append(node.kernel)
                    break
                acts = [j for j in node.inputs if not flow.is_constant(j)]
                if (node.op not in TRANSPARENT and node.op not in ADD) or len(acts) != 1:
                    break
                i = acts[0]
    return out


def _append_why(ctx: PresetContext, site: ParamSite, text: str) -> None:
    for ch in ctx.choices.get(site.path, []):
        ch.why = f"{ch.why}; {text}"


def _bias(ctx: PresetContext, site: ParamSite, m_in: float) -> None:
    chs = ctx.choices.get(site.path, [])
    if not chs or chs[0].initializer is None or chs[0].label is not None:
        return
    c = math.sqrt(m_in)
    new = _scaled(chs[0].initializer, c)
    if new is None:
        raise ValueError(f"preset 'mup': cannot scale {type(chs[0].initializer).__name__} for {site.path!r}.")
    ctx.set(site, new, f"{chs[0].why}, × √m_in = ×{c:.4g}: the bias law at the base fan-in, constant in width "
            "(mup's rescale_linear_bias)", fans=chs[0].fans)


def _readout(ctx: PresetContext, site: ParamSite, biases: list[ParamSite], m: float, zero: bool) -> LrScale:
    fan_in = site.info.fans["torch"].fan_in if site.info.fans.get("torch") else site.info.fans["true"].fan_in
    mu = _is_mureadout(site.module)
    seen = _readout_of(ctx, site)
    if ctx.example_input is not None and not seen:
        seen = ("; but the trace shows its output feeds other ops: if it is a hidden layer, its fan-out must be a "
                "width dimension too — give the base model the scaled size (mup would refuse this model)")
    if zero:
        ctx.set(site, Zeros(), f"μP readout (fan-in width, fan-out not{seen}): zeros, as "
                "MuReadout(readout_zero_init=True)", fans=site.info.fans.get("true"))
        for b in biases:
            ctx.set(b, Zeros(), "μP readout bias: zeros, as MuReadout(readout_zero_init=True)", fans=None)
    elif mu:
        c = math.sqrt(m)
        ctx.set(site, RandomUniform(-c / math.sqrt(fan_in), c / math.sqrt(fan_in)),
                f"mup.MuReadout (its forward divides by m = {m:g}): torch's U(±1/√fan_in) × √m = U(±1/√base fan_in)"
                f", as set_base_shapes' MuReadout._rescale_parameters{seen}", fans=site.info.fans.get("true"))
    else:
        c = 1.0 / math.sqrt(m)
        ctx.set(site, RandomUniform(-c / math.sqrt(fan_in), c / math.sqrt(fan_in)),
                f"μP readout (fan-in width, fan-out not{seen}) in a plain layer: MuReadout's weights / m, since "
                f"initlab cannot put its 1/m multiplier in the forward: torch's U(±1/√fan_in) ÷ √m = ÷{1 / c:.4g}, "
                "var ∝ 1/fan_in² (Yang et al. 2022, Table 3)", fans=site.info.fans.get("true"))
    if not zero:
        for b in biases:
            chs = ctx.choices.get(b.path, [])
            new = _scaled(chs[0].initializer, math.sqrt(m)) if chs and chs[0].initializer is not None else None
            if new is not None:
                ctx.set(b, new, f"μP readout bias: torch's law × √m = ×{math.sqrt(m):.4g} (MuReadout rescales it; "
                        "the 1/m multiplier does not touch the bias)", fans=chs[0].fans)
    if mu:
        return LrScale(1.0, m, f"MuReadout weight, vector-like: Adam lr × 1, SGD lr × m = ×{m:g}")
    return LrScale(1.0 / m, 1.0 / m, f"plain readout standing for MuReadout's W/m: Adam and SGD lr ÷ m = ÷{m:g}")


register_preset("mup", mup_preset, description="μP (Tensor Programs V): torch's init at a base width scaled with "
                "width as mup.set_base_shapes does; plan.param_groups(lr) gives MuAdam's per-layer learning rates",
                options=MUP_OPTIONS)
