"""The rows of a report: one :class:`CallStats` per module call, one :class:`ParamStats` per parameter,
one :class:`BlockStats` per same-shape residual block, one :class:`ResidualStats` per residual add of a
traced residual stream, one :class:`AttentionStats` per attention call, and the depth :class:`Trends`.
Plain dataclasses, shared by the measurement (:mod:`initlab.inspect.run`), the findings and the report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["AttentionStats", "BlockStats", "CallStats", "ParamStats", "ResidualStats", "Trends"]


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
    """A same-shape container call recognised as a residual block ``x + f(x)`` — the reading for models
    whose residual streams the trace does not find (see :class:`ResidualStats`).

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
class ResidualStats:
    """One residual add ``skip + branch`` of a residual stream (:mod:`initlab.theory.streams`), measured in
    the inspected run.

    ``stream`` is the stream's index and ``stream_name`` its module prefix (T5: ``encoder.block`` and
    ``decoder.block``), ``position`` the add's place k = 1…N in it (``n_branches`` = N), ``block`` the
    block it belongs to and ``out_proj`` the branch's output projection; ``placement`` is ``pre``
    (pre-LN), ``post`` (post-LN) or ``?``. ``rms_skip``, ``rms_branch`` and ``rms_out`` are the RMS of the
    two operands and of the sum; ``ratio`` = RMS(branch)/RMS(skip) and ``growth`` = RMS(stream after
    this add) / RMS(stream before the stream's first add); ``grad_norm`` is ‖dL/dx‖ of the stream right
    after the add (the backward signal along the stream). ``token_cosine`` is the mean cosine between
    the tokens of each sequence after the add (rank collapse, Dong et al. 2021; 1.0 = every token the
    same vector; None unless the stream is (batch, tokens, features)), ``token_cosine_in`` the same
    before the stream's first add (first add only), ``tokens`` the sequence length; ``branch_kernels``
    every kernel on the branch (the output projection last).
    """

    index: int
    stream: int
    stream_name: str
    position: int
    n_branches: int
    block: str
    module: str
    out_proj: str
    placement: str
    rms_skip: float
    rms_branch: float
    rms_out: float
    ratio: float
    growth: float
    grad_norm: float | None = None
    token_cosine: float | None = None
    token_cosine_in: float | None = None
    tokens: int | None = None
    branch_kernels: list[str] = field(default_factory=list)


@dataclass
class AttentionStats:
    """One attention call: the module that ran it (``path``, ``call``), where the probabilities came from
    (``source``: ``sdpa`` recomputed from ``F.scaled_dot_product_attention``'s arguments, ``softmax`` an
    explicit softmax over the last axis of 4-D scores, ``mha`` ``nn.MultiheadAttention``'s per-head
    weights), ``heads``, ``queries``, ``keys``, and per head the mean over batch and query rows of the
    entropy −Σ p log p (nats; uniform over K keys is log K) and of the entropy / log(keys the row sees)
    (``entropy_normalized``; 1.0 = uniform, so causal rows compare with full ones; None for a head whose
    rows all see one key)."""

    index: int
    path: str
    call: int
    source: str
    heads: int
    queries: int
    keys: int
    entropy: list[float]
    entropy_normalized: list[float | None]

    @property
    def mean_entropy(self) -> float:
        """The entropy averaged over heads."""
        return sum(self.entropy) / len(self.entropy) if self.entropy else math.nan

    @property
    def mean_entropy_normalized(self) -> float | None:
        """The normalized entropy averaged over the heads that have one."""
        vals = [v for v in self.entropy_normalized if v is not None]
        return sum(vals) / len(vals) if vals else None


@dataclass
class Trends:
    """Depth trends over the L weight-layer calls — or, for a transformer (``axis == "residual stream"``:
    a stream of token sequences was traced), over the L residual adds of its longest stream, where the
    forward signal is the RMS of the stream after each add and the backward one ‖dL/dx‖ there (a
    transformer's weight layers in execution order are no chain: q, k, v, output projection, MLP, the
    embedding and the readout each have their own scale). ``axis`` is ``"layers"`` otherwise.

    Rates are per layer: ``z_std_rate`` = exp(b) for the least-squares fit log std(z_ℓ) ≈ a + b·ℓ
    (forward growth per layer), ``grad_rate`` = exp(−b) for the fit of log ‖dL/dz_ℓ‖ (backward growth
    per layer: the factor by which the gradient is multiplied on its way back through one layer; < 1
    vanishing, > 1 exploding); ``*_se`` are the standard errors of the slopes b (log units).
    ``z_std_change`` = std(z_L)/std(z₁) and ``dz_ratio`` = ‖dL/dz₁‖ / ‖dL/dz_L‖.
    ``cosine_first``/``cosine_last`` are the mean cosines at the first and the last hidden layer (the
    readout is left out when L ≥ 3); ``collapse_rate`` is the fitted per-layer factor of (1 − cosine)
    over the second half of the layers and ``collapse_depth`` the depth scale ξ_c = −1/log(collapse_rate)
    (Schoenholz et al. 2017: 1 − c_ℓ ∝ exp(−ℓ/ξ_c); inf if not shrinking). ``residual_rate`` is the
    per-block growth of the residual stream and ``residual_growth`` its last/first ratio (None without
    residual blocks): where the trace found residual streams (:class:`ResidualStats`), of the RMS of the
    stream with the most adds, after each block's last add, relative to before its first add
    (``residual_blocks`` its blocks, ``residual_streams`` how many streams there are,
    ``token_cosine_first``/``token_cosine_last`` its mean token cosine before the first add and after the
    last); otherwise of the std of same-shape residual blocks (:class:`BlockStats`).
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
    residual_streams: int = 0
    token_cosine_first: float | None = None
    token_cosine_last: float | None = None
    axis: str = "layers"
