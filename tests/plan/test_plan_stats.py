"""Per module type and preset: the sampled std and bounds of every planned entry equal the plan's;
preset ``torch`` matches what each module's ``reset_parameters`` draws."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import initlab


def _zoo() -> nn.Module:
    torch.manual_seed(0)
    return nn.ModuleDict({
        "lin": nn.Linear(64, 128),
        "bil": nn.Bilinear(16, 16, 32),
        "conv": nn.Conv2d(16, 32, 3),
        "gconv": nn.Conv2d(16, 32, 3, groups=4),
        "dw": nn.Conv2d(32, 64, 3, groups=32),
        "convt": nn.ConvTranspose2d(16, 32, 3, groups=2),
        "lstm": nn.LSTM(32, 64),
        "gru": nn.GRU(32, 32),
        "rnn": nn.RNN(32, 32, nonlinearity="relu"),
        "emb": nn.Embedding(100, 64, padding_idx=3),
        "mha": nn.MultiheadAttention(64, 4),
        "ln": nn.LayerNorm(64),
        "bn": nn.BatchNorm2d(32),
        "prelu": nn.PReLU(32),
    })


def _tol(n: int) -> float:
    """Relative tolerance on a sample std from n values: Var(s²)/σ⁴ = (κ − 1)/n for kurtosis κ, so
    sd(s)/σ ≈ √((κ − 1)/(4n)); κ ≤ 3 for every law here (uniform 1.8, ±2σ-truncated normal 2.36,
    normal 3), and 6 standard errors keep a false failure below 1e-8 per check."""
    return 6 * math.sqrt(2 / (4 * n))


def _check_entry(e: initlab.PlanEntry, values: torch.Tensor) -> None:
    v = values.detach().double().flatten()
    d = e.description
    assert d is not None
    assert v.min().item() >= d.low - 1e-6 and v.max().item() <= d.high + 1e-6, e.path
    if d.family == "constant":
        assert torch.all(values == torch.tensor(d.mean, dtype=values.dtype)), e.path
    elif d.family in ("orthogonal",):
        # The squared entries of an orthonormal frame sum to min(rows, cols) exactly.
        assert v.pow(2).mean().item() == pytest.approx(d.variance, rel=1e-5), e.path
    else:
        n = v.numel()
        assert v.std().item() == pytest.approx(e.std, rel=_tol(n)), (e.path, n)
        assert abs(v.mean().item() - d.mean) <= 6 * e.std / math.sqrt(n), e.path
        if d.family == "uniform" and n >= 200:
            # For x ~ U(−h, h), P(|x| < 0.95·h) = 0.95, so P(max |x| < 0.95·h) = 0.95^n < 4e-5 at n >= 200.
            assert v.abs().max().item() >= 0.95 * d.high, e.path


def _check_plan(plan: initlab.Plan, model: nn.Module) -> None:
    """Each entry's law holds where no later entry of the same parameter (a fix-up slice) overwrote it."""
    owners: dict[str, torch.Tensor] = {}
    for i, e in enumerate(plan.entries):
        p = model.get_parameter(e.param_path)
        own = owners.setdefault(e.param_path, torch.full(p.shape, -1))
        if e.index is None:
            own.fill_(i)
        else:
            own[e.index] = i
    for i, e in enumerate(plan.entries):
        assert e.initializer is not None, e.path
        p = model.get_parameter(e.param_path)
        _check_entry(e, p.detach()[owners[e.param_path] == i])


@pytest.mark.parametrize("preset", ["torch", "keras", "flax"])
def test_sampled_values_follow_the_plan(preset):
    model = _zoo()
    plan = initlab.plan(model, preset=preset)
    plan.apply(seed=1)
    _check_plan(plan, model)


class _Chain(nn.Module):
    """Every layer kind auto handles, wired so each kernel meets a known activation."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 64, padding_idx=3)
        self.lstm = nn.LSTM(64, 64, batch_first=True)
        self.mha = nn.MultiheadAttention(64, 4, batch_first=True)
        self.ln = nn.LayerNorm(64)
        self.conv = nn.Conv1d(64, 128, 3)
        self.dw = nn.Conv1d(128, 128, 3, groups=128)
        self.convt = nn.ConvTranspose1d(128, 64, 3)
        self.prelu = nn.PReLU()
        self.fc = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 96), nn.Tanh(), nn.Linear(96, 64),
                                nn.LeakyReLU(0.2), nn.Linear(64, 10))

    def forward(self, idx):
        x, _ = self.lstm(self.emb(idx))
        x = self.ln(x + self.mha(x, x, x)[0]).transpose(1, 2)
        x = torch.relu(self.conv(x))
        x = self.prelu(self.convt(torch.nn.functional.silu(self.dw(x))))
        return self.fc(x.mean(-1))


def test_auto_sampled_values_follow_the_plan():
    model = _Chain()
    plan = initlab.plan(model, preset="auto", example_input=torch.randint(0, 100, (2, 9)))
    plan.apply(seed=3)
    _check_plan(plan, model)
    families = {e.path: e.initializer.name for e in plan.entries}
    assert families["conv.weight"] == "HeUniform" and families["fc.0.weight"] == "VarianceScaling"
    assert families["dw.weight"] == "VarianceScaling" and families["fc.2.weight"] == "Orthogonal"
    assert families["convt.weight"] == "KaimingUniform" and families["lstm.weight_hh_l0[g]"] == "Orthogonal"


def _reset_values(module: nn.Module, name: str, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    if isinstance(module, nn.MultiheadAttention):
        module._reset_parameters()
    else:
        module.reset_parameters()
    return module.get_parameter(name).detach().clone()


@pytest.mark.parametrize("key", ["lin", "bil", "conv", "gconv", "dw", "convt", "lstm", "gru", "rnn", "emb", "mha",
                                 "ln", "bn", "prelu"])
def test_torch_preset_matches_reset_parameters(key):
    module = _zoo()[key]
    plan = initlab.plan(module, preset="torch")
    for e in plan.entries:
        if e.fixed:  # the zeroed padding row
            ref = _reset_values(module, e.param_path, 0)[e.index]
            assert torch.all(ref == 0)
            continue
        ref = _reset_values(module, e.param_path, 0)
        d = e.description
        assert ref.min().item() >= d.low - 1e-6 and ref.max().item() <= d.high + 1e-6, e.path
        if d.family == "constant":
            assert torch.all(ref == torch.tensor(d.mean, dtype=ref.dtype)), e.path
            continue
        n = ref.numel()
        assert ref.double().std().item() == pytest.approx(e.std, rel=_tol(n)), e.path
        if d.family == "uniform" and n >= 200:
            assert ref.abs().max().item() >= 0.95 * d.high, e.path


def test_torch_preset_transformer_xavier_on_every_matrix():
    model = nn.Transformer(d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=32,
                           batch_first=True)
    plan = initlab.plan(model, preset="torch")
    for e in plan.entries:
        if len(e.shape) > 1:
            assert e.initializer.name == "XavierUniform", e.path
            # the bound torch's xavier_uniform_ uses: √(6/(fan_in+fan_out)) with torch's fans
            fi, fo = torch.nn.init._calculate_fan_in_and_fan_out(model.get_parameter(e.param_path))
            assert e.high == pytest.approx(math.sqrt(6 / (fi + fo)))
        elif e.path.endswith("norm1.weight"):
            assert e.initializer.name == "Ones"


def test_plan_table_and_dict():
    model = nn.Sequential(nn.LSTM(4, 8))
    plan = initlab.plan(model, preset="keras")
    text = str(plan)
    for col in ("parameter path", "shape", "layout", "fan_in", "fan_out", "initializer", "std", "why"):
        assert col in text
    assert "0.bias_ih_l0[f]" in text  # a slice row, not swallowed as rich markup
    d = plan.as_dict()
    assert d["preset"] == "keras" and d["entries"][0]["initializer"]["class_name"] == "GlorotUniform"
    assert plan["0.bias_ih_l0[f]"].initializer.get_config() == {"value": 1.0}


def test_module_knowledge_fans_and_slices():
    from initlab.plan.modules import module_info

    ct = module_info(nn.ConvTranspose2d(16, 32, 3, groups=4)).params[0]
    assert ct.layout == "torch_transposed"
    assert (ct.fans["true"].fan_in, ct.fans["true"].fan_out) == (4 * 9, 8 * 9)  # per group, true
    assert ct.fans["torch"].fan_in == 8 * 9  # torch reads the output channels (PR #30079)
    g = module_info(nn.Conv2d(16, 32, 3, groups=4)).params[0]
    assert (g.fans["true"].fan_in, g.fans["true"].fan_out) == (36, 72) and g.fans["torch"].fan_out == 288
    dw = module_info(nn.Conv2d(16, 32, 3, groups=16))
    assert dw.attrs["depthwise"] and (dw.params[0].fans["keras"].fan_in, dw.params[0].fans["keras"].fan_out) == (144, 18)
    mha = module_info(nn.MultiheadAttention(64, 4, kdim=32, vdim=48))
    assert [p.name for p in mha.params][:3] == ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
    assert [p.fans["true"].fan_in for p in mha.params[:3]] == [64, 32, 48] and mha.covers == ("out_proj",)
    gru = module_info(nn.GRU(8, 16)).params[0]
    assert [(p.label, p.index[0].start, p.fans["true"].fan_in) for p in gru.parts] == [("r", 0, 8), ("z", 16, 8),
                                                                                      ("n", 32, 8)]
    assert module_info(nn.ReLU()) is None and module_info(nn.LazyLinear(3)) is None
