"""The ``hf`` preset: what a Hugging Face transformers model's own ``_init_weights`` draws — the same laws, and
with ``plan.apply(seed)`` the same values as ``torch.manual_seed(seed); model.init_weights()``.

The laws come from :mod:`initlab.plan.hf`: initlab's table for the base ``PreTrainedModel._init_weights``
(Llama, Mistral, Qwen2, OPT, GPT-NeoX, … every model that does not override it) and for GPT-2, BERT, T5 and
ViT, each entry naming the rule and the config attribute (``initializer_range``, ``initializer_factor``,
``n_layer``, ``d_model``, ``d_kv``, ``d_ff``, ``num_heads``); for any other model they are recorded by
running its own ``initialize_weights()`` on a meta-device copy. Each parameter gets the law it has in a freshly
built ``Model(config)``: a tied tensor once, from the rule of its own (source) name; an embedding's
``padding_idx`` row zero.

**The model's seed.** transformers draws every tensor from torch's global generator, one after the other in
its module walk, including draws that a later rule overwrites (GPT-2's ``c_proj`` is drawn by the ``Conv1D``
rule, then redrawn by the scaled-residual rule; a tied tensor is drawn once per name). With the option
``seeding="model"`` (the default ``"auto"`` picks it whenever the replay is exact) ``plan.apply(seed)``
replays that walk with a generator seeded with ``seed``, as a post step: the values are those of
``torch.manual_seed(seed); model.init_weights()`` run on the model with its ``_is_hf_initialized`` marks
cleared — bit for bit on CPU (tested on GPT-2, BERT, Llama, T5, ViT and recorded families) — except where that
re-init departs from construction: a padding row ``init_weights()`` redraws through a tied head (BERT's) is
zeroed again, as ``Model(config)`` has it, and the plan says so. The user's global RNG is not touched.
``seeding="by_name"``: initlab's usual guarantee instead (each entry from its own generator seeded by
``(seed, path)``; same laws, values independent of the other parameters).

**Meta models.** The buffers a model's ``_init_weights`` computes (RoPE's ``inv_freq``, BERT's
``position_ids``) are meta tensors on a model built under ``torch.device("meta")``; a post step gives them
the values ``init_weights()`` gives, whatever the seeding.
"""

from __future__ import annotations

from typing import Any

from ..apply import entry_seed
from ..context import PresetContext
from ..hf import Law, Program, _walk, final_laws, init_program, is_hf_model, law_initializer, replay
from ..registry import PresetOption, register_preset
from ..sites import Choice

__all__ = ["HF_OPTIONS", "hf_preset"]

HF_OPTIONS: tuple[PresetOption, ...] = (
    PresetOption("seeding", "auto", "what apply(seed) draws: 'model' (transformers' own order: the values of "
                 "torch.manual_seed(seed); model.init_weights()), 'by_name' (each entry from (seed, path), "
                 "initlab's usual guarantee) or 'auto' (model where the replay is exact, else by_name)",
                 choices=("auto", "model", "by_name")),
)


def _rows_label(w: Any) -> str:
    r0, r1 = w.rows
    return f"padding_idx={r0}" if "padding" in w.rule and r1 == r0 + 1 else f"rows {r0}:{r1}"


def _why(law: Law, earlier: list[Any]) -> str:
    why = law.full.rule if law.full is not None else ""
    if earlier:
        first = earlier[0].rule.split(": ", 1)[-1]
        why += (f"; overwrites {len(earlier)} earlier write{'s' if len(earlier) > 1 else ''} ({first}"
                f"{', …' if len(earlier) > 1 else ''}), which the replay still draws to keep transformers' order")
    return why


def hf_preset(ctx: PresetContext) -> None:
    """The laws of the model's own ``_init_weights`` (see the module docstring), and the replay post step."""
    model = ctx.model
    if not is_hf_model(model):
        raise ValueError(
            f"model: preset 'hf' reproduces a Hugging Face transformers model's own _init_weights, and "
            f"{type(model).__name__} is not a transformers PreTrainedModel; for other models use 'torch', 'keras', "
            "'flax' or 'auto'."
        )
    program = init_program(model)
    seeding = ctx.options.get("seeding", "auto")
    if seeding == "model" and not program.exact:
        raise ValueError(
            f"options['seeding']: 'model' replays transformers' draws, and for {type(model).__name__} the replay "
            f"would not be exact ({'; '.join(program.problems[:3])}); use seeding='by_name' (or 'auto')."
        )
    laws = final_laws(program, construction=True)
    reinit = final_laws(program, construction=False)
    source = (f"initlab's table of {', '.join(program.owners)}._init_weights" if program.source == "table" else
              f"{', '.join(program.owners)}._init_weights, recorded on a meta-device copy of the model")
    first = {id(p): n for n, p in reversed(list(model.named_parameters(remove_duplicate=False)))}
    mine: dict[str, tuple[str, list[Choice]]] = {}
    for site in ctx.sites:
        target = first[id(site.param)]  # the program's name for the tensor (named_parameters' first)
        law = laws.get(target)
        if law is None:
            ctx.leave(site, f"transformers' initialize_weights() never writes it ({source}): it keeps what its "
                      "module's constructor gave it")
            continue
        if law.full is None:
            ctx.leave(site, f"{law.rows[0].rule}: only some rows are written; initlab leaves the tensor as is")
            continue
        init, fans = law_initializer(law.full)
        if init is None:
            ctx.leave(site, f"{law.full.rule}: it copies computed values in, which initlab leaves as they are")
            continue
        earlier = [w for w in program.writes if w.target == target and w is not law.full
                   and program.writes.index(w) < program.writes.index(law.full)]
        ctx.set(site, init, _why(law, earlier), fans=fans)
        for w in law.rows:
            rinit, _ = law_initializer(w)
            if rinit is None:
                continue
            r0, r1 = w.rows
            ctx.set(site, rinit, w.rule, label=_rows_label(w), index=(slice(r0, r1),),
                    shape=(r1 - r0, *site.param.shape[1:]), fixed=True)
        mine[site.path] = (target, list(ctx.choices[site.path]))
    ctx.notes.append(f"preset 'hf': the laws of {source}.")
    _add_buffers(ctx)
    if seeding == "by_name" or not program.exact:
        why = "each entry from its own generator seeded by (seed, path): the model's laws, initlab's values"
        if not program.exact:
            why += f" (the model's own draws cannot be replayed: {'; '.join(program.problems[:3])})"
        ctx.notes.append(f"seeding='by_name': {why}.")
        return
    _add_replay(ctx, program, laws, reinit, mine)


def _add_buffers(ctx: PresetContext) -> None:
    """For a model on the meta device: the buffers its own ``_init_weights`` computes (RoPE's ``inv_freq``,
    BERT's ``position_ids``) get those values at apply, as ``init_weights()`` gives them — ``apply`` alone
    would leave them as uninitialized memory (``to_empty``). Each such module goes through its owner's
    ``_init_weights`` once more, with its own parameters put back after and the global RNG restored, so only
    the buffers change."""
    model = ctx.model
    paths = {id(m): p for p, m in model.named_modules()}
    todo: list[tuple[str, str, list[str]]] = []
    for path, module, owner in _walk(model):
        metas = [n for n, b in module._buffers.items() if b is not None and b.is_meta]
        if metas:
            todo.append((path, paths[id(owner)], metas))
    if not todo:
        return

    def step(target: Any) -> None:
        import torch

        for path, owner_path, _ in todo:
            module, owner = target.get_submodule(path), target.get_submodule(owner_path)
            own = [(p, p.detach().clone()) for p in module.parameters(recurse=False)]
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                owner._init_weights(module)
                for p, v in own:
                    p.copy_(v)

    names = [f"{p}.{n}" if p else n for p, _, ns in todo for n in ns]
    ctx.add_post_step("hf_buffers", step, f"the model's meta buffers ({', '.join(names[:4])}"
                      f"{', …' if len(names) > 4 else ''}) computed by its own _init_weights, as init_weights() "
                      "does (their modules' parameters and the global RNG are left as they were)")


def _add_replay(ctx: PresetContext, program: Program, laws: dict[str, Law], reinit: dict[str, Law],
                mine: dict[str, tuple[str, list[Choice]]]) -> None:
    redrawn = [t for t, c in laws.items() if c.full is not None and t in reinit and reinit[t].full is not None
               and not c.full.same_law(reinit[t].full)]
    rezeroed = [t for t, c in laws.items() if t not in redrawn and t in reinit
                and [w.rows for w in c.rows] != [w.rows for w in reinit[t].rows]]
    exceptions = []
    for t in rezeroed:
        via = next((w.path for w in reversed(program.writes) if w.target == t and w.rows is None), t)
        exceptions.append(f"{t} rows {', '.join(f'{w.rows[0]}:{w.rows[1]}' for w in laws[t].rows)} are set again "
                          f"as at construction (init_weights() redraws the tensor through the tied {via})")
    for t in redrawn:
        exceptions.append(f"{t} is drawn again from its construction law with its own generator (init_weights() "
                          "ends it with another rule through a tied name)")
    why = ("replays transformers' initialize_weights() draw by draw with a torch.Generator seeded with apply's seed: "
           "the values of torch.manual_seed(seed); model.init_weights() with the _is_hf_initialized marks cleared "
           "(bit for bit on CPU); parameters a rule took over are drawn into scratch, so the others keep their values"
           + ("; except: " + "; ".join(exceptions) if exceptions else ""))

    def owned() -> set[str]:
        return {t for p, (t, chs) in mine.items()
                if len(ctx.choices.get(p, [])) == len(chs) and all(a is b for a, b in zip(ctx.choices[p], chs, strict=True))}

    def step(model: Any, seed: int) -> None:
        into = owned()
        replay(model, program, seed, into=into)
        params = dict(model.named_parameters())
        for t in into:
            if t not in params:
                continue
            law = laws[t]
            if t in redrawn:
                init, fans = law_initializer(law.full)
                init(params[t], seed=entry_seed(seed, t), fans=fans)
            if t in redrawn or t in rezeroed:
                for w in law.rows:
                    rinit, _ = law_initializer(w)
                    if rinit is not None:
                        rinit(params[t].data[w.rows[0]:w.rows[1]], seed=entry_seed(seed, f"{t}[{_rows_label(w)}]"))

    ctx.add_post_step("hf_replay", step, why, seeded=True)


register_preset("hf", hf_preset, description="what the Hugging Face model's own _init_weights draws (laws; with "
                "seeding='model', its values)", options=HF_OPTIONS)
