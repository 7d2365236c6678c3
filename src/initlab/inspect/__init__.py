"""Inspection: run a batch through a model with hooks and measure, layer call by layer call, what the
initialization does to the signal — forward and backward — then judge it.

What is measured (one row per *call*, in execution order, so a module called twice appears twice):

* input and output mean and std of the call;
* the pre-activation std — the tutorial's std of z: the output std of a weight layer, the input std
  of an activation;
* saturation of any elementwise activation: the fraction of units where |φ'(z)| < 5 % of max |φ'|
  (Glorot & Bengio 2010, Fig. 2–4), next to the same fraction for z ~ N(0, 1) as a reference (an
  element exactly on an edge of that set counts half, except for ReLU, whose slope at z = 0 is 0 in
  autograd too: there z ≤ 0 is saturated, read off the output's signs);
* dead units: units (non-batch positions) that are exactly zero for the whole batch;
* ‖dL/dz‖, the gradient norm with respect to the call's output, read by a pre-hook on the
  autograd node that made the output (so the version the call made, also when an in-place op
  overwrites it later) — not only weight gradients, which stay level while the signal dies
  (Glorot & Bengio 2010, Fig. 8);
* each parameter's gradient norm and gradient-to-weight ratio ‖∂L/∂W‖ / ‖W‖;
* depth trends over the weight-layer calls ℓ = 1…L: per-layer growth rates of std(z_ℓ) and of
  ‖dL/dz_ℓ‖ from a least-squares fit of their logarithms against ℓ, the ratio
  ‖dL/dz₁‖ / ‖dL/dz_L‖, the mean cosine similarity between different inputs' representations
  (correlation collapse, Schoenholz et al. 2017; Hanin & Rolnick 2018) and residual-stream growth of
  ``x + f(x)`` blocks (Brock, De & Smith 2021, signal propagation plots).

The model is left exactly as it was: parameters, buffers (BatchNorm running statistics), ``.grad``,
train/eval mode, hooks, ``requires_grad`` and the global RNG state are restored, also when the
forward or the loss raises. Gradients are taken with ``torch.autograd.grad``, so ``.grad`` is never
written. Denormal floats (which a vanishing signal produces and which slow CPUs ~30×) are flushed
during the run with ``torch.set_flush_denormal(True)``; the previous setting is restored after.

``initlab.inspect(model, x)`` returns a :class:`~initlab.inspect.report.Report`; on the package object
``initlab`` the name ``inspect`` is that function, so import this package's modules by their full path
(``from initlab.inspect.report import Report``, ``from initlab.inspect import fused``).

Modules, lowest first: :mod:`~initlab.inspect.rows` (the row records), :mod:`~initlab.inspect.fused` and
:mod:`~initlab.inspect._fused_kernels` (compiled statistics), :mod:`~initlab.inspect.saturation`,
:mod:`~initlab.inspect.statistics` (per-call statistics), :mod:`~initlab.inspect.discovery`,
:mod:`~initlab.inspect.params` (parameter statistics), :mod:`~initlab.inspect.snapshot` (the exact
restore), :mod:`~initlab.inspect.recorder` and :mod:`~initlab.inspect.hooks` (one run),
:mod:`~initlab.inspect.depth_trends`, :mod:`~initlab.inspect.findings` (verdicts),
:mod:`~initlab.inspect.report` (tables, JSON, plots), :mod:`~initlab.inspect.run` (``inspect()``) and
:mod:`~initlab.inspect.fix` (``fix()``). This layer may use every layer below it (the catalogue, the
theory, plans), never the experiments.
"""

from .depth_trends import trends
from .rows import BlockStats, CallStats, ParamStats, Trends
from .run import inspect
from .saturation import SaturationRule, saturation_rule
from .snapshot import flush_denormal_state

__all__ = [
    "BlockStats",
    "CallStats",
    "ParamStats",
    "SaturationRule",
    "Trends",
    "flush_denormal_state",
    "inspect",
    "saturation_rule",
    "trends",
]
