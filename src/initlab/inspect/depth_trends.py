"""Depth trends over the weight-layer calls ℓ = 1…L: growth rates of std(z) and ‖dL/dz‖ from
least-squares fits of their logarithms, the gradient ratio, correlation collapse and residual-stream growth."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .rows import BlockStats, CallStats, Trends

__all__ = ["trends"]


_RESIDUAL_CORRELATION = 0.2  # corr(in, out) above this marks a same-shape block as x + f(x)
_GAP_FLOOR = 1e-12  # 1 − cosine below this is float64 round-off of identical vectors


def _fit(values: Sequence[float | None], ito: float = 0.0) -> tuple[float | None, float | None]:
    """Slope of log(v_ℓ) on ℓ over the finite positive entries, and its standard error.

    At finite width a signal's log-norm is not a line plus independent noise but a random walk: each
    layer multiplies it by an independent random factor (for ReLU, log‖z_ℓ‖² takes steps of variance
    ≈ 5/(4n); Hanin 2018, Hanin & Rolnick 2018). The ordinary least-squares error, which assumes
    independent residuals, then understates the slope's uncertainty by a factor that grows with depth.
    So the error is the larger of the OLS one and the random-walk one, s·√(6/(5m)) for m points whose
    consecutive steps have spread s (the variance of an OLS slope fitted to a random walk). s is the
    median absolute deviation of the steps (×1.4826, the sd for Gaussian steps), so that one odd step —
    a readout whose bias dominates its output — does not pass for layer-to-layer noise.

    ``ito`` (±1, or 0 for none) removes the bias that the noise puts into a log-scale slope: a layer
    that keeps E[‖z‖²] exactly (He's law) still shrinks E[log ‖z‖] by half the variance of its log-factor
    (Jensen), i.e. by s² per layer on the log of a norm whose steps have spread s. Forward signals drift
    down along ℓ (``ito=+1`` adds s² back); gradients, whose noise enters going backward, drift up along
    ℓ (``ito=-1``). Without it a correctly scaled ReLU net of width 64 reads as vanishing by depth 100."""
    pts = [(i, math.log(v)) for i, v in enumerate(values) if v is not None and math.isfinite(v) and v > 0]
    if len(pts) < 2:
        return None, None
    xs = np.array([p[0] for p in pts], dtype=float)
    ys = np.array([p[1] for p in pts], dtype=float)
    xc = xs - xs.mean()
    sxx = float(xc @ xc)
    slope = float(xc @ (ys - ys.mean())) / sxx
    if len(pts) <= 2:
        return slope, 0.0
    resid = ys - ys.mean() - slope * xc
    se = math.sqrt(float(resid @ resid) / (len(pts) - 2) / sxx)
    steps = np.diff(ys) / np.diff(xs)  # per-layer steps (gaps from skipped entries spread evenly)
    if steps.size >= 2:
        spread = 1.4826 * float(np.median(np.abs(steps - np.median(steps))))
        se = max(se, spread * math.sqrt(6.0 / (5.0 * len(pts))))
        slope += ito * spread * spread
    return slope, se


def trends(calls: list[CallStats], blocks: list[BlockStats]) -> Trends:
    """Depth trends (see :class:`Trends`) from the rows of one report."""
    layers = [c for c in calls if c.kind == "layer"]
    z = [c.z_std for c in layers]
    g = [c.grad_norm for c in layers]
    zs, zse = _fit(z, ito=+1.0)
    gs, gse = _fit(g, ito=-1.0)
    dz = None
    if len(layers) >= 2 and g[0] is not None and g[-1] is not None:
        dz = (
            g[0] / g[-1]
            if g[-1] not in (0.0,) and math.isfinite(g[-1])
            else (math.nan if g[0] == 0 else math.inf)
        )
        if g[-1] == 0.0 and g[0] == 0.0:
            dz = math.nan
    zchange = None
    if len(layers) >= 2 and z[0] and z[-1] is not None and math.isfinite(z[0]) and z[0] > 0:
        zchange = z[-1] / z[0]
    # The readout is left out: it sees the final (often pooled) features, whose similarity reflects
    # the architecture's mean shift (a global average of ReLU maps) more than the depth trend.
    hidden = layers[:-1] if len(layers) >= 3 else layers
    cos = [c.cosine for c in hidden]
    # Correlation depth scale ξ_c (Schoenholz et al. 2017: 1 − c_ℓ ∝ exp(−ℓ/ξ_c)), fitted on the second
    # half of the layers — where the early transient is over — over gaps above float64's floor.
    half = [None if c is None else 1.0 - c for c in cos[len(cos) // 2 :]]
    cs, _ = _fit([g if g is not None and g > _GAP_FLOOR else None for g in half])
    # The residual stream: same-shape blocks at the outermost level that has any.
    res = [b for b in blocks if b.correlation > _RESIDUAL_CORRELATION]
    if res:
        top = min(b.path.count(".") for b in res)
        res = [b for b in res if b.path.count(".") == top]
    rs, _ = _fit([b.out_std for b in res])
    nonfinite_g = [c.depth for c in layers if c.grad_norm is not None and not math.isfinite(c.grad_norm)]
    nonfinite_a = [c.depth for c in layers if c.z_std is not None and not math.isfinite(c.z_std)]
    g_last = layers[-1].grad_norm if layers else None
    zero_g = [c.depth for c in layers if c.grad_norm == 0.0] if g_last and math.isfinite(g_last) else []
    z_first = layers[0].z_std if layers else None
    zero_a = [c.depth for c in layers if c.z_std == 0.0] if z_first and math.isfinite(z_first) else []
    return Trends(
        depth=len(layers),
        z_std_rate=None if zs is None else math.exp(zs),
        z_std_rate_se=zse,
        z_std_change=zchange,
        grad_rate=None if gs is None else math.exp(-gs),
        grad_rate_se=gse,
        dz_ratio=dz,
        cosine_first=cos[0] if cos else None,
        cosine_last=cos[-1] if cos else None,
        collapse_rate=None if cs is None else math.exp(cs),
        collapse_depth=None if cs is None else (math.inf if cs >= 0 else -1.0 / cs),
        residual_blocks=len(res),
        residual_rate=None if rs is None else math.exp(rs),
        residual_growth=(res[-1].out_std / res[0].in_std) if res and res[0].in_std else None,
        nonfinite_grad_layers=[d for d in nonfinite_g if d is not None],
        nonfinite_act_layers=[d for d in nonfinite_a if d is not None],
        zero_grad_layers=[d for d in zero_g if d is not None],
        zero_act_layers=[d for d in zero_a if d is not None],
    )
