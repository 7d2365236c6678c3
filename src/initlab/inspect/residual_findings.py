"""The findings of a traced residual stream: ``residual_growth`` (the stream's RMS grows faster than √L
allows) and ``token_collapse`` (rank collapse of the tokens, Dong, Cordonnier & Loukas 2021), each naming
the residual option of ``initlab.plan(model, "auto", options={"residual": ...})`` that heals it. Judged
from :class:`initlab.inspect.rows.ResidualStats`; :func:`initlab.inspect.findings.judge` turns each
verdict ``(kind, layers, evidence, message)`` into a ``Finding``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "RESIDUAL_KINDS",
    "RESIDUAL_OPTIONS",
    "branch_label",
    "collapse_threshold",
    "residual_option_missing",
    "residual_verdicts",
]

#: Findings a residual-branch scaling heals (``initlab.plan(model, "auto", options={"residual": ...})``).
RESIDUAL_KINDS = ("residual_growth", "token_collapse")
#: The residual options of the transformer-aware ``auto`` preset (issue 14).
RESIDUAL_OPTIONS = ("gpt2", "deepnet", "tfixup", "measured", "none", "auto")


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


def branch_label(r: Any) -> str:
    """A residual add's label: the module of its branch's output projection."""
    return r.out_proj.rpartition(".")[0] or r.out_proj


def collapse_threshold(tokens: int) -> float:
    """The mean token cosine c* = 1 − 1/(S − 1) above which S tokens are collapsed (see
    :func:`residual_verdicts`)."""
    return 1.0 - 1.0 / (tokens - 1)


def residual_verdicts(residual: list[Any], tau: float) -> list[tuple[str, list[str], dict[str, Any], str]]:
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
    out: list[tuple[str, list[str], dict[str, Any], str]] = []
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
        out.append((
            "residual_growth",
            [branch_label(r) for h in growth_hits for r in h["rows"]],
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
        out.append((
            "token_collapse",
            [branch_label(h["rows"][-1]) for h in collapse_hits],
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
