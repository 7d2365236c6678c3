"""Preset ``mup`` and ``Plan.param_groups`` against the ``mup`` package (1.0.0) itself: the same models at two
widths, ``mup.set_base_shapes`` on torch's default init as the oracle of every parameter's std, and
``MuAdam``/``MuAdamW``/``MuSGD``'s parameter groups as the oracle of every learning-rate factor.

Statistical tolerance (every std comparison below). The oracle's std is a sample std s of n values pooled over
R independent draws (different seeds) of one parameter; initlab's is the planned law's exact σ. For n i.i.d.
values with kurtosis κ, Var(s²) ≈ (κ − 1)σ⁴/n, so by the delta method s/σ − 1 has standard error
√((κ − 1)/(4n)) (κ = 1.8 for a uniform law, 3 for a normal one). We accept |s/σ − 1| ≤ 6 SE: a false alarm has
probability < 1e-8 per comparison, while every μP factor under test is ≥ √2 away from its neighbours (widths
2× and 4× the base), i.e. log-ratio ≥ 0.35, which 6 SE excludes once n ≥ 60 for the uniform laws here
(n = R × numel ≥ 8 × 8 = 64 for the smallest tensors, the readout biases).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initlab
from initlab.plan.mup import BaseShapes, base_shapes, width_shapes

BASE, WIDTHS, R = 32, (64, 128), 8


def _mlp(w: int, readout: type = nn.Linear) -> nn.Module:
    return nn.Sequential(nn.Linear(10, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), readout(w, 8))


class _Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.heads = d // 16  # d_head fixed at 16: the head count is what grows (a width dimension nowhere)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.ln1(x)
        q, k, v = (f(h).view(b, t, self.heads, 16).transpose(1, 2) for f in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.o(a)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class _TinyLM(nn.Module):
    def __init__(self, d: int, readout: type = nn.Linear, vocab: int = 40) -> None:
        super().__init__()
        self.emb, self.pos = nn.Embedding(vocab, d), nn.Embedding(16, d)
        self.blocks = nn.Sequential(_Block(d), _Block(d))
        self.ln_f = nn.LayerNorm(d)
        self.head = readout(d, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids) + self.pos(torch.arange(ids.shape[1]))
        return self.head(self.ln_f(self.blocks(x)))


def _mup_oracle(make, w: int, mup) -> dict[str, torch.Tensor]:
    """Every parameter's values under mup's own workflow (torch default init, then set_base_shapes), R draws."""
    pooled: dict[str, list[torch.Tensor]] = {}
    for seed in range(R):
        torch.manual_seed(seed)
        model = make(w, mup.MuReadout)
        mup.set_base_shapes(model, make(BASE, mup.MuReadout))
        for n, p in model.named_parameters():
            pooled.setdefault(n, []).append(p.detach().reshape(-1))
    return {n: torch.cat(v) for n, v in pooled.items()}


def _assert_std(name: str, values: torch.Tensor, planned: float, kurtosis: float) -> None:
    s = float(values.std())
    if planned == 0.0:
        assert s == 0.0, f"{name}: mup draws std {s}, initlab plans zeros"
        return
    se = math.sqrt((kurtosis - 1) / (4 * values.numel()))
    assert abs(s / planned - 1) <= 6 * se, f"{name}: mup's sample std {s:.5g} vs initlab's {planned:.5g} (6 SE = {6 * se:.3g})"


def _kurtosis(entry) -> float:
    return 1.8 if "Uniform" in type(entry.initializer).__name__ or entry.initializer.name == "TorchDefault" else 3.0


@pytest.mark.parametrize("make", [_mlp, _TinyLM], ids=["mlp", "transformer"])
@pytest.mark.parametrize("w", WIDTHS)
def test_init_std_matches_mup_with_mureadout(make, w):
    mup = pytest.importorskip("mup")
    oracle = _mup_oracle(make, w, mup)
    plan = initlab.plan(make(w, mup.MuReadout), "mup", options={"base": make(BASE, mup.MuReadout)})
    assert sorted(e.path for e in plan.entries) == sorted(oracle)
    for e in plan.entries:
        _assert_std(e.path, oracle[e.path], e.std, _kurtosis(e))


@pytest.mark.parametrize("make", [_mlp, _TinyLM], ids=["mlp", "transformer"])
@pytest.mark.parametrize("w", WIDTHS)
def test_plain_readout_is_mureadouts_effective_weight(make, w):
    """A plain nn.Linear readout has no 1/m in its forward: initlab plans MuReadout's effective weight W/m
    (bias untouched by the multiplier); everything else exactly as with MuReadout."""
    mup = pytest.importorskip("mup")
    oracle = _mup_oracle(make, w, mup)
    m = w / BASE
    plan = initlab.plan(make(w), "mup", options={"base": make(BASE)})
    head = "4.weight" if make is _mlp else "head.weight"
    for e in plan.entries:
        values = oracle[e.path] / m if e.path == head else oracle[e.path]
        _assert_std(e.path, values, e.std, _kurtosis(e))
    # initlab's own draw follows its plan (same tolerance, one draw)
    model = make(w)
    plan = initlab.plan(model, "mup", options={"base": make(BASE)})
    plan.apply(seed=3)
    _assert_std(head, model.get_parameter(head).detach().reshape(-1).repeat(1), plan[head].std, 1.8)


def _lr_by_name(groups, model) -> dict[str, tuple[float, float]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}


@pytest.mark.parametrize("make", [_mlp, _TinyLM], ids=["mlp", "transformer"])
@pytest.mark.parametrize("w", WIDTHS)
@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_lr_factors_match_muadam_musgd(make, w, opt):
    mup = pytest.importorskip("mup")
    model = make(w, mup.MuReadout)
    mup.set_base_shapes(model, make(BASE, mup.MuReadout))
    mu_opt = (mup.MuAdamW if opt == "adam" else mup.MuSGD)(model.parameters(), lr=0.01, weight_decay=0.1)
    want = _lr_by_name(mu_opt.param_groups, model)
    plan = initlab.plan(model, "mup", options={"base": make(BASE, mup.MuReadout)})
    groups = plan.param_groups(0.01, weight_decay=0.1, optimizer=opt)
    got = _lr_by_name(groups, model)
    assert got.keys() == want.keys()
    for n in want:
        assert got[n] == pytest.approx(want[n], rel=1e-12), n
    assert any(lr != 0.01 for lr, _ in got.values())  # width 2×/4×: some factor differs from 1
    # the plain-readout model: the readout's lr is mup's / m, the rest equal
    plain = make(w)
    head = "4.weight" if make is _mlp else "head.weight"
    got = _lr_by_name(initlab.plan(plain, "mup", options={"base": make(BASE)}).param_groups(
        0.01, weight_decay=0.1, optimizer=opt), plain)
    m = w / BASE
    for n in want:
        lr, wd = want[n]
        expect = (lr / m, wd * m) if n == head and opt == "adam" else (0.01 / m, 0.1 * m) if n == head else (lr, wd)
        assert got[n] == pytest.approx(expect, rel=1e-12), n


def test_adamw_groups_train_like_muadamw():
    """Same function, same steps: a plain-readout MLP with AdamW(plan.param_groups) follows mup's MuReadout MLP
    with MuAdamW (its weights copied, readout ÷ m); wrong factors would separate them after one step."""
    mup = pytest.importorskip("mup")
    torch.manual_seed(0)
    mu = _mlp(128, mup.MuReadout)
    mup.set_base_shapes(mu, _mlp(BASE, mup.MuReadout))
    plain = _mlp(128)
    with torch.no_grad():
        for (n, p), q in zip(plain.named_parameters(), mu.parameters(), strict=True):
            p.copy_(q / 4 if n == "4.weight" else q)
    x, y = torch.randn(64, 10), torch.randint(0, 8, (64,))
    assert torch.allclose(plain(x), mu(x), atol=1e-6)
    opt_mu = mup.MuAdamW(mu.parameters(), lr=3e-3, weight_decay=0.1)
    opt = torch.optim.AdamW(initlab.plan(plain, "mup", options={"base": _mlp(BASE)}).param_groups(
        3e-3, weight_decay=0.1))
    for _ in range(5):
        for model, o in ((mu, opt_mu), (plain, opt)):
            o.zero_grad()
            F.cross_entropy(model(x), y).backward()
            o.step()
    moved = (plain(x) - _mlp(128)(x)).abs().max()
    assert moved > 1e-2
    assert torch.allclose(plain(x), mu(x), atol=1e-4), (plain(x) - mu(x)).abs().max()


def test_delta_and_base_shapes_as_mup_reads_them():
    mup = pytest.importorskip("mup")
    # the model at the base width, with a delta saying which dims are width: m = 1 everywhere (SP), as mup
    model = _TinyLM(BASE)
    plan = initlab.plan(model, "mup", options={"base": _TinyLM(BASE), "delta": _TinyLM(48)})
    assert {g["lr_mult"] for g in plan.param_groups(1.0)} == {1.0}
    ref = _TinyLM(BASE, mup.MuReadout)
    mup.set_base_shapes(ref, _TinyLM(BASE, mup.MuReadout), delta=_TinyLM(48, mup.MuReadout))
    ws = width_shapes(model, base_shapes(_TinyLM(BASE), _TinyLM(48)))
    for n, p in ref.named_parameters():
        assert ws[n].ninf == p.infshape.ninf(), n
        assert ws[n].base == tuple(d.base_dim for d in p.infshape), n
    # a dict of shapes works as the base, and the plan shows/serializes shapes, not a model
    shapes = {n: tuple(p.shape) for n, p in _mlp(BASE).named_parameters()}
    p1 = initlab.plan(_mlp(64), "mup", options={"base": shapes})
    p2 = initlab.plan(_mlp(64), "mup", options={"base": _mlp(BASE, readout=nn.Linear)})
    assert [e.std for e in p1.entries] == [e.std for e in p2.entries]
    assert isinstance(p1.options["base"], BaseShapes) and "BaseShapes(6 parameters" in str(p1)


def test_meta_base_and_no_mup_import_needed():
    with torch.device("meta"):
        base = _TinyLM(BASE)
    model = _TinyLM(64)
    plan = initlab.plan(model, "mup", options={"base": base}, example_input=torch.randint(0, 40, (2, 8)))
    assert sum(e.initializer is None for e in plan.entries) == 0
    # attention: the 1/d_head forward change is stated, since initlab cannot make it
    assert any("1/d_head" in n for n in plan.notes)
    assert "1/d_head" in plan["blocks.0.q.weight"].why
    # the readout, found by its shapes, confirmed by the trace
    assert "the trace confirms its output is the model's output" in plan["head.weight"].why
    groups = plan.param_groups(1e-3)
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen)) == len(list(model.parameters()))
    assert torch.optim.AdamW(groups).param_groups[0]["param_names"]


def test_tied_embedding_appears_once_and_says_what_to_change():
    model = _TinyLM(64)
    model.head.weight = model.emb.weight
    base = _TinyLM(BASE)
    base.head.weight = base.emb.weight
    plan = initlab.plan(model, "mup", options={"base": base})
    e = plan["head.weight"]
    assert e.path == "emb.weight" and "multiply the logits by 0.5" in e.why
    assert any("emb.weight is tied to the readout head.weight" in n for n in plan.notes)
    names = [n for g in plan.param_groups(1.0) for n in g["param_names"]]
    assert names.count("emb.weight") == 1 and "head.weight" not in names
    assert plan.param_groups(1.0, optimizer="adam")  # vector-like: Adam ×1
    assert dict(zip(names, [g["lr_mult"] for g in plan.param_groups(1.0) for _ in g["params"]], strict=True))[
        "emb.weight"] == 1.0


def test_readout_zero_option():
    plan = initlab.plan(_mlp(64), "mup", options={"base": _mlp(BASE), "readout": "zero"})
    assert plan["4.weight"].std == 0.0 and plan["4.bias"].std == 0.0
    assert plan["2.weight"].std == pytest.approx(1 / math.sqrt(3 * 64))
    assert {n: g["lr_mult"] for g in plan.param_groups(1.0) for n in g["param_names"]}["4.weight"] == 0.5


def test_errors_name_the_option():
    m = _mlp(64)
    with pytest.raises(ValueError, match=r"options\['base'\]: preset 'mup' needs the model at its base width"):
        initlab.plan(m, "mup")
    with pytest.raises(TypeError, match=r"options\['base'\]: expected the base model .* got int"):
        initlab.plan(m, "mup", options={"base": 3})
    with pytest.raises(TypeError, match=r"options\['delta'\]: a base-shape file"):
        initlab.plan(m, "mup", options={"base": _mlp(BASE), "delta": "base.bsh"})
    with pytest.raises(ValueError, match=r"options\['base'\]: its parameter names must be the model's.*'4.bias'"):
        initlab.plan(m, "mup", options={"base": {n: tuple(p.shape) for n, p in m.named_parameters() if n != "4.bias"}})
    with pytest.raises(ValueError, match=r"options\['base'\]: '0.weight' has shape \(64, 10, 1\)"):
        initlab.plan(m, "mup", options={"base": {**{n: tuple(p.shape) for n, p in m.named_parameters()},
                                                  "0.weight": (64, 10, 1)}})
    conv = nn.Sequential(nn.Conv2d(3, 64, 5))
    with pytest.raises(ValueError, match=r"options\['base'\]: '0.weight' has 3 width dimensions"):
        initlab.plan(conv, "mup", options={"base": nn.Sequential(nn.Conv2d(3, 16, 3))})
    with pytest.raises(ValueError, match=r"options\['readout'\]: expected one of 'scaled', 'zero'"):
        initlab.plan(m, "mup", options={"base": _mlp(BASE), "readout": "mup"})
    plan = initlab.plan(m, "mup", options={"base": _mlp(BASE)})
    with pytest.raises(ValueError, match="base_lr: expected a finite number >= 0"):
        plan.param_groups(-1.0)
    with pytest.raises(ValueError, match="optimizer: expected 'adam'"):
        plan.param_groups(1e-3, optimizer="lion")
    with pytest.raises(ValueError, match="param_groups: the plan of preset 'torch' sets no per-layer learning rates"):
        initlab.plan(m, "torch").param_groups(1e-3)
    before = {n: p.clone() for n, p in m.state_dict().items()}
    assert all(torch.equal(before[n], p) for n, p in m.state_dict().items())  # planning never writes


def test_hf_conv1d_biases_and_a_hidden_layer_taken_for_a_readout():
    """GPT-2's Conv1D (read by the trace) gets the bias rule through the trace's kernel pairing; Llama's zoo config
    keeps intermediate_size fixed, so gate/up_proj look like readouts — the plan says so instead of hiding it."""
    pytest.importorskip("transformers")
    from tests.zoo import gpt2, llama

    model, x = gpt2(n_embd=64)
    plan = initlab.plan(model, "mup", options={"base": gpt2(n_embd=32)[0]}, example_input=x)
    # bias behind a width fan-in: torch's law at the base fan-in, U(±1/√32) (c_proj: fan-in 4·32)
    assert plan["transformer.h.0.attn.c_attn.bias"].std == pytest.approx(1 / math.sqrt(3 * 32))
    assert plan["transformer.h.0.mlp.c_proj.bias"].std == pytest.approx(1 / math.sqrt(3 * 128))
    assert "multiply the logits by 0.5" in plan["lm_head.weight"].why
    model, x = llama(hidden_size=64)
    plan = initlab.plan(model, "mup", options={"base": llama(hidden_size=32)[0]}, example_input=x)
    assert "the trace shows its output feeds other ops" in plan["model.layers.0.mlp.up_proj.weight"].why
    assert "the trace confirms its output is the model's output" in plan["lm_head.weight"].why
    assert any("model.layers.0.mlp.gate_proj.weight" in n and "readouts" in n for n in plan.notes)


def test_library_does_not_import_mup():
    import subprocess
    import sys

    code = ("import sys; sys.modules['mup'] = None\n"  # any `import mup` would now raise
            "import torch, initlab\n"
            "m = lambda w: torch.nn.Sequential(torch.nn.Linear(3, w), torch.nn.Linear(w, 2))\n"
            "p = initlab.plan(m(32), 'mup', options={'base': m(8)}, example_input=torch.randn(2, 3))\n"
            "p.apply(seed=0); torch.optim.AdamW(p.param_groups(1e-3))\n")
    subprocess.run([sys.executable, "-c", code], check=True)
