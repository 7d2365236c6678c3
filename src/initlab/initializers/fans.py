"""Fan-in and fan-out of a weight tensor, for every layout PyTorch and Keras use.

The fans are the number of inputs feeding one output unit (fan_in) and the number of outputs one
input unit feeds (fan_out). Every variance-scaling initializer is defined by them, so they must be
right per layout — and for grouped convolutions torch's own ``_calculate_fan_in_and_fan_out`` is not
(its fan_out is too large by the group count, pytorch/pytorch#23854).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["LAYOUTS", "Fans", "Layout", "fans"]

Layout = Literal["torch", "torch_transposed", "keras", "keras_transposed", "keras_depthwise"]

#: Layout name -> what the axes of a weight mean.
LAYOUTS: dict[str, str] = {
    "torch": "(out, in/groups, *kernel): nn.Linear, nn.ConvNd, RNN weights",
    "torch_transposed": "(in, out/groups, *kernel): nn.ConvTransposeNd",
    "keras": "(*kernel, in/groups, out): Dense, ConvND, JAX/Flax kernels",
    "keras_transposed": "(*kernel, out, in): Keras ConvNDTranspose (its 'out' axis holds the filters)",
    "keras_depthwise": "(*kernel, in, depth_multiplier): Keras DepthwiseConvND",
}


@dataclass(frozen=True)
class Fans:
    """Fans of one weight tensor. ``receptive_field`` is the product of the kernel's spatial sizes."""

    fan_in: int
    fan_out: int
    receptive_field: int = 1

    @property
    def fan_avg(self) -> float:
        return (self.fan_in + self.fan_out) / 2

    @property
    def fan_geo_avg(self) -> float:
        return math.sqrt(self.fan_in * self.fan_out)

    def get(self, mode: str) -> float:
        """The fan a ``mode`` ("fan_in", "fan_out", "fan_avg", "fan_geo_avg") refers to."""
        try:
            return {
                "fan_in": self.fan_in,
                "fan_out": self.fan_out,
                "fan_avg": self.fan_avg,
                "fan_geo_avg": self.fan_geo_avg,
            }[mode]
        except KeyError:
            raise ValueError(
                f"mode: expected 'fan_in', 'fan_out', 'fan_avg' or 'fan_geo_avg', got {mode!r}."
            ) from None


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in shape)
    except TypeError:
        raise TypeError(f"shape: expected a sequence of ints such as (16, 250), got {shape!r}.") from None
    if len(shape) == 0:
        raise ValueError(
            "shape: a 0-d (scalar) shape has no fans; fan-based initializers need at least 1 dimension "
            "(a bias (n,) or a weight such as (out, in))."
        )
    if any(d <= 0 for d in shape):
        raise ValueError(
            f"shape: {shape} has a zero-size or negative dimension, so fan_in/fan_out are undefined; "
            "every dimension must be >= 1."
        )
    return shape


def _prod(xs: Sequence[int]) -> int:
    return math.prod(xs) if xs else 1


def fans(
    shape: Sequence[int],
    layout: Layout | str = "torch",
    *,
    groups: int = 1,
    input_axes: Sequence[int] | None = None,
    output_axes: Sequence[int] | None = None,
) -> Fans:
    """Fans of a weight of ``shape`` stored in ``layout``.

    - ``"torch"`` (default): (out, in/groups, *k). fan_in = (in/groups)·∏k,
      fan_out = (out/groups)·∏k — each output channel only sees its group.
    - ``"torch_transposed"``: (in, out/groups, *k) of ``nn.ConvTransposeNd``; fan_in = (in/groups)·∏k
      (torch reads it from the output channels instead).
    - ``"keras"``: (*k, in/groups, out). A 2-D shape is a Dense kernel (in, out).
    - ``"keras_transposed"``: (*k, filters, in) of ``ConvNDTranspose``: fan_in = in·∏k.
    - ``"keras_depthwise"``: (*k, in, multiplier): fan_in = ∏k (one input channel per output),
      fan_out = multiplier·∏k.
    - A 1-D shape (n,) gives fan_in = fan_out = n in every layout (Keras's convention).
    - ``input_axes`` and ``output_axes`` (both, or neither) give the fans as products over those
      axes and override the layout, as in Keras 3.15's ``VarianceScaling``.

    >>> fans((32, 16, 3, 3))
    Fans(fan_in=144, fan_out=288, receptive_field=9)
    >>> fans((16, 1, 3, 3), groups=16)   # depthwise: torch says fan_out=144
    Fans(fan_in=9, fan_out=9, receptive_field=9)
    >>> fans((250, 16), layout="keras")
    Fans(fan_in=250, fan_out=16, receptive_field=1)
    """
    shape = _check_shape(shape)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups: expected an int >= 1, got {groups!r}.")
    if (input_axes is None) != (output_axes is None):
        raise ValueError(
            "input_axes/output_axes: give both or neither (Keras silently ignores a lone one; initlab "
            f"does not). Got input_axes={input_axes!r}, output_axes={output_axes!r}."
        )
    if input_axes is not None and output_axes is not None:
        ia, oa = _axes(input_axes, len(shape), "input_axes"), _axes(output_axes, len(shape), "output_axes")
        if set(ia) & set(oa):
            raise ValueError(f"input_axes {list(ia)} and output_axes {list(oa)} must not share an axis.")
        return Fans(_prod([shape[a] for a in ia]), _prod([shape[a] for a in oa]), 1)
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {', '.join(repr(k) for k in LAYOUTS)}, got {layout!r}.")
    if len(shape) == 1:
        if groups != 1:
            raise ValueError(f"groups: a 1-D shape {shape} has no channel axes to group; use groups=1.")
        return Fans(shape[0], shape[0], 1)
    if layout == "torch":
        out_ch, in_per_group, rf = shape[0], shape[1], _prod(shape[2:])
        _divisible(out_ch, groups, "out", shape)
        return Fans(in_per_group * rf, out_ch // groups * rf, rf)
    if layout == "torch_transposed":
        in_ch, out_per_group, rf = shape[0], shape[1], _prod(shape[2:])
        _divisible(in_ch, groups, "in", shape)
        return Fans(in_ch // groups * rf, out_per_group * rf, rf)
    rf = _prod(shape[:-2])
    if layout == "keras":
        in_per_group, out_ch = shape[-2], shape[-1]
        _divisible(out_ch, groups, "out", shape)
        return Fans(in_per_group * rf, out_ch // groups * rf, rf)
    if layout == "keras_transposed":
        filters, in_ch = shape[-2], shape[-1]
        _divisible(in_ch, groups, "in", shape)
        return Fans(in_ch // groups * rf, filters * rf, rf)
    # keras_depthwise
    if groups != 1:
        raise ValueError("groups: a depthwise kernel is already one group per channel; use groups=1.")
    return Fans(rf, shape[-1] * rf, rf)


def _divisible(channels: int, groups: int, which: str, shape: tuple[int, ...]) -> None:
    if channels % groups:
        raise ValueError(
            f"groups: the {which}-channel axis of shape {shape} has {channels} channels, which "
            f"groups={groups} does not divide; groups must divide the channel count."
        )


def _axes(axes: Sequence[int], rank: int, name: str) -> tuple[int, ...]:
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, int) or not -rank <= a < rank:
            raise ValueError(f"{name}: axis {a!r} is not valid for a rank-{rank} shape (use -{rank}..{rank - 1}).")
        out.append(a % rank)
    if not out:
        raise ValueError(f"{name}: must name at least one axis.")
    return tuple(out)
