"""initlab.inspect.fused: the compiled single-pass statistics against torch in float64, edge cases included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from initlab.inspect import fused


def _k():
    # numba is a test dependency (`make test` installs the dev extras): missing, these tests fail
    assert fused.available(), (
        "the compiled statistics are off: numba is not installed (pip install -e '.[dev]') or "
        "INITLAB_FUSED is set to 0/off")
    return fused.kernels()


def test_ref_takes_only_contiguous_cpu_float_tensors():
    _k()
    t = torch.randn(6, 5)
    assert fused.ref(t) == (t.data_ptr(), 30, False)
    assert fused.ref(t[2:]) == (t.data_ptr() + 2 * 5 * 4, 20, False)  # a view: its own first element
    assert fused.ref(t.double())[1:] == (30, True)
    assert fused.ref(t.T) is None  # not contiguous
    assert fused.ref(t.to(torch.bfloat16)) is None
    assert fused.ref(torch.empty(0, 5)) is None
    assert fused.ref(t.to_sparse()) is None
    assert fused.ref(torch.empty(3, 3, device="meta")) is None
    assert fused.ref(torch.randn(3, requires_grad=True)) is not None  # read as data, not as a graph
    assert fused.ref(torch._neg_view(t)) is None  # its memory holds the values before negation


@pytest.mark.parametrize("value", ["0", "off", " OFF "])
def test_turned_off_by_the_environment(monkeypatch, value):
    monkeypatch.setattr(fused, "_STATE", {})
    monkeypatch.setenv("INITLAB_FUSED", value)
    assert not fused.available() and fused.ref(torch.randn(3)) is None


def test_a_bad_environment_value_is_an_error_naming_it(monkeypatch):
    monkeypatch.setattr(fused, "_STATE", {})
    monkeypatch.setenv("INITLAB_FUSED", "maybe")
    with pytest.raises(ValueError, match=r"INITLAB_FUSED: expected 1/on .* or 0/off .* got 'maybe'"):
        fused.available()


def test_disabled_turns_the_kernels_off_for_a_block_and_back_on_after_it():
    _k()
    t = torch.randn(4, 4)
    with fused.disabled():
        assert not fused.takes(t) and fused.ref(t) is None
    assert fused.takes(t)
    with pytest.raises(RuntimeError), fused.disabled():
        raise RuntimeError("inside")
    assert fused.takes(t)  # restored also when the block raises


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e30])
def test_moments_are_float64_sums(dtype, scale):
    # float32 squares of 1e±30 leave float32's range; the kernel squares in float64. Summation order
    # differs from torch's: agreement to ~1e-12 relative (n = 4000 float64 additions).
    g = torch.Generator().manual_seed(0)
    t = (torch.randn(40, 100, generator=g, dtype=torch.float64) * scale).to(dtype)
    s1, s2 = _k().moments(*fused.ref(t))
    ref = t.double()
    assert s1 == pytest.approx(float(ref.sum()), rel=1e-9, abs=1e-12 * scale * 100)
    assert s2 == pytest.approx(float((ref * ref).sum()), rel=1e-12)
    bad = t.clone()
    bad[3, 7] = math.nan
    assert math.isnan(_k().moments(*fused.ref(bad))[1])


def test_moments_cosine_matches_the_gram_matrix_with_zero_and_nonfinite_rows():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(70, 33, generator=g) + 2.0  # correlated rows
    h[5] = 0.0  # a zero row: orthogonal to all
    s1, s2, t2, nonzero, bad = _k().moments_cosine(*fused.ref(h), 33, 64)
    y = h[:64].double()
    u = torch.where(y.norm(dim=1, keepdim=True) > 0, y / y.norm(dim=1, keepdim=True).clamp_min(1e-300), 0.0)
    gram = u @ u.T
    assert (nonzero, bad) == (63, 0)
    assert (t2 - nonzero) / (64 * 63) == pytest.approx(float((gram.sum() - gram.diagonal().sum()) / (64 * 63)), abs=1e-13)
    assert s1 == pytest.approx(float(h.double().sum()), rel=1e-10)
    assert s2 == pytest.approx(float(h.double().pow(2).sum()), rel=1e-12)
    h[9, 4] = math.inf
    assert _k().moments_cosine(*fused.ref(h), 33, 64)[4] == 1


def test_relu_out_counts_firing_and_dead_units_and_nan():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(50, 40, generator=g)
    z[:, :7] = -1.0  # 7 units never fire
    y = torch.relu(z)
    s1, s2, pos, nan, alive = _k().relu_out(*fused.ref(y), 40)
    assert (pos, nan, alive) == (int((y > 0).sum()), 0, 33)
    assert s1 == pytest.approx(float(y.double().sum()), rel=1e-10)
    assert s2 == pytest.approx(float(y.double().pow(2).sum()), rel=1e-12)
    y[3, 2] = math.nan  # in a unit that never fires: a NaN keeps it from counting as dead
    s1, _s2, pos, nan, alive = _k().relu_out(*fused.ref(y), 40)
    assert (pos, nan, alive) == (int((y > 0).sum()), 1, 34) and math.isnan(s1)


def test_act_out_counts_units_that_are_ever_nonzero():
    y = torch.tanh(torch.randn(20, 12, generator=torch.Generator().manual_seed(3)))
    y[:, 4] = 0.0
    y[:, 9] = -0.0
    _s1, s2, alive = _k().act_out(*fused.ref(y), 12)
    assert alive == 10 and s2 == pytest.approx(float(y.double().pow(2).sum()), rel=1e-12)
    y[0, 4] = math.nan
    assert _k().act_out(*fused.ref(y), 12)[2] == 11


@pytest.mark.parametrize(
    ("edges", "first"),
    [((0.0,), True), ((-1.5, 1.5), True), ((-2.0, 0.0, 2.0), False), ((0.0, 6.0), True)],
)
def test_saturated_counts_intervals_with_half_on_the_edges(edges, first):
    g = torch.Generator().manual_seed(4)
    z = torch.randn(3000, generator=g, dtype=torch.float64) * 3
    z[:5] = edges[0]  # exactly on an edge: half saturated
    bounds = [-math.inf, *edges, math.inf]
    count = 0.0
    for k in range(len(bounds) - 1):
        if (k % 2 == 0) == first:
            count += float(((z > bounds[k]) & (z < bounds[k + 1])).sum())
    count += 0.5 * sum(float((z == e).sum()) for e in edges)
    twice, nan = _k().saturated(*fused.ref(z), np.array(edges), first)
    assert (twice / 2, nan) == (count, 0)
    z[7] = math.nan
    assert _k().saturated(*fused.ref(z), np.array(edges), first)[1] == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_moments_many_matches_moments_of_each_tensor(dtype):
    g = torch.Generator().manual_seed(5)
    sizes_scales = ((256, 1.0), (1, 3.0), (7, 1e-30))
    ts = [torch.randn(n, generator=g, dtype=torch.float64).to(dtype) * s for n, s in sizes_scales]
    refs = [fused.ref(t) for t in ts]
    addrs = np.array([r[0] for r in refs], dtype=np.int64)
    out = _k().moments_many(addrs, np.array([r[1] for r in refs], dtype=np.int64), dtype is torch.float64)
    assert out.shape == (3, 2)
    eps = float(np.finfo(np.float64).eps)
    for row, t in zip(out, ts, strict=True):
        one = _k().moments(*fused.ref(t))
        # The same loop in two compiled functions; with fastmath "reassoc" LLVM may vectorize the two
        # reductions differently, so they agree to the summation-order bound n·eps·Σ|x| (not bit for bit).
        t64 = t.double()
        n = t.numel()
        assert abs(row[0] - one[0]) <= n * eps * float(t64.abs().sum())
        assert abs(row[1] - one[1]) <= n * eps * float((t64 ** 2).sum())
        assert row[1] == pytest.approx(float((t64 ** 2).sum()), rel=1e-12)
