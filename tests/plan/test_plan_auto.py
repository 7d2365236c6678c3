"""Preset ``auto`` picks the right family on a small zoo and says why; activations are found by hooks
(functional ones included) and by torch.fx."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initlab


def _mlp(act: type[nn.Module], **kw) -> nn.Sequential:
    return nn.Sequential(nn.Linear(10, 32), act(**kw), nn.Linear(32, 32), act(**kw), nn.Linear(32, 3))


@pytest.mark.parametrize("with_input", [True, False])
def test_relu_mlp_gets_orthogonal_at_hes_gain(with_input):
    model = _mlp(nn.ReLU)
    plan = initlab.plan(model, "auto", example_input=torch.randn(2, 10) if with_input else None)
    assert [plan[f"{i}.weight"].initializer.name for i in (0, 2, 4)] == ["Orthogonal", "Orthogonal", "GlorotUniform"]
    e = plan["2.weight"]
    assert "followed by relu (module '3')" in e.why and "Saxe" in e.why and "He" in e.why
    assert e.initializer.gain == pytest.approx(math.sqrt(2))
    assert e.std == pytest.approx(math.sqrt(2 / 32))  # square: He's variance, 2/fan_in
    # 32×10: orthonormal columns ×√2 keep ‖x‖·√2, i.e. E[w²] = 2/32, not He's 2/10
    assert plan["0.weight"].std == pytest.approx(math.sqrt(2 / 32))
    assert "no nonlinearity follows" in plan["4.weight"].why
    assert plan["0.bias"].initializer.name == "Zeros"
    plan.apply(seed=0)
    w = model[2].weight.detach().double()
    assert torch.allclose(w @ w.t(), 2 * torch.eye(32, dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize("with_input", [True, False])
def test_dense_variance_option_gives_the_iid_laws(with_input):
    plan = initlab.plan(_mlp(nn.ReLU), "auto", example_input=torch.randn(2, 10) if with_input else None,
                        options={"dense": "variance"})
    assert [plan[f"{i}.weight"].initializer.name for i in (0, 2, 4)] == ["HeUniform", "HeUniform", "GlorotUniform"]
    assert "followed by relu (module '1')" in plan["0.weight"].why and "He" in plan["0.weight"].why
    assert plan["0.weight"].std == pytest.approx(math.sqrt(2 / 10))
    tanh = initlab.plan(_mlp(nn.Tanh), "auto", example_input=torch.randn(2, 10), options={"dense": "variance"})
    e = tanh["2.weight"]
    assert e.initializer.name == "GlorotUniform" and "followed by tanh" in e.why and "Glorot" in e.why
    assert e.std == pytest.approx(math.sqrt(2 / 64))
    leaky = initlab.plan(_mlp(nn.LeakyReLU, negative_slope=0.3), "auto", example_input=torch.randn(2, 10),
                         options={"dense": "variance"})
    e = leaky["0.weight"]
    assert e.initializer.name == "KaimingUniform" and e.std == pytest.approx(math.sqrt(2 / ((1 + 0.09) * 10)))


def test_leaky_slope_and_tanh_mlp():
    leaky = initlab.plan(_mlp(nn.LeakyReLU, negative_slope=0.3), "auto", example_input=torch.randn(2, 10))
    e = leaky["2.weight"]
    assert e.initializer.name == "Orthogonal" and e.initializer.gain == pytest.approx(math.sqrt(2 / 1.09))
    assert e.std == pytest.approx(math.sqrt(2 / ((1 + 0.09) * 32)))
    tanh = initlab.plan(_mlp(nn.Tanh), "auto", example_input=torch.randn(2, 10))
    e = tanh["2.weight"]
    sw2 = initlab.theory.critical("tanh", 0.05)
    assert e.initializer.name == "Orthogonal" and "followed by tanh" in e.why and "edge-of-chaos" in e.why
    assert e.initializer.gain == pytest.approx(math.sqrt(sw2)) and sw2 == pytest.approx(1.761, abs=1e-3)
    assert tanh["2.bias"].initializer.name == "Zeros"
    # sigmoid layers are not covered by the measurement behind the orthogonal rule: Glorot stays
    sig = initlab.plan(_mlp(nn.Sigmoid), "auto", example_input=torch.randn(2, 10))
    assert sig["2.weight"].initializer.name == "GlorotUniform"


class _Block(nn.Module):
    """A pre-norm transformer block with a GELU MLP."""

    def __init__(self, d: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(self.drop(F.gelu(self.fc1(self.ln2(x)))))


@pytest.mark.parametrize("with_input", [True, False])
def test_gelu_transformer_block_uses_the_gain(with_input):
    model = _Block()
    plan = initlab.plan(model, "auto", example_input=torch.randn(2, 5, 32) if with_input else None)
    fc1 = plan["fc1.weight"]
    g = initlab.gain("gelu")
    assert fc1.initializer.name == "VarianceScaling" and "gelu" in fc1.why and "gain" in fc1.why
    assert fc1.std == pytest.approx(g / math.sqrt(32))
    assert "no nonlinearity follows" in plan["fc2.weight"].why
    for lbl in "qkv":
        e = plan[f"attn.in_proj_weight[{lbl}]"]
        assert e.initializer.name == "GlorotUniform" and (e.fans.fan_in, e.fans.fan_out) == (32, 32)
        assert e.std == pytest.approx(math.sqrt(2 / 64))
    assert plan["ln1.weight"].initializer.name == "Ones"


def test_lstm_gets_orthogonal_recurrent_weights_and_forget_bias():
    model = nn.LSTM(8, 16, num_layers=2, bidirectional=True)
    plan = initlab.plan(model, "auto")
    rows = [e for e in plan.entries if e.param_path == "weight_hh_l1_reverse"]
    assert [e.part for e in rows] == ["i", "f", "g", "o"]
    assert all(e.initializer.name == "Orthogonal" and "Saxe" in e.why for e in rows)
    assert plan["bias_ih_l0[f]"].initializer.get_config() == {"value": 1.0}
    plan.apply(seed=0)
    w = model.weight_hh_l1_reverse.detach().double()[16:32]
    assert torch.allclose(w @ w.t(), torch.eye(16, dtype=torch.float64), atol=1e-5)
    assert torch.all(model.bias_ih_l0[16:32] == 1) and torch.all(model.bias_hh_l0 == 0)


class _DepthwiseCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 32, 1)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = F.silu(self.dw(x))
        x = F.max_pool2d(self.pw(x).relu(), 2)
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize("with_input", [True, False])
def test_cnn_with_depthwise_convolution(with_input):
    model = _DepthwiseCNN()
    plan = initlab.plan(model, "auto", example_input=torch.randn(2, 3, 8, 8) if with_input else None)
    stem, dw, pw = plan["stem.weight"], plan["dw.weight"], plan["pw.weight"]
    assert stem.initializer.name == "HeUniform" and "bn" in stem.why  # found through the BatchNorm
    assert dw.initializer.name == "VarianceScaling" and "silu" in dw.why and "depthwise" in dw.why
    assert (dw.fans.fan_in, dw.fans.fan_out) == (9, 9)  # true fans; torch says (9, 144)
    assert dw.std == pytest.approx(initlab.gain("silu") / 3)
    assert pw.initializer.name == "HeUniform" and "relu" in pw.why
    assert plan["head.weight"].initializer.name == "GlorotUniform"


def test_functional_activation_only_reachable_by_hooks():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            for _ in range(int(x.shape[0] > 0)):  # plain Python: fine for fx too
                x = torch.tanh(self.a(x))
            return self.b(x)

    plan = initlab.plan(Net(), "auto", example_input=torch.randn(3, 4))
    assert "followed by tanh (tanh())" in plan["a.weight"].why
