"""``auto``'s ``residual`` option and embedding rules on transformers' GPT-2 (pre-LN) and BERT (post-LN), from
tests/zoo.py: each option's factors against the paper's formula at two depths, the plan's ``why`` for each,
the stream's growth with depth measured by a forward pass, the embedding laws (a tied table planned once),
and the errors.

The factors are read as ratios of the planned std (and, for a norm's constant scale, its mean) against the
same plan with ``residual='none'``: the option multiplies what ``auto`` chose, so the ratio is the paper's
factor exactly (float rounding only), whatever auto's base law for the tensor is.
"""

import math
import re

import pytest
import torch

import initlab
from tests import zoo

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("transformers")

DEPTHS = (2, 4)
W = 32  # the zoo's width (n_embd / hidden_size)


def _build(kind, depth, width=W):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model, x = zoo.gpt2(n_layer=depth, n_embd=width) if kind == "gpt2" else \
            zoo.bert(num_hidden_layers=depth, hidden_size=width)
    return model.eval(), x


def _plans(kind, depth, rule):
    model, x = _build(kind, depth)
    base = initlab.plan(model, "auto", example_input=x, options={"residual": "none"})
    return model, x, base, initlab.plan(model, "auto", example_input=x, options={"residual": rule})


def _block_part(path):
    """(block index, what the tensor is) for a tensor of a GPT-2 or BERT block, else (None, path)."""
    m = re.match(r"(?:transformer\.h|bert\.encoder\.layer)\.(\d+)\.(.*)$", path)
    return (int(m.group(1)), m.group(2)) if m else (None, path)


#: The tensors of a block that each rule scales (weights; a zero bias stays zero), by model.
OUT = {"gpt2": ("attn.c_proj.weight", "mlp.c_proj.weight"),
       "bert": ("attention.output.dense.weight", "output.dense.weight")}
FFN_IN = {"gpt2": ("mlp.c_fc.weight",), "bert": ("intermediate.dense.weight",)}
VALUE = {"gpt2": (), "bert": ("attention.self.value.weight",)}  # GPT-2's c_attn packs q, k, v: not scaled
QK = {"bert": ("attention.self.query.weight", "attention.self.key.weight")}
EMBEDDINGS = {"gpt2": ("transformer.wte.weight", "transformer.wpe.weight"),
              "bert": ("bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
                       "bert.embeddings.token_type_embeddings.weight")}


def _expected(kind, rule, depth, path):
    """(factor on the std, factor on the mean, absolute std or None) the paper's formula gives ``path``."""
    n_branches = 2 * depth
    block, part = _block_part(path)
    if rule == "gpt2":  # Radford et al. 2019: × 1/√N on every residual branch's output projection
        return (n_branches ** -0.5 if part in OUT[kind] else 1.0), 1.0, None
    if rule == "deepnet":  # Wang et al. 2022: β = (8L)^-1/4, α = (2L)^1/4 for one stack
        beta, alpha = (8 * depth) ** -0.25, (2 * depth) ** 0.25
        f = beta if part in OUT[kind] + FFN_IN[kind] + VALUE[kind] else 1.0
        if kind == "bert":  # post-LN: α folded — each skip's norm × α, the kernels reading it ÷ α
            if part in QK[kind] + VALUE[kind] + FFN_IN[kind]:
                f /= alpha
            skip_norm = path == "bert.embeddings.LayerNorm.weight" or (
                part in ("attention.output.LayerNorm.weight", "output.LayerNorm.weight")
                and not (block == depth - 1 and part == "output.LayerNorm.weight"))  # the last one feeds no add
            if skip_norm:
                return 1.0, alpha, None
        return f, 1.0, None
    if rule == "tfixup":  # Huang et al. 2020: × (9L)^-1/4; embeddings N(0, d^-1/2) × (9L)^-1/4
        f = (9 * depth) ** -0.25
        if path in EMBEDDINGS[kind]:
            return None, 1.0, W ** -0.5 * f
        return (f if part in OUT[kind] + FFN_IN[kind] + VALUE[kind] else 1.0), 1.0, None
    raise AssertionError(rule)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("kind", ["gpt2", "bert"])
@pytest.mark.parametrize("rule", ["gpt2", "deepnet", "tfixup"])
def test_residual_factors_are_the_papers(rule, kind, depth):
    _, _, base, plan = _plans(kind, depth, rule)
    assert [e.path for e in plan.entries] == [e.path for e in base.entries]
    scaled = 0
    for e, b in zip(plan.entries, base.entries, strict=True):
        f_std, f_mean, absolute = _expected(kind, rule, depth, e.path)
        if absolute is not None:
            assert e.std == pytest.approx(absolute, rel=1e-12), e.path
        elif b.std:
            assert e.std / b.std == pytest.approx(f_std, rel=1e-12), (e.path, e.std / b.std, f_std)
        else:
            assert e.std == 0, e.path
        assert e.mean == pytest.approx(b.mean * f_mean, rel=1e-12, abs=1e-15), (e.path, e.mean, b.mean)
        if (f_std not in (None, 1.0) and b.std) or absolute is not None or f_mean != 1.0:
            scaled += 1
            assert f"residual='{rule}'" in e.why, e.path
    assert scaled >= 2 * depth


def test_each_rule_explains_itself_in_why_and_notes():
    _, _, _, p = _plans("gpt2", 2, "gpt2")
    why = p["transformer.h.1.mlp.c_proj.weight"].why
    assert "1/√N = 1/√4" in why and "Radford et al. 2019" in why
    assert any("stream 'transformer.h' (pre-LN, N = 4 branches, L = 2 blocks)" in n for n in p.notes)

    _, _, _, p = _plans("bert", 2, "deepnet")
    assert "β = (8L)^-1/4" in p["bert.encoder.layer.0.output.dense.weight"].why
    assert "DeepNet, Wang et al. 2022" in p["bert.encoder.layer.0.output.dense.weight"].why
    assert "DeepNorm's α = 1.414 folded in" in p["bert.encoder.layer.0.attention.output.LayerNorm.weight"].why
    assert "÷ α" in p["bert.encoder.layer.0.attention.self.query.weight"].why
    _, _, _, p = _plans("gpt2", 2, "deepnet")
    assert any("packs q, k and v" in n for n in p.notes)  # what it could not do, said
    assert any("pre-LN" in n and "β only" in n for n in p.notes)

    _, _, _, p = _plans("bert", 2, "tfixup")
    assert "T-Fixup, Huang et al. 2020" in p["bert.encoder.layer.1.output.dense.weight"].why
    assert "(9·2)^-1/4" in p["bert.embeddings.position_embeddings.weight"].why

    _, _, _, p = _plans("gpt2", 2, "auto")
    assert "residual='gpt2' (the default for a pre-LN stream)" in p["transformer.h.0.attn.c_proj.weight"].why
    _, _, _, p = _plans("bert", 2, "auto")
    assert "residual='deepnet' (the default for a post-LN stream)" in p["bert.encoder.layer.0.output.dense.weight"].why


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_measured_puts_each_branch_at_skip_over_sqrt_n(kind):
    model, x, base, plan = _plans(kind, 3, "measured")
    n = 6
    # the plan itself only says what apply will measure; the factors come from the post step
    assert [e.std for e in plan.entries] == [e.std for e in base.entries]
    (step,) = [s for s in plan.post_steps if s.name == "residual_measured"]
    assert f"at each of {n} residual adds" in step.why
    out = OUT[kind][0]
    assert "ρ = 1/√N = 1/√6" in plan[f"{'transformer.h' if kind == 'gpt2' else 'bert.encoder.layer'}.0.{out}"].why
    plan.apply(seed=0)
    # After apply, one more forward pass on the same example input (eval mode: deterministic) reads every add:
    # the post step multiplied each branch's last linear map by c = RMS(skip)/(√N·RMS(branch)) in execution
    # order, with the later blocks seeing the corrected stream, so each ratio is 1/√N up to float32 rounding.
    (stream,) = initlab.trace_model(model, x).streams
    assert stream.n_branches == n
    ratios = [a.ratio for a in stream.adds]
    assert ratios == pytest.approx([n ** -0.5] * n, rel=1e-4)
    # and without it, the ratios are not already there
    model0, x0 = _build(kind, 3)
    base.apply(seed=0)
    before = [a.ratio for a in initlab.trace_model(model0, x0).streams[0].adds]
    assert max(abs(r * math.sqrt(n) - 1) for r in before) > 0.2


def _growth(depth, rule, seed=0):
    """RMS of the residual stream after the last block / RMS of the stream's input (the embeddings' sum), GPT-2
    (pre-LN) of width 32, on 8 sequences of 16 tokens."""
    model, _ = _build("gpt2", depth)
    ids = torch.randint(1, zoo.VOCAB, (8, 16), generator=torch.Generator().manual_seed(1))
    initlab.plan(model, "auto", example_input={"input_ids": ids}, options={"residual": rule}).apply(seed=seed)
    seen = {}
    hook = model.transformer.h[-1].register_forward_hook(lambda m, i, o: seen.setdefault("out", o[0]))
    try:
        with torch.no_grad():
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    finally:
        hook.remove()

    def rms(t):
        return float(t.double().pow(2).mean().sqrt())

    return rms(seen["out"]) / rms(hidden[0])


def test_auto_keeps_the_pre_ln_stream_bounded_at_depth_where_none_grows_like_sqrt_l():
    # Pre-LN: every branch reads a normalized stream, so each of the 2L branches adds about the same variance c
    # (relative to the stream's input): RMS² ∝ 1 + 2L·c, and from depth 4 to 32 the RMS grows by
    # √((1 + 64c)/(1 + 8c)) → √8 ≈ 2.83 once c ≳ 1 (auto's N(0, 1) position table and Glorot/Kaiming kernels
    # give c ≈ 1: measured growth 2.9 at depth 4). With 1/√N on the output projections the branches add ≈ c in
    # total at any depth: the ratio stays ≈ 1. Measured with this seed and 2 others: none 2.71-2.85,
    # auto 0.96-1.05, so the bounds (none > 0.8·√8, auto < 1.5) sit many seed-to-seed spreads (±0.1) away.
    none = _growth(32, "none") / _growth(4, "none")
    auto = _growth(32, "auto") / _growth(4, "auto")
    assert none > 0.8 * math.sqrt(8), none
    assert auto < 1.5, auto


# ---- embeddings ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("width", [32, 64])
def test_embeddings_untied_unit_tied_one_over_sqrt_d(width):
    model, x = _build("gpt2", 2, width)
    plan = initlab.plan(model, "auto", example_input=x)
    wte, wpe = plan["transformer.wte.weight"], plan["transformer.wpe.weight"]
    assert wpe.std == pytest.approx(1.0) and "N(0, 1)" in wpe.why and f"d = {width}" in wpe.why
    # tied: one entry under both names, the readout's law, and the plan says why and that it is filled once
    assert plan["lm_head.weight"] is wte and wte.aliases == ("lm_head.weight",)
    assert sum(e.param_path == "transformer.wte.weight" for e in plan.entries) == 1
    assert wte.std == pytest.approx(width ** -0.5, rel=1e-12)
    assert "tied to the readout lm_head.weight" in wte.why
    assert any("planned and filled once" in n for n in plan.notes)
    plan.apply(seed=0)
    assert model.lm_head.weight is model.transformer.wte.weight
    # 101·width values: SE of the sample std ≈ σ/√(2n) ≤ σ/90; 5 SE is under 6 %
    n = zoo.VOCAB * width
    assert float(model.lm_head.weight.detach().std()) == pytest.approx(width ** -0.5, rel=5 / math.sqrt(2 * n))


def test_untied_llama_embedding_is_unit_and_its_head_a_readout():
    model, x = zoo.build("llama")
    plan = initlab.plan(model, "auto", example_input=x)
    e = plan["model.embed_tokens.weight"]
    assert e.std == pytest.approx(1.0) and e.aliases == () and "tied" not in e.why
    assert plan["lm_head.weight"].path == "lm_head.weight"


# ---- errors --------------------------------------------------------------------------------------------

def test_bad_residual_option_names_it_and_the_choices():
    model, x = _build("gpt2", 2)
    with pytest.raises(ValueError, match=r"options\['residual'\]: expected one of 'auto', 'gpt2', 'deepnet', "
                                         r"'tfixup', 'measured', 'none', got 'megatron'"):
        initlab.plan(model, "auto", example_input=x, options={"residual": "megatron"})
    with pytest.raises(ValueError, match=r"options\['residual'\]: 'gpt2' .* pass example_input"):
        initlab.plan(model, "auto", options={"residual": "gpt2"})
    with pytest.raises(ValueError, match=r"options\['deepnet_alpha'\]"):
        initlab.plan(model, "auto", example_input=x, options={"residual": "gpt2", "deepnet_alpha": "none"})
