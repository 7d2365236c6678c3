"""torch.nn.init as the oracle: xavier, kaiming (leaky slope), orthogonal, eye, dirac, trunc_normal, sparse.

Where torch draws with one call on the same generator (xavier, kaiming, orthogonal), initlab's values
must be the same numbers; the bound or std may be computed in a different order (gain·√(6/(fi+fo))
against √(3·gain²·2/(fi+fo))), so we allow float32 rounding (assert_close's default rtol 1.3e-6).
Samplers that torch runs differently (trunc_normal_, sparse_ zero positions) are compared by law:
for n draws the sample std has relative standard deviation √((κ − 1)/(4n)) ≤ √(2/(4n)) here
(κ ≤ 3); we allow 6 of them.
"""

import math

import pytest
import torch
from torch.nn import init as tinit

import initlab

SHAPES = [(64, 128), (128, 64), (32, 16, 3, 3), (8, 4, 5)]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gain", [1.0, 2.0])
def test_xavier(shape, gain):
    ref_u = tinit.xavier_uniform_(torch.empty(shape), gain=gain, generator=_gen())
    ref_n = tinit.xavier_normal_(torch.empty(shape), gain=gain, generator=_gen())
    torch.testing.assert_close(initlab.XavierUniform(gain).sample(shape, seed=0), ref_u)
    torch.testing.assert_close(initlab.XavierNormal(gain).sample(shape, seed=0), ref_n)
    fi, fo = tinit._calculate_fan_in_and_fan_out(ref_u)
    assert initlab.describe(initlab.XavierUniform(gain), shape).high == pytest.approx(gain * math.sqrt(6 / (fi + fo)))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("a", "mode", "nonlinearity"),
    [(0.0, "fan_in", "leaky_relu"), (0.0, "fan_in", "relu"), (0.2, "fan_in", "leaky_relu"),
     (0.2, "fan_out", "leaky_relu"), (math.sqrt(5), "fan_in", "leaky_relu"), (0.0, "fan_out", "tanh")],
)
def test_kaiming_with_leaky_slope(shape, a, mode, nonlinearity):
    ref_u = tinit.kaiming_uniform_(torch.empty(shape), a=a, mode=mode, nonlinearity=nonlinearity, generator=_gen(1))
    ref_n = tinit.kaiming_normal_(torch.empty(shape), a=a, mode=mode, nonlinearity=nonlinearity, generator=_gen(1))
    torch.testing.assert_close(initlab.KaimingUniform(a, mode, nonlinearity).sample(shape, seed=1), ref_u)
    torch.testing.assert_close(initlab.KaimingNormal(a, mode, nonlinearity).sample(shape, seed=1), ref_n)


def test_torch_default_is_what_linear_and_conv_draw():
    torch.manual_seed(0)
    lin = torch.nn.Linear(100, 30)
    torch.manual_seed(0)
    torch.testing.assert_close(initlab.TorchDefault().sample((30, 100)), lin.weight.detach())
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(8, 16, 3)
    torch.manual_seed(1)
    torch.testing.assert_close(initlab.TorchDefault().sample((16, 8, 3, 3)), conv.weight.detach())


@pytest.mark.parametrize("shape", [(8, 2, 3, 3), (32, 2, 3, 3), (64, 128), (128, 64), (10, 10)])
@pytest.mark.parametrize("gain", [1.0, 2.0])
def test_orthogonal_same_generator_same_values(shape, gain):
    ref = tinit.orthogonal_(torch.empty(shape), gain=gain, generator=_gen(3))
    ours = initlab.Orthogonal(gain).sample(shape, seed=3)  # torch layout
    # Same normals, same QR; only the QR's rounding can differ between two calls' code paths.
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4)])
def test_eye(shape):
    assert torch.equal(initlab.Identity().sample(shape), tinit.eye_(torch.empty(shape)))


@pytest.mark.parametrize(("shape", "groups"), [((6, 3, 5), 1), ((8, 4, 3, 3), 1), ((8, 2, 3, 3), 2),
                                               ((12, 2, 4, 4), 3), ((4, 2, 3, 3, 3), 2), ((6, 5, 2), 3)])
def test_dirac_with_groups(shape, groups):
    assert torch.equal(initlab.Dirac(groups=groups).sample(shape), tinit.dirac_(torch.empty(shape), groups=groups))


@pytest.mark.parametrize(
    ("mean", "std", "a", "b"),
    [(0.0, 1.0, -2.0, 2.0), (0.0, 0.02, -2.0, 2.0), (0.0, 0.02, -0.04, 0.04), (1.0, 2.0, 0.0, 3.0),
     (0.0, 1.0, 1.0, 5.0)],
)
def test_trunc_normal_absolute_bounds(mean, std, a, b):
    shape = (200, 250)
    n = 200 * 250
    ref = tinit.trunc_normal_(torch.empty(shape), mean, std, a, b, generator=_gen(4)).double()
    ours = initlab.TruncNormal(mean, std, a, b).sample(shape, seed=4).double()
    d = initlab.describe(initlab.TruncNormal(mean, std, a, b), shape)
    assert (d.low, d.high) == (a, b)
    assert a <= ours.min().item() and ours.max().item() <= b
    assert a <= ref.min().item() and ref.max().item() <= b
    # One-sided tails are heavier (κ up to 9, see test_statistics.py): use κ = 9 for the std and the
    # mean's σ/√n for the mean.
    rel = 6 * math.sqrt(8 / (4 * n))
    for x in (ours, ref):
        assert x.std().item() == pytest.approx(d.std, rel=rel)
        assert abs(x.mean().item() - d.mean) <= 6 * d.std / math.sqrt(n)


@pytest.mark.parametrize(("shape", "sparsity"), [((10, 6), 0.25), ((100, 40), 0.1), ((50, 50), 0.5)])
def test_sparse_zeros_per_column(shape, sparsity):
    ref = tinit.sparse_(torch.empty(shape), sparsity, std=0.5, generator=_gen(5))
    ours = initlab.Sparse(sparsity, std=0.5).sample(shape, seed=5)
    assert torch.equal((ours == 0).sum(dim=0), (ref == 0).sum(dim=0))
    assert ((ours == 0).sum(dim=0) == math.ceil(sparsity * shape[0])).all()
    nonzero = ours[ours != 0]
    n = nonzero.numel()
    assert nonzero.std().item() == pytest.approx(0.5, rel=6 * math.sqrt(2 / (4 * n)))


@pytest.mark.parametrize("name", ["uniform", "normal"])
def test_fixed_scale_samplers_match_torch(name):
    if name == "uniform":
        ref = tinit.uniform_(torch.empty(50, 60), -0.3, 0.7, generator=_gen(6))
        ours = initlab.RandomUniform(-0.3, 0.7).sample((50, 60), seed=6)
    else:
        ref = tinit.normal_(torch.empty(50, 60), 0.1, 0.2, generator=_gen(6))
        ours = initlab.RandomNormal(0.1, 0.2).sample((50, 60), seed=6)
    assert torch.equal(ours, ref)
