"""Keras 3 (torch backend) as the oracle: every class, Dense and Conv2D kernel shapes, bounds, std, values
with an int seed, fans and config round trips.

Statistical tolerance: for n draws with kurtosis κ the sample std has relative standard deviation
√((κ − 1)/(4n)) (delta method on the variance, see test_statistics.py); we allow Z = 6 of them with
κ = 3 (an upper bound for the uniform, normal and ±2σ-truncated normal): 3.2 % at n = 18,432, 1.2 % at
n = 131,072. Keras's draws are seeded, so the test is deterministic.
"""

import math

import numpy as np
import pytest
import torch

import initlab

DENSE = (512, 256)
CONV = (3, 3, 32, 64)
SHAPES = [DENSE, CONV]
Z = 6.0

#: class name -> non-default config (Keras and initlab accept the same arguments).
CLASSES = {
    "Zeros": {},
    "Ones": {},
    "Constant": {"value": 0.25},
    "RandomNormal": {"mean": 0.1, "stddev": 0.2, "seed": 1},
    "RandomUniform": {"minval": -0.3, "maxval": 0.5, "seed": 2},
    "TruncatedNormal": {"mean": 0.0, "stddev": 0.1, "seed": 3},
    "VarianceScaling": {"scale": 2.0, "mode": "fan_avg", "distribution": "untruncated_normal", "seed": 4},
    "GlorotNormal": {"seed": 5},
    "GlorotUniform": {"seed": 6},
    "HeNormal": {"seed": 7},
    "HeUniform": {"seed": 8},
    "LecunNormal": {"seed": 9},
    "LecunUniform": {"seed": 10},
    "Orthogonal": {"gain": 1.5, "seed": 11},
    "Identity": {"gain": 2.0},
}
UNIFORM = {"RandomUniform", "GlorotUniform", "HeUniform", "LecunUniform"}
NORMAL = {"RandomNormal", "VarianceScaling", "Orthogonal"}  # bit-identical draws
TRUNCATED = {"TruncatedNormal", "GlorotNormal", "HeNormal", "LecunNormal"}


def _keras_values(keras, name, config, shape):
    init = getattr(keras.initializers, name)(**config)
    return torch.as_tensor(np.asarray(keras.ops.convert_to_numpy(init(shape, dtype="float32"))))


def _ulp(x: float) -> float:
    """Spacing of float32 numbers around |x|."""
    return torch.finfo(torch.float32).eps * 2.0 ** math.floor(math.log2(abs(x)))


@pytest.mark.parametrize("shape", SHAPES, ids=["dense", "conv2d"])
@pytest.mark.parametrize("name", list(CLASSES))
def test_bounds_std_and_values_agree_with_keras(keras, name, shape):
    config = CLASSES[name]
    if name == "Identity" and len(shape) != 2:
        shape = (64, 32)  # Keras's Identity is 2-D only
    k = _keras_values(keras, name, config, shape)
    ours_init = initlab.get({"class_name": name, "config": config})
    ours = ours_init.sample(shape, layout="keras")
    d = ours_init.describe(shape, layout="keras")
    n = k.numel()
    assert ours.shape == k.shape == shape

    if name in ("Zeros", "Ones", "Constant", "Identity"):
        assert torch.equal(ours, k)
        return
    # The law we describe is the law Keras samples: std within Z standard errors.
    rel = Z * math.sqrt(2 / (4 * n))
    assert k.double().std().item() == pytest.approx(d.std, rel=rel)
    assert ours.double().std().item() == pytest.approx(d.std, rel=rel)
    if name in UNIFORM:
        # Same bounds: both reach to within 20·width/n of them (P(miss) = e⁻²⁰) and never past them.
        for x in (k, ours):
            assert d.low - _ulp(d.low) <= x.min().item() <= d.low + 20 * (d.high - d.low) / n
            assert d.high - 20 * (d.high - d.low) / n <= x.max().item() <= d.high + _ulp(d.high)
        # Keras's torch backend draws (max−min)·rand + min from Generator().manual_seed(seed); we draw
        # uniform_(min, max) from the same generator: the same x = rand, the same exact value x·w + min
        # (w = max − min), rounded differently. Keras rounds x·w (≤ ½ ulp of w = 1 ulp of the bound) and
        # then the sum (≤ ½ ulp of the result); torch's kernel rounds once or twice (FMA or not, by CPU
        # capability): ≤ ½ + ½ ulp. Both results are float32 on the same grid, so they differ by less
        # than 2 ulps of the bound, i.e. by at most 1 unless a product lands exactly on a rounding tie.
        # (Measured over 29 seeds × 2 shapes: ≤ 1 ulp on AVX2 (FMA), 0 with ATEN_CPU_CAPABILITY=default.)
        assert (ours - k).abs().max().item() <= _ulp(max(abs(d.low), abs(d.high)))
    elif name in NORMAL:
        # torch.normal(mean, std, generator) vs normal_(mean, std, generator); orthogonal: same
        # normals, same QR and sign fix. Measured bit-identical.
        assert torch.equal(ours, k)
    else:
        assert name in TRUNCATED
        assert ours.min().item() >= d.low and ours.max().item() <= d.high
        assert d.high == pytest.approx(2 * d.params["stddev"] + d.mean)


def test_keras_on_torch_truncated_normal_exceeds_two_sigma_and_initlab_does_not(keras):
    # frameworks.md §1.7: Keras keeps draw 0 when all 4 tries fall outside (−2, 2); for HeNormal
    # (1000, 1000) seed 0 its max is 0.136 against the bound 2·√(2/1000)/0.8796 = 0.1017.
    shape = (1000, 1000)
    k = _keras_values(keras, "HeNormal", {"seed": 0}, shape)
    d = initlab.describe("he_normal", shape, layout="keras")
    ours = initlab.HeNormal(seed=0).sample(shape, layout="keras")
    assert k.abs().max().item() > d.high
    assert ours.abs().max().item() <= d.high
    # Both have the corrected std √(2/1000) (rel. s.e. 0.07 % at n = 10⁶).
    assert ours.double().std().item() == pytest.approx(math.sqrt(2 / 1000), rel=0.005)
    assert k.double().std().item() == pytest.approx(math.sqrt(2 / 1000), rel=0.005)


@pytest.mark.parametrize(
    "config",
    [{}, {"side": "imag"}, {"window": "hamming", "scaling": "spectrum", "periodic": True},
     {"window": None, "scaling": None}, {"window": [0.5, 1.0, 1.0, 0.5] * 4, "scaling": "density"}],
)
def test_stft_matches_keras(keras, config):
    shape = (16, 1, 9)  # (frame T, channels, n_fft/2 + 1)
    t_len, f_len = shape[0], shape[2]
    k = _keras_values(keras, "STFT", config, shape)
    ours = initlab.STFT(**config).sample(shape, layout="keras")
    # initlab computes in float64 and rounds once; Keras computes in float32, and the argument
    # a = −2π·t·f/(2(F − 1)) is the sensitive part: |a| ≤ π(T − 1) = 47 and it carries 4 relative errors
    # of at most u = 2⁻²⁴ (the division, the product, float32 π, the last product), so |Δa| ≤ 4πu(T − 1)
    # = 1.1e-5 — one float32 ulp at 47 is 3.8e-6. cos/sin are 1-Lipschitz; add ≤ (T + 6)·u for evaluating
    # them, Keras's float32 window, its Σw² or Σ|w| scaling and the casts. All of it scales with the
    # basis's amplitude max|w/scale| (the f = 0 column of the real part). The old atol=2e-6 sat 0.2 %
    # above the measured 1.997e-6 of the unwindowed case: one ulp more in Keras's cos would have failed it.
    amp = float(initlab.STFT(**{**config, "side": "real"}).kernel(t_len, f_len)[:, 0].abs().max())
    bound = amp * (4 * math.pi * (t_len - 1) + t_len + 6) * 2.0**-24
    torch.testing.assert_close(ours, k, atol=bound, rtol=0)


@pytest.mark.parametrize(
    ("shape", "axes"),
    [((3, 5), None), ((3, 3, 16, 32), None), ((5, 8, 4), None), ((7,), None), ((2, 3, 4), ([0, 1], [2])),
     ((64, 4, 16), ([0], [1, 2])), ((1, 1, 3, 8), None)],
)
def test_fans_match_keras_compute_fans(keras, shape, axes):
    from keras.src.initializers.random_initializers import compute_fans

    kw = {} if axes is None else {"input_axes": axes[0], "output_axes": axes[1]}
    fi, fo = compute_fans(shape, **kw)
    f = initlab.fans(shape, layout="keras", **kw)
    assert (f.fan_in, f.fan_out) == (fi, fo)


@pytest.mark.parametrize("name", [*CLASSES, "STFT"])
def test_keras_config_dicts_round_trip(keras, name):
    config = CLASSES.get(name, {"side": "imag", "window": "hamming", "periodic": True, "scaling": "spectrum"})
    k_init = getattr(keras.initializers, name)(**config)
    serialized = keras.initializers.serialize(k_init)
    ours = initlab.get(serialized)
    assert type(ours).__name__ == name
    k_config = k_init.get_config()
    # Every key Keras writes comes back with its value (Keras's Identity drops gain; initlab keeps it).
    assert {key: ours.get_config()[key] for key in k_config} == k_config
    back = keras.initializers.deserialize(initlab.serialize(ours))
    assert type(back).__name__ == name and back.get_config() == k_config
    if name == "Identity":
        assert ours.get_config() == {"gain": 1.0}  # Keras serialized {} — its gain was lost there
        assert initlab.get(initlab.serialize(initlab.Identity(2.0))).gain == 2.0


def test_every_keras_name_and_alias_resolves(keras):
    from keras.src.initializers import ALL_OBJECTS_DICT

    for key, cls in ALL_OBJECTS_DICT.items():
        if key in ("Initializer", "initializer"):
            continue
        assert type(initlab.get(key)).__name__ == cls.__name__, key
