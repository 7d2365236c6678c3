"""The rows of a report: one :class:`CallStats` per module call, one :class:`ParamStats` per parameter,
one :class:`BlockStats` per residual block, and the depth :class:`Trends`. Plain dataclasses, shared by
the measurement (:mod:`initlab.inspect.run`), the findings and the report."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BlockStats", "CallStats", "ParamStats", "Trends"]


@dataclass
class CallStats:
    """Statistics of one call of one module (one row of the report).

    ``kind`` is ``"layer"`` (a module with a weight of ≥ 2 dimensions: Linear, Conv, Dense, …; these
    calls define depth), ``"activation"``, ``"norm"`` or ``"other"``. ``z_std`` is the std of the
    pre-activation z (a layer's output, an activation's input). ``saturation`` is the fraction of
    units with |φ'(z)| < 5 % max|φ'|, ``saturation_ref`` the same for z ~ N(0, 1). ``dead`` is the
    fraction of output units that are zero for the whole batch. ``grad_norm`` is ‖dL/d(output)‖.
    ``cosine`` is the mean cosine similarity between different inputs' outputs (layers only);
    ``live_cosine`` the same for a ReLU-like activation's input over the units that fire for some input.
    ``depth`` numbers the layer calls 1…L.
    """

    index: int
    path: str
    module: str
    kind: str
    in_shape: tuple[int, ...] | None
    out_shape: tuple[int, ...] | None
    in_mean: float | None
    in_std: float | None
    out_mean: float | None
    out_std: float | None
    z_std: float | None = None
    activation: str | None = None
    saturation: float | None = None
    saturation_ref: float | None = None
    dead: float | None = None
    grad_norm: float | None = None
    cosine: float | None = None
    depth: int | None = None
    call: int = 1
    live_cosine: float | None = None


@dataclass
class ParamStats:
    """One parameter: its std, norm, gradient norm and ‖∂L/∂W‖ / ‖W‖; ``fan_in`` from the layout."""

    name: str
    module: str
    shape: tuple[int, ...]
    layout: str
    fan_in: int | None
    mean: float
    std: float
    norm: float
    grad_norm: float | None
    ratio: float | None
    requires_grad: bool


@dataclass
class BlockStats:
    """A same-shape container call recognised as a residual block ``x + f(x)``.

    ``branch_std`` is std(out − in) (the residual branch), ``growth`` = out_std / in_std and
    ``correlation`` the Pearson correlation of input and output elements.
    """

    index: int
    path: str
    module: str
    in_std: float
    out_std: float
    branch_std: float | None
    growth: float
    correlation: float


@dataclass
class Trends:
    """Depth trends over the L weight-layer calls.

    Rates are per layer: ``z_std_rate`` = exp(b) for the least-squares fit log std(z_ℓ) ≈ a + b·ℓ
    (forward growth per layer), ``grad_rate`` = exp(−b) for the fit of log ‖dL/dz_ℓ‖ (backward growth
    per layer: the factor by which the gradient is multiplied on its way back through one layer; < 1
    vanishing, > 1 exploding); ``*_se`` are the standard errors of the slopes b (log units).
    ``z_std_change`` = std(z_L)/std(z₁) and ``dz_ratio`` = ‖dL/dz₁‖ / ‖dL/dz_L‖.
    ``cosine_first``/``cosine_last`` are the mean cosines at the first and the last hidden layer (the
    readout is left out when L ≥ 3); ``collapse_rate`` is the fitted per-layer factor of (1 − cosine)
    over the second half of the layers and ``collapse_depth`` the depth scale ξ_c = −1/log(collapse_rate)
    (Schoenholz et al. 2017: 1 − c_ℓ ∝ exp(−ℓ/ξ_c); inf if not shrinking). ``residual_rate`` is the
    per-block growth of the residual stream's std and
    ``residual_growth`` its last/first ratio (None without residual blocks).
    ``nonfinite_grad_layers``/``nonfinite_act_layers`` list the depths where ‖dL/dz‖ or std(z)
    overflowed; ``zero_grad_layers``/``zero_act_layers`` those where it underflowed to exactly 0 while
    the last layer's gradient (first layer's std) is positive — a signal that vanished below float range.
    """

    depth: int
    z_std_rate: float | None
    z_std_rate_se: float | None
    z_std_change: float | None
    grad_rate: float | None
    grad_rate_se: float | None
    dz_ratio: float | None
    cosine_first: float | None
    cosine_last: float | None
    collapse_rate: float | None
    collapse_depth: float | None
    residual_blocks: int
    residual_rate: float | None
    residual_growth: float | None
    nonfinite_grad_layers: list[int] = field(default_factory=list)
    nonfinite_act_layers: list[int] = field(default_factory=list)
    zero_grad_layers: list[int] = field(default_factory=list)
    zero_act_layers: list[int] = field(default_factory=list)
