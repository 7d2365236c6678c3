"""describe(): the frozen Description, its text and its numbers."""

import dataclasses
import math

import pytest

import initlab
from initlab import Description, describe

C = 0.87962566103423978  # std of N(0,1) cut to (−2, 2)


def test_issue_example_text_and_fields():
    d = describe(initlab.get("glorot_uniform"), (250, 16), layout="keras")
    assert str(d) == "Uniform(-0.1502, 0.1502)  var = 2/(fan_in+fan_out) = 2/266 = 0.00752  std 0.0867"
    assert (d.fan_in, d.fan_out) == (250, 16)
    assert d.mean == 0.0
    assert d.variance == pytest.approx(2 / 266, rel=1e-15)
    assert d.std == pytest.approx(math.sqrt(2 / 266), rel=1e-15)
    assert d.low == -d.high and d.high == pytest.approx(math.sqrt(6 / 266), rel=1e-15)
    assert d.family == "uniform" and d.shape == (250, 16) and d.layout == "keras"


def test_description_is_frozen_and_serializable():
    d = describe("he_normal", (64, 32))
    assert isinstance(d, Description)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.variance = 1.0
    row = d.as_dict()
    assert row["fan_in"] == 32 and row["variance"] == d.variance and row["std"] == d.std
    assert row["distribution"].startswith("TruncatedNormal(")


@pytest.mark.parametrize(
    ("init", "text", "variance"),
    [
        ("glorot_normal", "var = 2/(fan_in+fan_out)", 2 / (40 + 10)),
        ("he_uniform", "var = 2/fan_in", 2 / 40),
        ("lecun_normal", "var = 1/fan_in", 1 / 40),
        (initlab.VarianceScaling(3.0, "fan_out"), "var = 3/fan_out", 3 / 10),
        (initlab.VarianceScaling(1.0, "fan_geo_avg"), "var = 1/√(fan_in·fan_out)", 1 / 20),
        ("torch_default", "var = 1/(3·fan_in)", 1 / 120),
        (initlab.KaimingNormal(a=0.2, nonlinearity="leaky_relu"), "var = 1.92308/fan_in", 2 / 1.04 / 40),
    ],
)
def test_formula_in_words_with_numbers(init, text, variance):
    d = describe(init, (10, 40))  # torch layout: fan_in 40, fan_out 10
    assert text in d.formula
    assert d.variance == pytest.approx(variance, rel=1e-12)


def test_truncated_normal_bounds_and_variance_correction():
    d = describe("he_normal", (1000, 1000))
    sd = math.sqrt(2 / 1000) / C
    assert d.params["stddev"] == pytest.approx(sd, rel=1e-15)
    assert (d.low, d.high) == (pytest.approx(-2 * sd), pytest.approx(2 * sd))
    assert d.variance == pytest.approx(2 / 1000)  # the cut is compensated: variance exactly scale/fan
    t = describe(initlab.TruncatedNormal(mean=1.0, stddev=0.5), (4, 4))
    assert (t.low, t.high) == (0.0, 2.0) and t.std == pytest.approx(0.5 * C, rel=1e-12)


def test_trunc_normal_moments_agree_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    for mean, std, a, b in [(0.0, 1.0, -2.0, 2.0), (0.0, 0.02, -2.0, 2.0), (0.5, 2.0, 0.0, 1.0), (0.0, 1.0, 1.5, 4.0)]:
        d = describe(initlab.TruncNormal(mean, std, a, b), (8, 8))
        ref = stats.truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std)
        assert d.mean == pytest.approx(ref.mean(), rel=1e-9, abs=1e-12)
        assert d.variance == pytest.approx(ref.var(), rel=1e-9)
        assert (d.low, d.high) == (a, b)
    # torch's absolute bounds: std=0.02 with a=-2, b=2 does not truncate at all.
    assert describe(initlab.TruncNormal(std=0.02), (8, 8)).std == pytest.approx(0.02, rel=1e-12)


def test_structured_and_deterministic_laws():
    o = describe(initlab.Orthogonal(gain=2.0), (8, 2, 3, 3))  # torch view 8×18
    assert o.variance == pytest.approx(4 / 18) and (o.low, o.high) == (-2.0, 2.0)
    i = describe("identity", (3, 5))
    assert i.mean == pytest.approx(3 / 15) and i.variance == pytest.approx(3 / 15 - (3 / 15) ** 2)
    z = describe("zeros", (4,))
    assert (z.mean, z.variance, z.low, z.high, z.fans) == (0.0, 0.0, 0.0, 0.0, None)
    s = describe(initlab.Sparse(0.25, 0.1), (10, 6))
    assert s.params["zeros_per_column"] == 3 and s.variance == pytest.approx(0.7 * 0.01)


def test_describe_accepts_names_dicts_groups_and_explicit_fans():
    by_dict = describe({"class_name": "HeUniform", "config": {}}, (32, 4, 3, 3), groups=8)
    assert (by_dict.fan_in, by_dict.fan_out) == (36, 36)
    assert describe("glorot_uniform", (5, 5), fans=(250, 16)).variance == pytest.approx(2 / 266)
    assert describe("glorot_uniform", (5, 5), fans=initlab.Fans(250, 16)).fan_in == 250
