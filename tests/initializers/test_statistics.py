"""Property tests: for every initializer, over many shapes, layouts and parameters, the sampled values
follow the law ``describe()`` states — mean, variance and bounds.

Tolerances (derivation). For n independent draws x₁…xₙ with mean μ, variance σ² and kurtosis
κ = E[(x−μ)⁴]/σ⁴:

- the sample mean m = Σxᵢ/n has standard deviation σ/√n, so we accept |m − μ| ≤ Z·σ/√n;
- the second moment about the *true* mean, v = Σ(xᵢ − μ)²/n, is unbiased for σ² with
  Var[v] = (E[(x−μ)⁴] − σ⁴)/n = (κ − 1)σ⁴/n, so we accept |v − σ²| ≤ Z·σ²·√((κ − 1)/n).

κ per family: uniform 9/5; normal 3; normal cut at ±2σ 2.36 (we use 3, an upper bound); a normal
truncated to an arbitrary interval is at most 9 (the one-sided far-tail limit, an exponential);
a normal with a fraction k of the entries kept (Sparse) 3/k. With Z = 6 a correct sampler fails one
check with probability ≈ 2·10⁻⁹ (normal tail; the sums have n ≥ 64 terms, and the chi-square-like
upper tail of v at 64 terms is still below 10⁻⁷), and every example has a fixed seed
(``derandomize=True`` and a drawn int seed), so the suite is deterministic. Float32 rounding
(relative 6·10⁻⁸) is far below these tolerances.

Entries of the structured initializers are not independent; their laws are exact instead:
Orthogonal's entries satisfy Σx² = gain²·min(rows, cols), DeltaOrthogonal's Σx² = gain²·in, and the
deterministic fills (Constant, Identity, Dirac, STFT) have an exact empirical mean and variance.
"""

import math

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import initlab

Z = 6.0
MIN_N = 64
MAX_NUMEL = 40_000
KURTOSIS = {"uniform": 1.8, "normal": 3.0}

VS_LAYOUTS = ["torch", "torch_transposed", "keras", "keras_transposed", "keras_depthwise"]
PRESETS = [
    initlab.GlorotUniform, initlab.GlorotNormal, initlab.HeUniform, initlab.HeNormal,
    initlab.LecunUniform, initlab.LecunNormal, initlab.TorchDefault,
]


def _numel(shape):
    return math.prod(shape)


dims = st.integers(1, 24)


@st.composite
def shapes(draw, min_rank=1, max_rank=4):
    rank = draw(st.integers(min_rank, max_rank))
    shape = tuple(draw(dims) for _ in range(rank))
    if _numel(shape) > MAX_NUMEL:
        shape = (*shape[:-1], max(1, MAX_NUMEL // _numel(shape[:-1])))
    return shape


@st.composite
def groups_for(draw, shape, layout):
    """A group count that divides the channel axis the layout groups (1 for 1-D and depthwise)."""
    if len(shape) < 2 or layout == "keras_depthwise":
        return 1
    channels = {"torch": shape[0], "torch_transposed": shape[0], "keras": shape[-1], "keras_transposed": shape[-1]}
    c = channels[layout]
    return draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0]))


finite = st.floats(-3, 3, allow_nan=False)
positive = st.floats(0.01, 3, allow_nan=False)


@st.composite
def cases(draw):
    """(initializer, shape, layout, groups)."""
    kind = draw(st.sampled_from(
        ["vs", "preset", "xavier", "kaiming", "normal", "uniform", "truncated", "trunc_normal", "sparse",
         "orthogonal", "delta_orthogonal", "constant", "identity", "dirac", "stft"]
    ))
    layout = draw(st.sampled_from(VS_LAYOUTS))
    shape = draw(shapes())
    if kind == "vs":
        init = initlab.VarianceScaling(
            draw(st.floats(0.05, 4)),
            draw(st.sampled_from(["fan_in", "fan_out", "fan_avg", "fan_geo_avg"])),
            draw(st.sampled_from(["truncated_normal", "untruncated_normal", "uniform", "normal"])),
        )
    elif kind == "preset":
        init = draw(st.sampled_from(PRESETS))()
    elif kind == "xavier":
        init = draw(st.sampled_from([initlab.XavierUniform, initlab.XavierNormal]))(gain=draw(positive))
    elif kind == "kaiming":
        init = draw(st.sampled_from([initlab.KaimingUniform, initlab.KaimingNormal]))(
            a=draw(st.floats(0, 3)), mode=draw(st.sampled_from(["fan_in", "fan_out"])),
            nonlinearity=draw(st.sampled_from(["leaky_relu", "relu", "tanh", "linear", "selu"])),
        )
    elif kind == "normal":
        init = initlab.RandomNormal(draw(finite), draw(positive))
    elif kind == "uniform":
        a, b = sorted([draw(finite), draw(finite)])
        init = initlab.RandomUniform(a, b)
    elif kind == "truncated":
        init = initlab.TruncatedNormal(draw(finite), draw(positive))
    elif kind == "trunc_normal":
        mean, std = draw(finite), draw(positive)
        # Absolute bounds anywhere from inside to 3σ away: both the rejection path (mass >= 0.3) and
        # the inverse-CDF path (mass < 0.3, e.g. a one-sided tail) are exercised.
        lo = mean + std * draw(st.floats(-3, 2.5))
        hi = lo + std * draw(st.floats(0.2, 4))
        init = initlab.TruncNormal(mean, std, lo, hi)
    elif kind == "sparse":
        shape, layout = draw(shapes(2, 2)), draw(st.sampled_from(["torch", "keras"]))
        init = initlab.Sparse(draw(st.floats(0, 0.5)), draw(positive))
    elif kind == "orthogonal":
        shape, layout = draw(shapes(2, 4)), draw(st.sampled_from(["torch", "keras"]))
        init = initlab.Orthogonal(draw(st.floats(-2, 2).filter(lambda g: abs(g) > 0.05)))
    elif kind == "delta_orthogonal":
        layout = draw(st.sampled_from(["torch", "keras"]))
        k = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
        cin = draw(st.integers(1, 12))
        cout = draw(st.integers(cin, 16))
        shape = (cout, cin, *k) if layout == "torch" else (*k, cin, cout)
        init = initlab.DeltaOrthogonal(draw(st.floats(0.1, 2)))
    elif kind == "constant":
        init = draw(st.sampled_from([initlab.Zeros(), initlab.Ones(), initlab.Constant(draw(finite))]))
    elif kind == "identity":
        shape = draw(shapes(2, 2))
        init = initlab.Identity(draw(finite))
    elif kind == "dirac":
        layout = draw(st.sampled_from(["torch", "keras"]))
        g = draw(st.integers(1, 4))
        out, cin = g * draw(st.integers(1, 6)), draw(st.integers(1, 6))
        k = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
        shape = (out, cin, *k) if layout == "torch" else (*k, cin, out)
        init = initlab.Dirac(groups=g)
    else:  # stft
        layout = draw(st.sampled_from(["torch", "keras"]))
        side, window = draw(st.sampled_from(["real", "imag"])), draw(st.sampled_from(["hann", "hamming", None]))
        scaling, periodic = draw(st.sampled_from(["density", "spectrum", None])), draw(st.booleans())
        # The symmetric Hann window of 2 points is [0, 0], which STFT rightly refuses to scale (ValueError
        # naming window): draw the frame lengths it accepts.
        t = draw(st.integers(1, 64).filter(lambda t: not (window == "hann" and not periodic and t == 2)))
        c, f = draw(st.integers(1, 3)), draw(st.integers(2, 40))
        shape = (t, c, f) if layout == "keras" else (f, c, t)
        init = initlab.STFT(side, window, scaling, periodic)
    event(kind)
    groups = draw(groups_for(shape, layout)) if init.needs_fans else 1
    return init, shape, layout, groups


def _kurtosis(d):
    if d.family == "truncated_normal":
        # Keras's symmetric ±2σ cut (TruncatedNormal, VarianceScaling) has κ ≈ 2.36 ≤ 3; an arbitrary
        # interval (TruncNormal) at most 9.
        return 3.0 if d.initializer != "TruncNormal" else 9.0
    if d.family == "sparse_normal":
        rows = d.shape[0] if d.layout == "torch" else d.shape[1]
        keep = 1 - d.params["zeros_per_column"] / rows
        return 3.0 / keep
    return KURTOSIS[d.family]


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), seed=st.integers(0, 2**31 - 1))
def test_samples_follow_describe(case, seed):
    init, shape, layout, groups = case
    d = init.describe(shape, layout, groups=groups)
    x = init.sample(shape, layout=layout, groups=groups, seed=seed, dtype=torch.float64).flatten()
    n = x.numel()
    assert d.shape == shape and n == _numel(shape)
    # Bounds hold for every value, whatever the sample size (float64: no rounding slack needed).
    assert d.low <= x.min().item() and x.max().item() <= d.high, (d, x.min().item(), x.max().item())

    if d.family in ("constant", "identity", "dirac", "stft"):
        assert x.mean().item() == _approx(d.mean)
        assert x.var(unbiased=False).item() == _approx(d.variance)
        return
    if d.family in ("orthogonal", "delta_orthogonal"):
        # Exact: Σx² is fixed by orthonormality.
        assert x.square().mean().item() == _approx(d.variance)
    if n < MIN_N:
        return
    sigma = d.std
    eps = 1e-12 * (1 + abs(d.mean))  # float64 rounding, for degenerate laws such as U[c, c]
    assert abs(x.mean().item() - d.mean) <= Z * sigma / math.sqrt(n) + eps, (d, x.mean().item())
    if d.family in ("orthogonal", "delta_orthogonal"):
        return
    v = (x - d.mean).square().mean().item()
    tol = Z * d.variance * math.sqrt((_kurtosis(d) - 1) / n)
    assert abs(v - d.variance) <= tol + eps * eps, (d, v, tol)


def _approx(expected, rel=1e-9, abs_=1e-12):
    import pytest

    return pytest.approx(expected, rel=rel, abs=abs_)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    shape=shapes(2, 4),
    layout=st.sampled_from(["torch", "keras"]),
    dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32]),
    name=st.sampled_from(["glorot_uniform", "he_normal", "lecun_uniform", "truncated_normal", "xavier_normal"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_low_precision_values_stay_in_bounds(shape, layout, dtype, name, seed):
    init = initlab.get(name)
    d = init.describe(shape, layout)
    x = init.sample(shape, layout=layout, seed=seed, dtype=dtype).double()
    if math.isfinite(d.high):
        # The fill clamps to the bounds rounded inward, so even float16/bfloat16 values stay inside.
        hi = torch.tensor(d.high, dtype=torch.float64).to(dtype).double().item()
        lo = torch.tensor(d.low, dtype=torch.float64).to(dtype).double().item()
        assert lo <= x.min().item() and x.max().item() <= hi
