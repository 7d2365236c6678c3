"""Residual streams read from one forward pass (initlab.theory.streams), and find_residual_branches' two
readings (a forward pass, torch.fx) agreeing where both apply."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initlab
from initlab.theory.streams import residual_streams
from tests._models import Block

pytestmark = pytest.mark.usefixtures("one_thread")

D = 16


class PreLN(nn.Module):
    """x + out(relu(fc(LN(x)))), then x + proj(LN(x)) — two branches per block, norms inside the branch."""

    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.fc, self.out, self.proj = nn.Linear(D, 2 * D), nn.Linear(2 * D, D), nn.Linear(D, D)
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        x = x + self.drop(self.out(F.relu(self.fc(self.ln1(x)))))
        return x + 0.5 * self.proj(self.ln2(x))


class PostLN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.ln = nn.Linear(D, D), nn.LayerNorm(D)

    def forward(self, x):
        return self.ln(x + self.fc(x))


class Down(nn.Module):
    """A ResNet basic block with a projection shortcut (in-place sum, as timm writes it)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) \
            if stride != 1 or cin != cout else None

    def forward(self, x):
        shortcut = x if self.down is None else self.down(x)
        h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        h += shortcut
        return F.relu(h)


class LayerScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(D, D)
        self.gamma = nn.Parameter(torch.full((D,), 1e-2))

    def forward(self, x):
        return x + self.gamma * self.fc(x)


class Ends(nn.Module):
    """Adds that are not residual branches with a projection: a branch ending in an activation, a broadcast
    add (a mask), an add of two unrelated inputs."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(D, D)

    def forward(self, x, mask, y):
        x = x + F.relu(self.fc(x))
        x = x + mask
        return x + y


def test_pre_ln_stream():
    torch.manual_seed(0)
    model = nn.Sequential(PreLN(), PreLN(), PreLN())
    streams = residual_streams(model, torch.randn(4, 5, D))
    assert len(streams) == 1
    s = streams[0]
    assert (s.n_branches, s.n_blocks, s.placement, s.blocks) == (6, 3, "pre", ("0", "1", "2"))
    assert s.out_projs == tuple(f"{i}.{p}.weight" for i in range(3) for p in ("out", "proj"))
    first, second = s.adds[:2]
    assert first.branch_kernels == ("0.fc.weight", "0.out.weight") and first.out_bias == "0.out.bias"
    assert second.out_proj_op == "linear" and second.out_scales == () and first.shortcut_kernels == ()


def test_post_ln_stream_and_add_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(PostLN(), PostLN(), PostLN())
    x = torch.randn(8, D)
    (s,) = residual_streams(model, x)
    assert s.placement == "post" and [a.placement for a in s.adds] == ["post"] * 3
    # the statistics of the first add against a direct computation
    with torch.no_grad():
        branch = model[0].fc(x)
    a = s.adds[0]
    assert a.ms_skip == pytest.approx(float(x.pow(2).mean()), rel=1e-6)
    assert a.ms_branch == pytest.approx(float(branch.pow(2).mean()), rel=1e-6)
    assert a.ms_out == pytest.approx(float((x + branch).pow(2).mean()), rel=1e-6)
    assert a.ratio == pytest.approx((a.ms_branch / a.ms_skip) ** 0.5)


def test_projection_shortcuts_start_a_stream_and_in_place_sums_are_measured_before_the_write():
    torch.manual_seed(0)
    model = nn.Sequential(Down(8, 8, 1), Down(8, 8, 1), Down(8, 16, 2), Down(16, 16, 1)).eval()
    x = torch.randn(2, 8, 8, 8)
    streams = residual_streams(model, x)
    adds = [a for s in streams for a in s.adds]
    assert [a.block for a in adds] == ["0", "1", "2", "3"]  # the prototype missed the downsample block "2"
    assert adds[2].shortcut_kernels == ("2.down.0.weight",)
    assert adds[2].branch_kernels == ("2.conv1.weight", "2.conv2.weight")
    assert adds[2].out_scales == ("2.bn2.weight", "2.bn2.bias")  # the trailing BN is a per-channel scale
    assert [[a.block for a in s.adds] for s in streams] == [["0", "1"], ["2", "3"]]
    # h += shortcut overwrites h: its mean square must be the branch's, measured before the sum
    with torch.no_grad():
        h = model[0].bn2(model[0].conv2(F.relu(model[0].bn1(model[0].conv1(x)))))
    assert adds[0].ms_branch == pytest.approx(float(h.pow(2).mean()), rel=1e-5)
    assert adds[0].ms_out == pytest.approx(float((h + x).pow(2).mean()), rel=1e-5)


def test_layer_scale_and_adds_that_are_not_residual_branches():
    torch.manual_seed(0)
    (s,) = residual_streams(nn.Sequential(LayerScale(), LayerScale()), torch.randn(3, D))
    assert [a.out_scales for a in s.adds] == [("0.gamma",), ("1.gamma",)]
    x = torch.randn(3, 4, D)
    assert residual_streams(Ends(), (x, torch.zeros(3, 1, D), torch.randn(3, 4, D))) == []


def test_find_residual_branches_agrees_with_fx_where_both_apply():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, D), *[Block(D) for _ in range(3)])
    x = torch.randn(4, D)
    by_fx = initlab.find_residual_branches(model)
    by_run = initlab.find_residual_branches(model, example_input=x)
    assert [(b.block_name, b.layer_names) for b in by_run] == [(b.block_name, b.layer_names) for b in by_fx]
    assert [b.block for b in by_run] == [b.block for b in by_fx]
    # (the attention case, out_proj inside nn.MultiheadAttention: tests/theory/test_residual.py)


class Dynamic(nn.Module):
    """Control flow on values: torch.fx cannot trace it, a forward pass can."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(Block(D) for _ in range(4))

    def forward(self, x):
        for b in self.blocks:
            if x.abs().sum() > 0:
                x = b(x)
        return x


def test_lsuv_residual_reads_models_fx_cannot_trace():
    torch.manual_seed(0)
    model = Dynamic()
    x = torch.randn(64, D)
    with pytest.raises(ValueError, match=r"torch\.fx could not trace Dynamic"):
        initlab.find_residual_branches(model)
    res = initlab.lsuv(model, x, residual=True, seed=0)
    finals = [c for c in res.layers if c.name.endswith("fc2")]
    # each branch-final layer is scaled to 1/√L = 1/2 of the target instead of 1 (one exact rescaling pass)
    assert len(finals) == 4 and all(c.std_after == pytest.approx(0.5, rel=1e-4) for c in finals)
    changes = initlab.residual_init(model, "zero", example_input=x)
    assert [c.layer_name for c in changes] == [f"blocks.{i}.fc2" for i in range(4)]
