"""The ``skipinit`` and ``fixup`` presets: ``auto``, then the last layer of every residual branch zeroed
(shown per parameter in the plan), or Fixup's rescaling as a post step
(:func:`~initlab.theory.residual.residual_init`)."""

from __future__ import annotations

from ...initializers import Zeros
from ...theory.residual import branches_from_streams, find_residual_branches, residual_init
from ..registry import PRESETS, register_preset


def _skipinit_preset(ctx) -> None:
    """``auto``, then the last layer of every residual branch zeroed — shown in the plan with the reason."""
    ctx.apply_preset("auto", options={"residual": "none"})  # this preset does the residual part
    # The forward pass plan() recorded when it has example_input (transformers' models, HF Conv1D,
    # projection shortcuts), else torch.fx.
    branches = branches_from_streams(ctx.model, ctx.residual_streams) if ctx.example_input is not None \
        else find_residual_branches(ctx.model)
    if not branches:
        ctx.notes.append("skipinit: found no x + f(x) branch; the plan is auto's")
        return
    last = {id(b.last_layer): b for b in branches}
    for site in ctx.known_sites:
        br = last.get(id(site.module))
        if br is None or site.path in ctx.ruled:
            continue
        ctx.set(site, Zeros(), f"last layer of residual branch {br.block_name!r} zeroed (SkipInit/Fixup): the "
                f"block is the identity at init, so the stream keeps its variance over {len(branches)} blocks "
                "instead of growing ≈ √(L+1); the layer still gets gradient", fans=None)


def _fixup_preset(ctx) -> None:
    ctx.apply_preset("auto", options={"residual": "none"})  # this preset does the residual part
    x = ctx.example_input
    branches = branches_from_streams(ctx.model, ctx.residual_streams) if x is not None else None
    # None (no branch found, or no example_input): residual_init looks again, and says so if it finds none.
    ctx.add_post_step("fixup", lambda model: residual_init(model, "fixup", branches=branches or None, example_input=x),
                      "Fixup (Zhang et al. 2019): each residual branch's last layer zeroed, its other m−1 "
                      "layers × L^(−1/(2m−2))")


def _register_presets() -> None:
    if "skipinit" not in PRESETS:
        register_preset("skipinit", _skipinit_preset,
                        description="auto, with the last layer of every residual branch zeroed")
    if "fixup" not in PRESETS:
        register_preset("fixup", _fixup_preset, description="auto, then Fixup's residual rescaling")


_register_presets()
