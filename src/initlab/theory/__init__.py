"""Theory and data-driven initialization: mean-field signal propagation for any activation, the edge of
chaos, and what builds on them.

``initlab.theory`` is the mean-field namespace (Poole et al. 2016; Schoenholz et al. 2017)::

    from initlab import theory
    theory.chi1("tanh", 1.76, 0.05)        # 0.9998: the edge of chaos
    theory.critical("tanh", sigma_b2=0.05)  # σ_w² = 1.7610

Modules: :mod:`~initlab.theory.maps` (the variance and correlation maps, fixed points, depth scales,
predicted std), :mod:`~initlab.theory.critical_search` (the exact critical-point search),
:mod:`~initlab.theory.critical_init` (the ``Critical`` initializer), :mod:`~initlab.theory.lsuv`
(data-driven LSUV), :mod:`~initlab.theory.residual` (SkipInit, scaled and Fixup residual branches),
:mod:`~initlab.theory.dataflow` (one forward pass recorded op by op) and :mod:`~initlab.theory.streams`
(the residual streams read from it).
This layer uses the catalogue (:mod:`initlab.initializers`) and nothing above it; the presets that use
it live in :mod:`initlab.plan.presets`.
"""

from .critical_search import CriticalPoint, NoCriticalPointError, critical, critical_point
from .maps import (
    DepthScales,
    VarianceMap,
    chi1,
    correlation_fixed_point,
    correlation_map,
    depth_scales,
    expectation,
    fixed_point,
    predict_std,
    variance_map,
)

__all__ = [
    "CriticalPoint",
    "DepthScales",
    "NoCriticalPointError",
    "VarianceMap",
    "chi1",
    "correlation_fixed_point",
    "correlation_map",
    "critical",
    "critical_point",
    "depth_scales",
    "expectation",
    "fixed_point",
    "predict_std",
    "variance_map",
]
