"""Residual-aware init: finding x + f(x) branches, zero / scale / Fixup, presets, errors."""

import math

import pytest
import torch
from torch import nn

import initlab
from tests._models import Block

pytestmark = pytest.mark.usefixtures("one_thread")

W = 32


def _net(blocks=8):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(W, W), *[Block(W) for _ in range(blocks)])


def test_find_branches():
    model = _net(3)
    found = initlab.find_residual_branches(model)
    assert [(b.block_name, b.layer_names) for b in found] == [
        (str(i), (f"{i}.fc1", f"{i}.fc2")) for i in (1, 2, 3)
    ]
    assert found[0].block is model[1] and found[0].last_layer is model[1].fc2
    assert initlab.find_residual_branches(nn.Sequential(nn.Linear(W, W), nn.ReLU())) == []


def test_zero_makes_blocks_identity():
    model = _net()
    changes = initlab.residual_init(model, "zero")
    assert len(changes) == 8 and all(c.action == "zero" for c in changes)
    assert "identity at init" in changes[0].reason
    x = torch.randn(16, W)
    with torch.no_grad():
        assert torch.equal(model(x), model[0](x))


def test_scale_bounds_the_stream():
    # Same weights with and without scaling the branches' last layers by 1/√L: the stream's growth
    # over the blocks (output std / first-layer std) must shrink well below the unscaled one.
    blocks = 16
    plain, scaled = _net(blocks), _net(blocks)
    # residual='none': auto's own branch scaling (its default 'auto') would already bound the plain net
    no = {"residual": "none"}
    initlab.plan(plain, "auto", example_input=torch.randn(4, W), options=no).apply(seed=0)
    initlab.plan(scaled, "auto", example_input=torch.randn(4, W), options=no).apply(seed=0)
    changes = initlab.residual_init(scaled, "scale")
    assert changes[0].factor == pytest.approx(1 / math.sqrt(blocks))
    x = torch.randn(256, W)
    with torch.no_grad():
        grow_plain = float(plain(x).std() / plain[0](x).std())
        grow_scaled = float(scaled(x).std() / scaled[0](x).std())
    assert grow_scaled < grow_plain / 2


def test_fixup_scales_inner_layers():
    model = _net(4)
    w_before = model[1].fc1.weight.detach().clone()
    changes = initlab.residual_init(model, "fixup")
    # m = 2 layers per branch, L = 4: inner layers × L^(−1/(2m−2)) = 4^(−1/2) = 0.5; last layers zero.
    assert torch.allclose(model[1].fc1.weight, w_before * 0.5)
    assert torch.count_nonzero(model[1].fc2.weight) == 0
    assert [c.action for c in changes[:2]] == ["scale", "zero"]


def test_presets_explain_residual_init():
    model = _net(2)
    p = initlab.plan(model, "skipinit", example_input=torch.randn(4, W))
    by = {e.path: e for e in p.entries}
    assert by["1.fc2.weight"].initializer.name == "Zeros" and "SkipInit" in by["1.fc2.weight"].why
    assert by["1.fc1.weight"].initializer.name == "Orthogonal"  # auto's choice for a dense layer before ReLU
    p.apply(seed=0)
    assert torch.count_nonzero(model[1].fc2.weight) == 0
    p = initlab.plan(_net(2), "fixup", example_input=torch.randn(4, W))
    assert [s.name for s in p.post_steps] == ["fixup"]


def test_errors():
    with pytest.raises(ValueError, match="mode: expected 'zero', 'scale' or 'fixup'"):
        initlab.residual_init(_net(1), "half")
    with pytest.raises(ValueError, match="no x \\+ f\\(x\\) addition"):
        initlab.residual_init(nn.Sequential(nn.Linear(W, W)))

    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(W, W)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                return x + self.fc(x)
            return x

    m = Dynamic()
    with pytest.raises(ValueError, match=r"torch\.fx could not trace Dynamic"):
        initlab.residual_init(m)
    changes = initlab.residual_init(m, "zero", branches=[m.fc])  # named explicitly instead
    assert changes[0].layer_name == "fc" and torch.count_nonzero(m.fc.weight) == 0
    with pytest.raises(ValueError, match="branches: item 0"):
        initlab.residual_init(m, branches=[nn.Linear(2, 2)])


def test_attention_branch_uses_out_proj():
    class PreLN(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = nn.LayerNorm(W)
            self.attn = nn.MultiheadAttention(W, 4, batch_first=True)

        def forward(self, x):
            h = self.ln(x)
            return x + self.attn(h, h, h, need_weights=False)[0]

    model = nn.Sequential(PreLN(), PreLN())
    found = initlab.find_residual_branches(model)
    assert [b.last_layer_name for b in found] == ["0.attn.out_proj", "1.attn.out_proj"]
    # the same from a forward pass (multi_head_attention_forward's out_proj_weight is the branch's last kernel)
    by_run = initlab.find_residual_branches(model, example_input=torch.randn(2, 5, W))
    assert [b.last_layer_name for b in by_run] == ["0.attn.out_proj", "1.attn.out_proj"]
    initlab.residual_init(model, "zero")
    x = torch.randn(2, 5, W)
    with torch.no_grad():
        assert torch.allclose(model(x), x)
