"""Fans for every layout, against hand-computed values and torch's own fan computation."""

import math

import pytest
import torch

from initlab import LAYOUTS, Fans, fans


def test_issue_examples():
    assert fans((32, 16, 3, 3)) == Fans(fan_in=144, fan_out=288, receptive_field=9)
    # Depthwise (torch layout (C, 1, k, k), groups=C): each output channel sees one input channel
    # and each input channel feeds one output channel, so fan_out = 9 — torch says 144 (#23854).
    assert fans((16, 1, 3, 3), groups=16) == Fans(9, 9, 9)
    assert fans((250, 16), layout="keras") == Fans(250, 16, 1)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((3, 5), (3, 5)), ((3, 3, 16, 32), (144, 288)), ((5, 8, 4), (40, 20)), ((7,), (7, 7))],
)
def test_keras_layout_matches_keras_measurements(shape, expected):
    # frameworks.md §1.3, measured with Keras 3.15.1's compute_fans.
    f = fans(shape, layout="keras")
    assert (f.fan_in, f.fan_out) == expected


def test_explicit_axes_override_the_layout():
    assert fans((2, 3, 4), input_axes=[0, 1], output_axes=[2]) == Fans(6, 4, 1)
    assert fans((2, 3, 4), layout="torch", input_axes=[-1], output_axes=[0, 1]) == Fans(4, 6, 1)


@pytest.mark.parametrize(
    "module",
    [
        torch.nn.Linear(128, 64),
        torch.nn.Conv1d(4, 6, 5),
        torch.nn.Conv2d(16, 32, 3),
        torch.nn.Conv3d(4, 8, 3),
        torch.nn.Bilinear(5, 7, 3),
    ],
    ids=lambda m: type(m).__name__,
)
def test_torch_layout_matches_torch_when_ungrouped(module):
    ti, to = torch.nn.init._calculate_fan_in_and_fan_out(module.weight)
    f = fans(module.weight.shape)
    assert (f.fan_in, f.fan_out) == (ti, to)


@pytest.mark.parametrize(("c_in", "c_out", "groups"), [(16, 32, 4), (16, 16, 16), (8, 24, 8), (6, 6, 3)])
def test_grouped_conv_fan_out_is_per_group(c_in, c_out, groups):
    conv = torch.nn.Conv2d(c_in, c_out, 3, groups=groups)
    f = fans(conv.weight.shape, groups=groups)
    ti, to = torch.nn.init._calculate_fan_in_and_fan_out(conv.weight)
    assert f.fan_in == ti == (c_in // groups) * 9
    assert f.fan_out == (c_out // groups) * 9
    assert to == f.fan_out * groups  # torch's fan_out is too large by the group count


@pytest.mark.parametrize(("c_in", "c_out", "groups"), [(16, 32, 1), (16, 32, 4), (8, 8, 8)])
def test_conv_transpose_reads_fan_in_from_the_input_channels(c_in, c_out, groups):
    conv = torch.nn.ConvTranspose2d(c_in, c_out, 3, groups=groups)  # weight (in, out/groups, 3, 3)
    f = fans(conv.weight.shape, layout="torch_transposed", groups=groups)
    assert f == Fans((c_in // groups) * 9, (c_out // groups) * 9, 9)
    ti, _ = torch.nn.init._calculate_fan_in_and_fan_out(conv.weight)
    assert ti == (c_out // groups) * 9  # torch swaps them: fan_in from the output channels


def test_keras_and_torch_layouts_agree_on_the_same_conv():
    for k in [(3,), (3, 5), (3, 3, 3)]:
        for groups in (1, 2, 4):
            c_in, c_out = 8, 16
            torch_shape = (c_out, c_in // groups, *k)
            keras_shape = (*k, c_in // groups, c_out)
            assert fans(torch_shape, groups=groups) == fans(keras_shape, "keras", groups=groups)


def test_keras_transposed_and_depthwise():
    # Conv2DTranspose kernel (k, k, filters, in): the real fan_in is in·k² (Keras itself uses filters·k²).
    assert fans((3, 3, 32, 16), layout="keras_transposed") == Fans(144, 288, 9)
    # DepthwiseConv2D kernel (k, k, in, multiplier): fan_in = k² (Keras itself says in·k²).
    assert fans((3, 3, 16, 2), layout="keras_depthwise") == Fans(9, 18, 9)


def test_one_d_shapes_in_every_layout():
    for layout in LAYOUTS:
        assert fans((7,), layout=layout) == Fans(7, 7, 1)


def test_fan_modes():
    f = fans((10, 40))  # fan_in 40, fan_out 10
    assert f.get("fan_in") == 40 and f.get("fan_out") == 10
    assert f.get("fan_avg") == 25.0
    assert f.get("fan_geo_avg") == pytest.approx(20.0, rel=1e-15)
    assert f.fan_geo_avg == math.sqrt(400)


@pytest.mark.parametrize("shape", [(), (0, 3), (4, 0, 3, 3)])
def test_undefined_fans_raise(shape):
    with pytest.raises(ValueError, match="shape"):
        fans(shape)


def test_groups_must_divide_the_channels():
    with pytest.raises(ValueError, match="groups=3"):
        fans((16, 4, 3, 3), groups=3)
