"""``auto`` on transformers: the ``residual`` option, which scales every residual branch so that the stream's
variance stays bounded at any depth, and the embedding rules (untied, tied to the readout).

The residual streams come from the plan's trace (:attr:`PresetContext.residual_streams`: each residual add,
its branch's output projection, N branches and L blocks per stream, pre-/post-LN); the parts of each branch
(value kernel, the kernels that read the branch input, the norm whose output is the skip) from
:func:`initlab.theory.branches.branch_roles`. Factors multiply what ``auto`` chose for a tensor (its
activation-aware law), as the papers multiply Xavier; a branch that ends in a normalization (ResNet's
``bn2``) has that norm's scale and shift multiplied instead, since the norm undoes any scale before it.

========================  ====================================================================================
``residual=``             what it does (N: branches in the stream, L: its blocks; encoder N_e, decoder M)
========================  ====================================================================================
``"gpt2"``                every branch's output projection (weight and bias) × 1/√N — Radford et al. 2019 §2.3
                          ("scale the weights of residual layers by 1/√N"), Megatron-LM σ/√(2L), transformers'
                          GPT-2 ``c_proj``: the N branches add about one input variance in total, so the stream's
                          RMS stays ≈ √2× its input at any depth instead of growing like √N.
``"deepnet"``             DeepNorm (Wang et al. 2022, arXiv:2203.00555, Fig. 2; torchscale): β on the value
                          kernel, the output projection and every FFN kernel (q, k untouched): β = (8L)^-1/4
                          (encoder-only or decoder-only), 0.87·(N_e⁴M)^-1/16 (encoder of an encoder–decoder),
                          (12M)^-1/4 (its decoder). DeepNorm's α (x_{l+1} = LN(α·x_l + G(x_l)), α = (2L)^1/4,
                          0.81·(N_e⁴M)^1/16, (3M)^1/4) is a forward change; on a post-LN stream ``deepnet_alpha=
                          "fold"`` (default) reproduces it at init exactly: every norm whose output is a skip gets
                          γ, β × α (the first skip's embedding tables × α when no norm makes it) and the kernels
                          that read the branch input ÷ α — the forward at init is DeepNorm's, but α is then a
                          trained γ, not a constant. Pre-LN streams get β only.
``"tfixup"``              T-Fixup (Huang et al. 2020, ICML; layer6ai-labs/T-Fixup): the value kernel, the output
                          projection and every FFN kernel × (9M)^-1/4 (a decoder, or a single stack with M = L),
                          × 0.67·N_e^-1/4 (the encoder of an encoder–decoder); the embedding tables that feed the
                          stream N(0, d^-1/2) × (9M)^-1/4 (× (9N_e)^-1/4 for the encoder's). The paper also
                          removes LayerNorm and warmup; here LayerNorm stays: this is its init only.
``"measured"``            data-driven, as a post step of ``apply``: one forward pass on ``example_input``; at each
                          residual add in execution order the output projection is multiplied by c = ρ·RMS(skip)/
                          RMS(branch), ρ = 1/√N, and the add sees c·branch, so every later block reads the
                          corrected stream: the stream's RMS grows at most by ∏(1 + 1/N)^1/2 ≤ √e at any depth
                          (exactly so when branch and skip are uncorrelated).
``"auto"`` (default)      ``"gpt2"`` on a pre-LN stream, ``"deepnet"`` (α folded) on a post-LN stream; a stream
                          whose branches end in a normalization or a layer scale (which set the branch's size
                          already) or that has an activation between its blocks (ResNet) is left alone.
``"none"``                no residual scaling.
========================  ====================================================================================

Embeddings: an untied table N(0, 1) — every coordinate at unit RMS, the scale of a normalized activation,
which the kernels after it (variance ∝ 1/fan_in) and the stream's branches assume at any width. A table tied
to the readout (GPT-2's ``wte`` = ``lm_head``) N(0, 1/√d): the readout's rule wins, since logits h·Eᵀ sum d
products of unit-RMS h (std σ·√d) and a std-√d logit saturates the softmax, while a 1/√d input embedding only
shrinks the first skip (Vaswani et al. 2017 scale it back by √d in the forward).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from ...initializers import (
    Constant,
    DeltaOrthogonal,
    Initializer,
    Ones,
    Orthogonal,
    RandomNormal,
    RandomUniform,
    TruncatedNormal,
    TruncNormal,
    VarianceScaling,
    Zeros,
)
from ...theory.branches import BranchRoles, branch_roles, scale_branches, stream_embeddings
from ...theory.streams import ResidualAdd, ResidualStream, _Graph
from ..context import PresetContext
from ..sites import ParamSite

__all__ = ["RESIDUAL_RULES", "embedding_choice", "residual_choices", "scaled"]

RESIDUAL_RULES = ("auto", "gpt2", "deepnet", "tfixup", "measured", "none")
_NORM_ROLES = ("norm_scale", "norm_shift")


def scaled(init: Initializer, f: float) -> Initializer | None:
    """``init`` with every value multiplied by ``f`` > 0 (the same family of law), or ``None`` when initlab
    cannot say that for this initializer."""
    if isinstance(init, Zeros):
        return init
    if isinstance(init, Constant):
        v = init.value * f
        return Zeros() if v == 0 else Ones() if v == 1 else Constant(v)
    if isinstance(init, RandomNormal):
        return RandomNormal(init.mean * f, init.stddev * f)
    if isinstance(init, RandomUniform):
        return RandomUniform(init.minval * f, init.maxval * f)
    if isinstance(init, TruncNormal):
        return TruncNormal(init.mean * f, init.std * f, init.a * f, init.b * f)
    if isinstance(init, TruncatedNormal):
        return TruncatedNormal(init.mean * f, init.stddev * f)
    if isinstance(init, VarianceScaling):
        return VarianceScaling(init.scale * f * f, init.mode, init.distribution, input_axes=init.input_axes,
                               output_axes=init.output_axes)
    if isinstance(init, (Orthogonal, DeltaOrthogonal)):
        return type(init)(gain=init.gain * f)
    return None


def _label(init: Initializer) -> str:
    from ..labels import _init_label

    return _init_label(init)


# ---- embeddings ---------------------------------------------------------------------------------------

def _readout_alias(ctx: PresetContext, site: ParamSite) -> str | None:
    """The name under which a tied embedding is also the readout (a kernel whose output is the model's output
    in the trace; without a trace, an ``nn.Linear``'s weight), else ``None``."""
    if not site.aliases:
        return None
    if ctx._trace is not None:
        from ..trace import _is_output

        flow = ctx.trace.flow
        for u in ctx.trace.reading(site.path).uses:
            if flow.nodes[u.node].kernel is not None and _is_output(flow, u.node):
                return next((a for a in site.aliases if a.rpartition(".")[0] == u.module), site.aliases[0])
        return None
    model = ctx.model
    for alias in site.aliases:
        owner, _, leaf = alias.rpartition(".")
        try:
            mod = model.get_submodule(owner) if isinstance(model, nn.Module) else None
        except AttributeError:
            continue
        if isinstance(mod, nn.Linear) and leaf == "weight":
            return alias
    return None


def embedding_choice(ctx: PresetContext, site: ParamSite) -> tuple[Initializer, str]:
    """auto's law for an embedding table (see the module docstring), and why."""
    d = int(site.info.shape[-1]) if site.info is not None else int(site.param.shape[-1])
    readout = _readout_alias(ctx, site)
    if readout is not None:
        std = d ** -0.5
        return RandomNormal(0.0, std), (
            f"tied to the readout {readout}: logits = h·Eᵀ sum d = {d} products of unit-RMS h, std σ·√d, so "
            f"σ = 1/√d = {std:.4g} keeps them O(1) (initial loss ≈ log of the vocabulary); as the embedding its "
            "rows then have RMS 1/√d, as in Vaswani et al. 2017 (who multiply them by √d in the forward) — the "
            "readout's rule wins, since a std-√d logit saturates the softmax while a small input embedding only "
            "shrinks the first skip")
    return RandomNormal(0.0, 1.0), (
        f"embedding rows are the layer's output: N(0, 1) puts each of the d = {d} coordinates at unit RMS, the "
        "scale of a normalized activation, which the kernels after it (var ∝ 1/fan_in) and the residual "
        "branches are matched to at any width")


# ---- residual branches --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Rule:
    name: str
    default: bool
    reason: str = ""


class _Scaler:
    """Multiplies the choices ``auto`` made, one parameter (or one slice) at a time, and says so in ``why``."""

    def __init__(self, ctx: PresetContext) -> None:
        self.ctx = ctx
        self.biases = {r.kernel: r.name for r in ctx.trace.readings.values() if r.role == "bias" and r.kernel}
        self.count = 0

    def mul(self, name: str | None, f: float, text: str, *, label: str | None = None, bias: bool = True) -> bool:
        if name is None:
            return False
        ctx = self.ctx
        try:
            site = ctx.site(name)
        except KeyError:
            return False
        if site.path in ctx.ruled:
            return False
        old = ctx.choices.get(site.path, [])
        new, hit = [], False
        for ch in old:
            if ch.fixed or ch.initializer is None or (label is not None and ch.label != label):
                new.append(ch)
                continue
            init = scaled(ch.initializer, f)
            if init is None:
                ctx.notes.append(f"{site.path}: {text} not applied — initlab cannot scale {_label(ch.initializer)}")
                new.append(ch)
                continue
            new.append(dataclasses.replace(ch, initializer=init, why=f"{ch.why}; {text}"))
            hit = True
        ctx.choices[site.path] = new
        self.count += hit
        if bias and label is None and name in self.biases:
            self.mul(self.biases[name], f, f"{text} (the bias of {name})", bias=False)
        return hit


def _trailing_norm(ctx: PresetContext, add: ResidualAdd) -> tuple[str, ...]:
    return tuple(p for p in add.out_scales if ctx.trace.reading(p).role in _NORM_ROLES)


def _layer_scale(ctx: PresetContext, add: ResidualAdd) -> tuple[str, ...]:
    return tuple(p for p in add.out_scales if ctx.trace.reading(p).role == "branch_scale")


def _out_params(ctx: PresetContext, add: ResidualAdd) -> tuple[tuple[str, ...], str]:
    """What multiplies the branch's output: its trailing norm's scale and shift if it ends in one, else the
    output projection and its bias."""
    norm = _trailing_norm(ctx, add)
    if norm:
        return norm, f"the branch ends in a normalization, so its scale and shift ({', '.join(norm)})"
    return tuple(p for p in (add.out_proj, add.out_bias) if p), "the output projection"


def _default(ctx: PresetContext, s: ResidualStream) -> _Rule:
    if any(_layer_scale(ctx, a) for a in s.adds):
        return _Rule("none", True, "its branches end in a layer scale, which sets their size already")
    if any(_trailing_norm(ctx, a) for a in s.adds):
        return _Rule("none", True, "its branches end in a normalization, which sets their size already")
    if s.placement == "pre":
        return _Rule("gpt2", True, "the default for a pre-LN stream")
    if s.placement == "post":
        return _Rule("deepnet", True, "the default for a post-LN stream")
    return _Rule("none", True, "an activation sits between its blocks (placement '?', a ResNet), not a pre- or "
                 "post-LN stream")


def _roles(ctx: PresetContext, s: ResidualStream, g: _Graph) -> list[BranchRoles]:
    return [branch_roles(ctx.trace.flow, a, g) for a in s.adds]


def _encoder_decoder(ctx: PresetContext, streams: list[ResidualStream], g: _Graph) -> dict[int, str]:
    """stream index -> "encoder"/"decoder" for an encoder–decoder pair (the decoder's adds depend on the
    encoder's output); every other stream is a single stack."""
    tf = [s for s in streams if s.placement in ("pre", "post")]
    if len(tf) != 2:
        return {}
    enc, dec = tf
    if enc.adds[-1].node in g.ancestors(dec.adds[-1].node):
        return {enc.index: "encoder", dec.index: "decoder"}
    return {}


def _factors(rule: str, part: str, L: int, pair: dict[str, int]) -> tuple[float, float, str]:
    """(β, α, the formula in words) of DeepNet, or (factor, 0, formula) of T-Fixup."""
    n_e, m = pair.get("encoder", L), pair.get("decoder", L)
    if rule == "deepnet":
        if part == "encoder":
            return (0.87 * (n_e ** 4 * m) ** (-1 / 16), 0.81 * (n_e ** 4 * m) ** (1 / 16),
                    f"encoder of an encoder–decoder: β = 0.87·(N⁴M)^-1/16, α = 0.81·(N⁴M)^1/16, N = {n_e}, M = {m}")
        if part == "decoder":
            return ((12 * m) ** -0.25, (3 * m) ** 0.25,
                    f"decoder of an encoder–decoder: β = (12M)^-1/4, α = (3M)^1/4, M = {m}")
        return (8 * L) ** -0.25, (2 * L) ** 0.25, f"a single stack of L = {L} blocks: β = (8L)^-1/4, α = (2L)^1/4"
    if part == "encoder":
        return 0.67 * n_e ** -0.25, 0.0, f"encoder: × 0.67·N^-1/4, N = {n_e}"
    return (9 * m) ** -0.25, 0.0, (f"decoder: × (9M)^-1/4, M = {m}" if part == "decoder"
                                   else f"a single stack: × (9L)^-1/4, L = {L}")


def residual_choices(ctx: PresetContext, rule: str, alpha: str) -> None:
    """Apply ``residual=rule`` (see the module docstring) to the choices ``auto`` made."""
    if rule == "none":
        return
    if ctx.example_input is None:
        if rule != "auto":
            raise ValueError(f"options['residual']: {rule!r} scales the residual branches that a forward pass shows; "
                             "pass example_input=<a batch> (or residual='none').")
        if _looks_stacked(ctx.model):
            ctx.notes.append("residual: auto scales residual branches only where a forward pass shows them; with "
                             "example_input=<a batch> it would look for residual streams.")
        return
    streams = ctx.residual_streams
    if not streams:
        if rule != "auto":
            ctx.notes.append(f"residual={rule!r}: the forward pass shows no residual stream; nothing was scaled.")
        return
    g = _Graph(ctx.trace.flow)
    parts = _encoder_decoder(ctx, streams, g)
    blocks = {parts[s.index]: s.n_blocks for s in streams if s.index in parts}
    sc = _Scaler(ctx)
    measured: dict[int, tuple[tuple[str, ...], float, int]] = {}
    embedded: set[str] = set()
    for s in streams:
        r = _default(ctx, s) if rule == "auto" else _Rule(rule, False)
        where = f"stream '{s.name or '<model>'}' ({s.placement}-LN, N = {s.n_branches} branches, L = {s.n_blocks} blocks)"
        if r.name == "none":
            ctx.notes.append(f"residual='auto': {where} left as is — {r.reason}.")
            continue
        tag = f"residual='{r.name}'" + (f" ({r.reason})" if r.default else "")
        before = sc.count
        if r.name == "gpt2":
            _gpt2(ctx, sc, s, tag)
        elif r.name == "measured":
            _measured(ctx, s, tag, g, measured)
        else:
            _deep(ctx, sc, s, tag, r.name, parts.get(s.index, "single"), blocks, alpha, g, embedded)
        if r.name != "measured":
            ctx.notes.append(f"{tag}: {where}: {sc.count - before} choices scaled.")
    if measured:
        x = ctx.example_input
        ctx.add_post_step("residual_measured", lambda model: scale_branches(model, x, measured),
                          f"residual='measured': one forward pass on example_input; at each of {len(measured)} residual "
                          "adds in execution order the branch's output projection × c = RMS(skip)/(√N·RMS(branch)), "
                          "and the next blocks see the corrected stream")


def _looks_stacked(model: Any) -> bool:
    """Whether the model holds a stack of ≥ 2 same-type blocks (where residual streams usually live)."""
    if not isinstance(model, nn.Module):
        return False
    return any(isinstance(m, nn.ModuleList) and len(m) >= 2 and len({type(c) for c in m}) == 1
               for m in model.modules())


def _gpt2(ctx: PresetContext, sc: _Scaler, s: ResidualStream, tag: str) -> None:
    n = s.n_branches
    f = n ** -0.5
    for k, a in enumerate(s.adds, 1):
        params, what = _out_params(ctx, a)
        text = (f"{tag}: × 1/√N = 1/√{n} = {f:.4g} on {what} of branch {k} of N = {n} into stream "
                f"'{s.name or '<model>'}': the N branches add about one input variance in total, so the stream's "
                "RMS stays ≈ √2× its input at any depth instead of growing like √N (Radford et al. 2019 §2.3; "
                "Megatron-LM σ/√(2L))")
        for p in params:
            sc.mul(p, f, text, bias=False)


def _measured(ctx: PresetContext, s: ResidualStream, tag: str, g: _Graph,
              measured: dict[int, tuple[tuple[str, ...], float, int]]) -> None:
    rho = s.n_branches ** -0.5
    for a in s.adds:
        params, what = _out_params(ctx, a)
        roles = branch_roles(ctx.trace.flow, a, g)
        measured[a.node] = (params, rho, roles.skip_operand)
        text = (f"{tag}: then × c, measured when apply runs (post step residual_measured): c = ρ·RMS(skip)/"
                f"RMS(branch) with ρ = 1/√N = 1/√{s.n_branches} at this add, on {what}, so the stream's RMS grows "
                "at most ∏(1 + 1/N)^1/2 ≤ √e at any depth")
        for p in params:
            site = ctx.site(p)
            ctx.choices[site.path] = [dataclasses.replace(c, why=f"{c.why}; {text}") if not c.fixed else c
                                      for c in ctx.choices.get(site.path, [])]


def _deep(ctx: PresetContext, sc: _Scaler, s: ResidualStream, tag: str, rule: str, part: str,
          blocks: dict[str, int], alpha_mode: str, g: _Graph, embedded: set[str]) -> None:
    beta, alpha, formula = _factors(rule, part, s.n_blocks, blocks)
    paper = ("DeepNet, Wang et al. 2022" if rule == "deepnet" else "T-Fixup, Huang et al. 2020")
    where = f"stream '{s.name or '<model>'}'"
    for k, roles in enumerate(_roles(ctx, s, g), 1):
        a = roles.add
        text = f"{tag}: × {beta:.4g} ({formula}; {paper}) on branch {k} of {where}"
        out, what = _out_params(ctx, a)
        for p in out:
            sc.mul(p, beta, f"{text}, {what}", bias=False)
        if roles.kind == "attention":
            if roles.mha is not None:
                sc.mul(roles.mha, beta, f"{text}, the value block of nn.MultiheadAttention's in_proj", label="v")
            elif roles.value is None:
                ctx.notes.append(f"{tag}: {a.out_proj}'s attention has no value kernel initlab can find; only the "
                                 "output projection was scaled.")
            elif roles.packed:
                ctx.notes.append(f"{tag}: {roles.value} packs q, k and v in one kernel; the factor belongs to its "
                                 "value block, which initlab cannot single out — left unscaled.")
            else:
                sc.mul(roles.value, beta, f"{text}, the value kernel")
        else:
            for kern in a.branch_kernels[:-1]:
                sc.mul(kern, beta, f"{text}, an FFN kernel")
    if rule == "deepnet":
        _fold_alpha(ctx, sc, s, tag, alpha, alpha_mode, g)
    else:
        _tfixup_embeddings(ctx, s, tag, part, blocks, g, embedded)


def _fold_alpha(ctx: PresetContext, sc: _Scaler, s: ResidualStream, tag: str, alpha: float, mode: str,
                g: _Graph) -> None:
    if mode == "none":
        ctx.notes.append(f"{tag}: DeepNorm's α = {alpha:.4g} multiplies the skip in the forward "
                         "(x_{l+1} = LN(α·x_l + G(x_l))); deepnet_alpha='none' leaves it out (β only).")
        return
    if s.placement != "post":
        ctx.notes.append(f"{tag}: stream '{s.name}' is {s.placement}-LN: its skip is not a norm's output, so "
                         f"DeepNorm's α = {alpha:.4g} cannot be folded into the init; β only.")
        return
    text = (f"{tag}: DeepNorm's α = {alpha:.4g} folded in (x_(l+1) = LN(α·x_l + G(x_l)) at init: the skip's norm "
            "× α and the branch's input kernels ÷ α; α is then a trained scale, not a constant)")
    done: set[str] = set()
    for roles in _roles(ctx, s, g):
        skip = roles.skip_norm or roles.skip_embeddings
        if not skip:
            ctx.notes.append(f"{tag}: the skip of {roles.add.out_proj}'s add is neither a norm's output nor a sum "
                             "of embeddings; α not folded there.")
            continue
        for p in skip:
            if p not in done:
                sc.mul(p, alpha, f"{text}: makes the skip α·x", bias=False)
                done.add(p)
                site = ctx.site(p)
                if site.aliases and roles.skip_embeddings:
                    ctx.notes.append(f"{tag}: {p} is tied ({', '.join(site.aliases)}): × α scales that use too.")
        for kern in roles.inputs:
            if kern not in done:
                sc.mul(kern, 1 / alpha, f"{text}: ÷ α, so the branch reads x_l as before", bias=False)
                done.add(kern)


def _tfixup_embeddings(ctx: PresetContext, s: ResidualStream, tag: str, part: str, blocks: dict[str, int],
                       g: _Graph, embedded: set[str]) -> None:
    n = blocks.get("encoder", s.n_blocks) if part == "encoder" else blocks.get("decoder", s.n_blocks)
    f = (9 * n) ** -0.25
    for p in stream_embeddings(ctx.trace.flow, s, g):
        if p in embedded or ctx.trace.reading(p).role not in ("embedding", "position_embedding", "token"):
            continue
        embedded.add(p)
        site = ctx.site(p)
        if site.path in ctx.ruled:
            continue
        d = int(site.param.shape[-1])
        std = d ** -0.5 * f
        why = (f"{tag}: T-Fixup's embedding N(0, d^-1/2) × (9·{n})^-1/4 = N(0, {std:.4g}), d = {d} "
               f"(Huang et al. 2020; it feeds stream '{s.name}')")
        keep = [c for c in ctx.choices.get(site.path, []) if c.fixed]
        ctx.set(site, RandomNormal(0.0, std), why, fans=None)
        ctx.choices[site.path].extend(keep)
