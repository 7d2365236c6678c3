"""Bad input: every error names the argument, shows the bad value and says what would be valid."""

import re

import pytest
import torch

import initlab


def _raises(exc, *needles):
    """pytest.raises matching every needle (literal text) in the message."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(n)})" for n in needles))


def test_unknown_name_suggests_the_closest():
    with _raises(ValueError, "identifier", "'glorot_unifrom'", "'glorot_uniform'"):
        initlab.get("glorot_unifrom")
    with _raises(ValueError, "identifier", "'HENORMAL'", "'HeNormal'"):
        initlab.get("HENORMAL")
    with _raises(ValueError, "identifier", "'Kaiming'", "initlab.catalogue()"):
        initlab.get({"class_name": "Kaiming", "config": {}})


def test_bad_identifiers_and_configs():
    with _raises(TypeError, "identifier", "int (3)", "glorot_uniform"):
        initlab.get(3)
    with _raises(ValueError, "identifier", "class_name", "['config']"):
        initlab.get({"config": {}})
    with _raises(ValueError, "config", "HeNormal", "['scale']", "seed"):
        initlab.get({"class_name": "HeNormal", "config": {"scale": 2.0}})


@pytest.mark.parametrize("scale", [-1.0, 0.0, float("nan"), True])
def test_negative_or_invalid_scale(scale):
    with _raises(ValueError, "scale", repr(scale), "> 0"):
        initlab.VarianceScaling(scale=scale)


def test_minval_greater_than_maxval():
    with _raises(ValueError, "minval", "minval=0.5", "maxval=-0.5", "minval <= maxval"):
        initlab.RandomUniform(minval=0.5, maxval=-0.5)


def test_wrong_mode_or_distribution():
    with _raises(ValueError, "mode", "'fan_sum'", "'fan_in'", "'fan_geo_avg'"):
        initlab.VarianceScaling(mode="fan_sum")
    with _raises(ValueError, "distribution", "'gaussian'", "'truncated_normal'", "'uniform'"):
        initlab.VarianceScaling(distribution="gaussian")
    with _raises(ValueError, "mode", "'fan_avg'", "'fan_in' or 'fan_out'"):
        initlab.KaimingUniform(mode="fan_avg")
    with _raises(ValueError, "nonlinearity", "'gelu'", "VarianceScaling"):
        initlab.KaimingNormal(nonlinearity="gelu")


def test_other_bad_parameters():
    with _raises(ValueError, "stddev", "-0.1", "> 0"):
        initlab.RandomNormal(stddev=-0.1)
    with _raises(ValueError, "a/b", "a=1.0", "b=0.0", "a < b"):
        initlab.TruncNormal(a=1.0, b=0.0)
    with _raises(ValueError, "sparsity", "1.5", "[0, 1]"):
        initlab.Sparse(sparsity=1.5)
    with _raises(ValueError, "value", "'x'", "finite scalar"):
        initlab.Constant("x")
    with _raises(ValueError, "side", "'complex'", "'real' or 'imag'"):
        initlab.STFT(side="complex")
    with _raises(ValueError, "window", "'hanny'", "'hann'"):
        initlab.STFT(window="hanny")
    with _raises(ValueError, "scaling", "'power'", "'density'"):
        initlab.STFT(scaling="power")
    with _raises(ValueError, "groups", "0", ">= 1"):
        initlab.Dirac(groups=0)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_or_bool_tensors(dtype):
    t = torch.zeros(4, 4, dtype=dtype)
    with _raises(TypeError, "tensor", str(dtype), "float32", "bfloat16"):
        initlab.GlorotUniform()(t)
    with _raises(TypeError, "dtype", str(dtype), "torch.float32"):
        initlab.GlorotUniform().sample((4, 4), dtype=dtype)


@pytest.mark.parametrize("shape", [(), (0, 3), (16, 0, 3, 3)])
def test_undefined_fans(shape):
    with _raises(ValueError, "shape", str(shape)):
        initlab.HeNormal().sample(shape)
    with _raises(ValueError, "shape", "fan", ">= 1" if shape else "at least 1 dimension"):
        initlab.fans(shape)


def test_bad_targets_seeds_layouts_and_ranks():
    with _raises(TypeError, "tensor", "ndarray", "sample"):
        initlab.HeNormal()(__import__("numpy").zeros((3, 3)))
    with _raises(ValueError, "tensor", "meta", "to_empty"):
        initlab.HeNormal()(torch.empty(3, 3, device="meta"))
    with _raises(TypeError, "seed", "float", "1.5", "torch.Generator"):
        initlab.HeNormal().sample((3, 3), seed=1.5)
    with _raises(ValueError, "layout", "'tf'", "'torch'", "'keras'"):
        initlab.HeNormal().sample((3, 3), layout="tf")
    with _raises(ValueError, "shape", "Orthogonal", "at least 2", "(5,)"):
        initlab.Orthogonal().sample((5,))
    with _raises(ValueError, "shape", "Identity", "exactly 2", "(2, 2, 2)"):
        initlab.Identity().sample((2, 2, 2))
    with _raises(ValueError, "groups", "groups=3", "divide"):
        initlab.HeNormal().sample((16, 4, 3, 3), groups=3)
    with _raises(ValueError, "input_axes/output_axes", "both or neither"):
        initlab.VarianceScaling(input_axes=[0])
    with _raises(ValueError, "fans", "(0, 3)", "pair of ints >= 1"):
        initlab.HeNormal().sample((3, 3), fans=(0, 3))
    with _raises(ValueError, "shape", "STFT", "F >= 2", "F=1"):
        initlab.STFT().sample((8, 1, 1), layout="keras")
