"""initlab.inspect on transformers (issue 14, item 7): the per-block residual stream (RMS of skip, branch
and sum, branch/stream ratio, growth), attention entropy per head and the mean token cosine (rank collapse,
Dong, Cordonnier & Loukas 2021) — each checked against a hand computation on the same model — and the
``residual_growth`` / ``token_collapse`` findings, whose ``fix`` plans ``auto`` with the residual option.

Models come from tests/zoo.py (small transformers configs, eager attention unless a test asks for SDPA).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import initlab
from initlab.inspect.findings import collapse_threshold
from initlab.inspect.report import Report
from tests import zoo

pytestmark = pytest.mark.usefixtures("one_thread")

transformers = pytest.importorskip("transformers")


def _call(model, x, **kw):
    return model(**x, **kw) if isinstance(x, dict) else model(x, **kw)


def _rms(t: torch.Tensor) -> float:
    return float(t.detach().double().pow(2).mean().sqrt())


def _hand_token_cosine(t: torch.Tensor) -> float:
    """Mean over sequences of the mean off-diagonal entry of the S×S cosine matrix (the O(S²) definition)."""
    u = nn.functional.normalize(t.detach().double(), dim=-1)
    g = u @ u.transpose(1, 2)  # (B, S, S)
    s = t.shape[1]
    off = g.sum((1, 2)) - g.diagonal(dim1=1, dim2=2).sum(-1)
    return float((off / (s * (s - 1))).mean())


def _hand_entropy(p: torch.Tensor) -> tuple[list[float], list[float | None]]:
    """Per head of (B, H, Q, K) probabilities: mean over (batch, query) rows of −Σ p log p, and of that over
    log(#keys with p > 0) for rows that see more than one key — written out row by row."""
    p = p.detach().double()
    b, h, q, _ = p.shape
    ent, norm = [], []
    for head in range(h):
        rows, nrows = [], []
        for i in range(b):
            for j in range(q):
                row = p[i, head, j]
                nz = row[row > 0]
                e = float(-(nz * nz.log()).sum())
                rows.append(e)
                if nz.numel() > 1:
                    nrows.append(e / math.log(nz.numel()))
        ent.append(sum(rows) / len(rows))
        norm.append(sum(nrows) / len(nrows) if nrows else None)
    return ent, norm


def _eager_probs(model, x) -> list[torch.Tensor]:
    with torch.no_grad():
        out = _call(model, x, output_attentions=True)
    return list(out.attentions)


# ---- the report's transformer sections on every transformers model of the zoo ----------------------------

#: Per model: [(stream, adds)], attention calls, heads per call.
SHAPES = {
    "gpt2": ([("transformer.h", 4)], 2, 4),
    "bert": ([("bert.encoder.layer", 4)], 2, 4),
    "llama": ([("model.layers", 4)], 2, 4),
    "t5": ([("encoder.block", 4), ("decoder.block", 6)], 6, 4),  # decoder: self + cross per block
    "vit": ([("vit.layers", 4)], 2, 4),
}


@pytest.mark.parametrize("name", zoo.HF)
def test_zoo_transformer_report_has_blocks_entropy_and_token_cosine(name):
    model, x = zoo.build(name)
    r = initlab.inspect(model, x, recommend=False)
    streams, n_attn, heads = SHAPES[name]
    got = {}
    for q in r.residual:
        got[q.stream_name] = got.get(q.stream_name, 0) + 1
    assert list(got.items()) == streams
    assert r.trends.axis == "residual stream" and r.trends.residual_streams == len(streams)
    for q in r.residual:
        assert q.block.startswith(q.stream_name + ".") and q.out_proj.startswith(q.block + ".")
        assert q.rms_skip > 0 and q.rms_branch > 0 and q.rms_out > 0 and math.isfinite(q.growth)
        assert q.ratio == pytest.approx(q.rms_branch / q.rms_skip, rel=1e-9)
        assert -1.0 <= q.token_cosine <= 1.0 and q.tokens == (zoo.SEQ if name != "vit" else 17)
        assert (q.token_cosine_in is not None) == (q.position == 1)
    assert len(r.attention) == n_attn
    for a in r.attention:
        assert a.heads == heads == len(a.entropy) == len(a.entropy_normalized)
        # entropy lies in [0, log K]; a near-uniform map at init sits close to the top
        assert all(0.0 <= e <= math.log(a.keys) + 1e-9 for e in a.entropy)
        assert all(v is None or 0.0 <= v <= 1.0 + 1e-9 for v in a.entropy_normalized)
    # the rendered report has both tables and the JSON schema carries them back
    text = str(r)
    assert "Residual streams" in text and "Attention (entropy per head" in text
    back = Report.from_json(r.to_json())
    assert back.residual == r.residual and back.attention == r.attention
    assert r.to_dict()["schema"] == "initlab.inspect/2"


# ---- hand computations -----------------------------------------------------------------------------------

def test_gpt2_stream_rms_ratio_growth_and_token_cosine_match_a_hand_computation():
    """Every number of the per-add rows against the tensors the blocks see, caught with forward hooks in a
    separate eval pass: the inspected run is the same forward (eval mode, same weights and input), so the
    only difference is float64 vs float32 summation of the mean squares (rel ~1e-7): rel=1e-5."""
    model, x = zoo.build("gpt2")
    blocks = model.transformer.h
    seen: dict[str, torch.Tensor] = {}

    def keep(key):
        def hook(_m, _args, out):
            seen[key] = (out[0] if isinstance(out, tuple) else out).detach().clone()
        return hook

    def keep_in(key):
        def hook(_m, args, kwargs):
            seen[key] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
        return hook

    handles = []
    for k, b in enumerate(blocks):
        handles += [b.register_forward_pre_hook(keep_in(f"in{k}"), with_kwargs=True),
                    b.attn.register_forward_hook(keep(f"attn{k}")), b.mlp.register_forward_hook(keep(f"mlp{k}")),
                    b.register_forward_hook(keep(f"out{k}"))]
    with torch.no_grad():
        _call(model, x)
    for h in handles:
        h.remove()

    r = initlab.inspect(model, x, recommend=False)
    x0 = seen["in0"]
    expected = []
    for k in range(len(blocks)):
        mid = seen[f"in{k}"] + seen[f"attn{k}"]
        expected.append((seen[f"in{k}"], seen[f"attn{k}"], mid, f"transformer.h.{k}.attn.c_proj.weight"))
        expected.append((mid, seen[f"mlp{k}"], seen[f"out{k}"], f"transformer.h.{k}.mlp.c_proj.weight"))
    assert len(r.residual) == len(expected)
    for q, (skip, branch, out, proj) in zip(r.residual, expected, strict=True):
        assert q.out_proj == proj and q.placement == "pre"
        assert q.rms_skip == pytest.approx(_rms(skip), rel=1e-5)
        assert q.rms_branch == pytest.approx(_rms(branch), rel=1e-5)
        assert q.rms_out == pytest.approx(_rms(out), rel=1e-5)
        assert q.ratio == pytest.approx(_rms(branch) / _rms(skip), rel=1e-5)
        assert q.growth == pytest.approx(_rms(out) / _rms(x0), rel=1e-5)
        assert q.token_cosine == pytest.approx(_hand_token_cosine(out), abs=1e-6)
    assert r.residual[0].token_cosine_in == pytest.approx(_hand_token_cosine(x0), abs=1e-6)
    assert r.trends.token_cosine_first == pytest.approx(_hand_token_cosine(x0), abs=1e-6)
    assert r.trends.token_cosine_last == pytest.approx(_hand_token_cosine(seen["out1"]), abs=1e-6)
    assert r.trends.residual_growth == pytest.approx(_rms(seen["out1"]) / _rms(x0), rel=1e-5)


def test_token_cosine_is_one_for_repeated_tokens_and_near_zero_for_random_ones():
    from initlab.inspect.tokens import token_cosine

    g = torch.Generator().manual_seed(0)
    same = torch.randn(3, 1, 64, generator=g).expand(3, 10, 64)
    assert token_cosine(same) == pytest.approx(1.0, abs=1e-12)
    rand = torch.randn(4, 16, 256, generator=g)
    # 4·16·15 pairwise cosines of independent directions in 256-d: each has sd 1/√256 = 0.0625, the mean
    # of 480 pairs (120 independent per sequence, 4 sequences) has sd ≈ 0.0625/√480 ≈ 0.003: 5 sd < 0.015
    assert abs(token_cosine(rand)) < 0.015
    assert token_cosine(rand) == pytest.approx(_hand_token_cosine(rand), abs=1e-12)
    assert token_cosine(torch.randn(2, 5)) is None and token_cosine(torch.randn(2, 1, 5)) is None


@pytest.mark.parametrize("name", ["gpt2", "bert", "llama", "t5", "vit"])
def test_eager_attention_entropy_matches_the_models_own_attention_probabilities(name):
    """The eager softmax the report reads is the tensor ``output_attentions`` returns: float64 sums of the
    same float32 probabilities, in another order: rel 1e-9 would do, 1e-7 leaves room."""
    model, x = zoo.build(name)
    with torch.no_grad():
        out = _call(model, x, output_attentions=True)
    probs = list(out.attentions) if name != "t5" else [
        *out.encoder_attentions, *[p for pair in zip(out.decoder_attentions, out.cross_attentions, strict=True)
                                   for p in pair]]
    r = initlab.inspect(model, x, recommend=False)
    assert [a.source for a in r.attention] == ["softmax"] * len(probs)
    if name == "t5":  # the report lists calls in execution order: encoder, then decoder self/cross per block
        assert [a.path.split(".")[0] for a in r.attention] == ["encoder"] * 2 + ["decoder"] * 4
    for a, p in zip(r.attention, probs, strict=True):
        ent, norm = _hand_entropy(p)
        assert (a.queries, a.keys) == tuple(p.shape[-2:])
        assert a.entropy == pytest.approx(ent, rel=1e-7)
        assert a.entropy_normalized == pytest.approx(norm, rel=1e-7)
    if name == "gpt2":  # causal: query 0 sees one key and is left out of the normalized mean
        assert _hand_entropy(probs[0])[0] != pytest.approx(_hand_entropy(probs[0])[1])


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_sdpa_entropy_is_recomputed_to_float_tolerance(name):
    """An SDPA model never shows its probabilities; the report recomputes them from the call's arguments
    (causal mask; Llama: 4 query heads over 2 key heads). Against the eager twin's own probabilities (same
    weights): the two paths differ by float32 round-off of q·kᵀ (~1e-6 relative on the logits, hence on
    the entropies): rel 1e-5."""
    eager, x = zoo.build(name)
    sdpa = _sdpa_twin(eager)
    probs = _eager_probs(eager, x)
    r = initlab.inspect(sdpa, x, recommend=False)
    assert [a.source for a in r.attention] == ["sdpa"] * len(probs)
    for a, p in zip(r.attention, probs, strict=True):
        ent, norm = _hand_entropy(p)
        assert a.entropy == pytest.approx(ent, rel=1e-5)
        assert a.entropy_normalized == pytest.approx(norm, rel=1e-5)


def _sdpa_twin(eager):
    """The same model and weights with ``attn_implementation="sdpa"`` (a copy of the config: transformers
    reads the implementation from it at every forward)."""
    cfg = copy.deepcopy(eager.config)
    cfg._attn_implementation = "sdpa"
    model = type(eager)(cfg)
    model.load_state_dict(eager.state_dict())
    assert model.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    return model.eval()


class _MHABlock(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc(self.ln2(x))


class _MHANet(nn.Module):
    def __init__(self, d: int = 16, heads: int = 4, depth: int = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_MHABlock(d, heads) for _ in range(depth))

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def test_multihead_attention_entropy_per_head_matches_its_own_weights():
    """nn.MultiheadAttention called with need_weights=False: the report calls it once more for per-head
    weights. Hand: the same module asked for them (need_weights=True, average_attn_weights=False) on the
    input its forward saw, under no_grad, where torch takes another kernel path than the inspected run
    (with grad): float32 round-off of the probabilities, ~1e-8 relative on the entropies (measured): rel
    1e-6."""
    torch.manual_seed(0)
    net = _MHANet().eval()
    x = torch.randn(3, 7, 16)
    inputs = []
    handles = [b.attn.register_forward_pre_hook(lambda m, a: inputs.append(a[0].detach().clone()))
               for b in net.blocks]
    with torch.no_grad():
        net(x)
        for h in handles:
            h.remove()
        probs = [b.attn(h, h, h, need_weights=True, average_attn_weights=False)[1]
                 for b, h in zip(net.blocks, inputs, strict=True)]
    r = initlab.inspect(net, x, recommend=False)
    assert [(a.path, a.source, a.heads) for a in r.attention] == [(f"blocks.{i}.attn", "mha", 4) for i in range(2)]
    for a, p in zip(r.attention, probs, strict=True):
        ent, norm = _hand_entropy(p)
        assert a.entropy == pytest.approx(ent, rel=1e-6)
        assert a.entropy_normalized == pytest.approx(norm, rel=1e-6)
    assert len(r.residual) == 4 and {q.placement for q in r.residual} == {"pre"}


# ---- findings -------------------------------------------------------------------------------------------

def _deep_gpt2_without_residual_scaling(layers: int = 24):
    """A 24-block, width-32 pre-LN GPT-2 initialized by ``auto`` with ``residual="none"``: fan-in weights
    on every branch, none scaled with depth. Measured: the stream's RMS grows ×5.1 over its 48 branches
    (c = 0.53 per branch, √(1 + cN)); the finding's threshold at τ = 10 is √11 = 3.32. The model's own
    GPT-2 init (c_proj std/√(2L)) stays at ×1.1."""
    model, x = zoo.gpt2(n_layer=layers, n_embd=32)
    model.eval()
    initlab.plan(model, "auto", example_input=x, options={"residual": "none"}).apply(seed=0)
    return model, x


def test_deep_pre_ln_gpt2_without_residual_scaling_has_residual_growth_recommending_the_residual_option():
    model, x = _deep_gpt2_without_residual_scaling()
    r = initlab.inspect(model, x)
    f = r.finding("residual_growth")
    assert f is not None and r.finding("token_collapse") is None
    ev = f.evidence
    assert ev["branches"] == 48 and ev["growth"] > math.sqrt(1 + ev["tolerance"])
    assert ev["accumulated_variance"] == pytest.approx(ev["growth"] ** 2 - 1)
    assert ev["growth"] == pytest.approx(r.trends.residual_growth)
    # 1/√N heals it (A/N ≤ τ): the GPT-2 option, and the fix plan carries it
    assert ev["residual_option"] == "gpt2"
    assert "residual" in f.message and "gpt2" in f.message
    assert f.fix is not None and f.fix.preset == "auto" and f.fix.options == {"residual": "gpt2"}


def test_deep_gpt2_with_its_own_init_has_no_residual_growth():
    """The same depth with GPT-2's own init (c_proj std 0.02/√(2L)): the control that makes the test above
    about the scaling, not about depth."""
    model, x = zoo.gpt2(n_layer=24, n_embd=32)
    r = initlab.inspect(model.eval(), x, recommend=False)
    assert r.finding("residual_growth") is None and r.trends.residual_growth < math.sqrt(11)


def test_default_auto_scales_the_branches_and_leaves_no_finding():
    """``auto``'s default ``residual="auto"`` (gpt2 on a pre-LN stream): the 24-block model above without
    the finding — the same check as the fix, from a plain plan."""
    model, x = zoo.gpt2(n_layer=24, n_embd=32)
    p = initlab.plan(model.eval(), "auto", example_input=x)
    p.apply(seed=0)
    r = initlab.inspect(model, x, recommend=False)
    assert r.finding("residual_growth") is None and r.trends.residual_growth < math.sqrt(11)


def test_fix_heals_residual_growth_with_the_residual_option():
    model, x = _deep_gpt2_without_residual_scaling()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = initlab.fix(model, x)
    assert res.note is None, res.note  # the installed auto takes the residual option
    assert res.plan.options == {"residual": "gpt2"}
    assert res.before.finding("residual_growth") is not None
    assert res.after.finding("residual_growth") is None
    assert res.after.trends.residual_growth < math.sqrt(11) < res.before.trends.residual_growth
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a dry run
    applied = initlab.fix(model, x, apply=True)
    assert applied.applied and initlab.inspect(model, x, recommend=False).finding("residual_growth") is None


def _bert_with_uniform_attention_and_loud_values():
    """A post-LN BERT forced into rank collapse: zero query/key weights make every attention row uniform, so
    the attention branch gives every token the same vector (the mean of the values); the value and output
    projections ×50 each make that branch dwarf the skip (measured branch/stream RMS ratio ~20), and the post-LN LayerNorm then leaves every token ≈ the same unit vector."""
    model, x = zoo.bert(num_hidden_layers=2)
    model.eval()
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            att = layer.attention.self
            for lin in (att.query, att.key):
                lin.weight.zero_()
                lin.bias.zero_()
            att.value.weight.mul_(50)
            layer.attention.output.dense.weight.mul_(50)
    return model, x


def test_forced_token_collapse_is_found_and_recommends_deepnet_for_post_ln():
    model, x = _bert_with_uniform_attention_and_loud_values()
    r = initlab.inspect(model, x)
    f = r.finding("token_collapse")
    assert f is not None
    c_star = collapse_threshold(zoo.SEQ)
    assert r.trends.token_cosine_last >= c_star > r.trends.token_cosine_first
    # uniform attention: every head's normalized entropy is 1 to float round-off
    assert all(v == pytest.approx(1.0, abs=1e-6) for a in r.attention for v in a.entropy_normalized)
    assert f.evidence["residual_option"] == "deepnet" and f.fix.options == {"residual": "deepnet"}


def test_deep_post_ln_bert_with_fan_in_init_collapses_and_fix_heals_it():
    """A 6-block post-LN BERT under ``auto`` with ``residual="none"``: measured token cosine 0.38 → 0.992
    (c* = 0.857 at 8 tokens). DeepNorm's β on the branches keeps the tokens apart."""
    model, x = zoo.bert(num_hidden_layers=6)
    model.eval()
    initlab.plan(model, "auto", example_input=x, options={"residual": "none"}).apply(seed=0)
    r = initlab.inspect(model, x)
    assert r.finding("token_collapse") is not None and r.finding("residual_growth") is None
    res = initlab.fix(model, x)
    assert res.note is None, res.note
    assert res.plan.options == {"residual": "deepnet"}
    assert res.after.finding("token_collapse") is None
    assert res.after.trends.token_cosine_last < collapse_threshold(zoo.SEQ)


def test_tokens_identical_in_the_input_are_not_a_collapse_along_the_stream():
    """One repeated token id with the position embeddings zeroed: the tokens are one vector before the first
    block already. The same forced model as above — the finding must name where the collapse happened."""
    model, x = _bert_with_uniform_attention_and_loud_values()
    with torch.no_grad():
        model.bert.embeddings.position_embeddings.weight.zero_()
    same = {"input_ids": torch.full_like(x["input_ids"], 5), "attention_mask": x["attention_mask"]}
    r = initlab.inspect(model, same, recommend=False)
    assert r.trends.token_cosine_first == pytest.approx(1.0, abs=1e-6)
    assert r.finding("token_collapse") is None


@pytest.mark.parametrize("name", zoo.HF)
def test_healthy_small_zoo_transformers_have_neither_finding(name):
    model, x = zoo.build(name)
    r = initlab.inspect(model, x, recommend=False)
    assert r.finding("residual_growth") is None and r.finding("token_collapse") is None
