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
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from . import fused
from .activations import _FUNCTIONS, _MODULE_TYPES, Activation, activation
from .quadrature import derivative

__all__ = [
    "BlockStats",
    "CallStats",
    "ParamStats",
    "SaturationRule",
    "Trends",
    "flush_denormal_state",
    "inspect",
    "saturation_rule",
]

SATURATION_THRESHOLD = 0.05  # |φ'(z)| below 5 % of its maximum counts as saturated
_COSINE_SAMPLES = 64  # inputs used for the mean pairwise cosine (2016 pairs; O(64·width) work)
_RESIDUAL_CORRELATION = 0.2  # corr(in, out) above this marks a same-shape block as x + f(x)
_ACT_TYPES = tuple(_MODULE_TYPES)
_DEAD_CHECK = 0.25  # the dead-unit rule (findings.DEAD_EXCESS) can only fire above this fraction
_ZERO_BELOW = {"relu", "relu6"}  # φ(z) = 0 for z ≤ 0: a unit is dead when z ≤ 0 for the whole batch
_GAP_FLOOR = 1e-12  # 1 − cosine below this is float64 round-off of identical vectors
_SMALL_PARAM = 4096  # float32 parameters up to this size get their sums in float64 (biases, norms)
_NORM_TYPES: tuple[type, ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


# --------------------------------------------------------------------------------------------------
# Result records
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Saturation: the set {z : |φ'(z)| < 5 % max |φ'|} as a union of intervals, found once per activation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SaturationRule:
    """The saturated set of an activation as sorted interval edges.

    The real line is cut at ``edges``; ``first_saturated`` says whether (−∞, edges[0]) is saturated
    and membership alternates across each edge. ``reference`` is P(z saturated) for z ~ N(0, 1),
    exact from the normal CDF. ``max_slope`` is max |φ'| over |z| ≤ 12.
    """

    label: str
    edges: tuple[float, ...]
    first_saturated: bool
    reference: float
    max_slope: float

    def fraction(self, z: torch.Tensor, scratch: torch.Tensor | None = None) -> float:
        """Fraction of the elements of ``z`` in the saturated set.

        With S_e = Σ sign(z − e) for each edge e₁ < … < e_k, the count below e₁ is (n − S₁)/2, between
        e_i and e_{i+1} it is (S_i − S_{i+1})/2 and above e_k it is (n + S_k)/2 (an element exactly on
        an edge counts ½ on each side — a null event for continuous z). Float sign-sums are several
        times faster on CPU than boolean masks and exact in float64 up to 2⁵³ elements. ``scratch``, a
        tensor of z's shape and dtype, receives the signs (no allocation in the middle of a forward).
        """
        z = z.detach()
        n = float(max(z.numel(), 1))
        if not self.edges:
            return 1.0 if self.first_saturated else 0.0
        r = fused.ref(z)
        if r is not None:
            twice, nan = fused.kernels().saturated(*r, _edges_array(self.edges), self.first_saturated)
            return math.nan if nan else twice / (2.0 * n)
        # ±1 sums are exact in float32 below 2²⁴ elements; beyond, accumulate in float64.
        acc = None if z.numel() < 2**24 and z.dtype == torch.float32 else torch.float64
        sums = []
        for e in self.edges:
            if scratch is None:
                sg = torch.sign(z if e == 0.0 else z - e)
            elif e == 0.0:
                sg = torch.sign(z, out=scratch)
            else:
                sg = torch.sign(torch.sub(z, e, out=scratch), out=scratch)
            sums.append(float(sg.sum(dtype=acc)))
        counts = [(n - sums[0]) / 2]
        counts += [(sums[i] - sums[i + 1]) / 2 for i in range(len(sums) - 1)]
        counts.append((n + sums[-1]) / 2)
        start = 0 if self.first_saturated else 1
        total = counts[start]
        for c in counts[start + 2 :: 2]:
            total = total + c
        return total / n


@functools.cache
def _edges_array(edges: tuple[float, ...]) -> np.ndarray:
    """A rule's edges as the float64 array the saturation kernel takes (built once per rule)."""
    return np.array(edges, dtype=np.float64)


_RULES: dict[str, SaturationRule] = {}
_GRID_LIMIT = 12.0
_GRID_POINTS = 24001


def saturation_rule(act: Activation) -> SaturationRule:
    """Find {z : |φ'(z)| < 5 % max|φ'|} for an elementwise activation (cached by its label).

    φ' comes from :func:`initlab.quadrature.derivative` (autograd) on a grid of 24 001 points over
    [−12, 12]; each sign change of |φ'(z)| − 0.05·max|φ'| is refined by 60 bisections, so the edges are
    exact to float64. Outside the grid the set continues as at its ends.
    """
    key = f"{act.label}:{id(act.fn) if act.name not in _KNOWN_LABELS else ''}"
    if key in _RULES:
        return _RULES[key]
    dphi = derivative(act.fn)
    grid = torch.linspace(-_GRID_LIMIT, _GRID_LIMIT, _GRID_POINTS, dtype=torch.float64)
    slope = dphi(grid).abs()
    if not torch.isfinite(slope).all():
        raise ValueError(f"activation {act.label!r}: its derivative is not finite on [-12, 12].")
    max_slope = float(slope.max())
    thr = SATURATION_THRESHOLD * max_slope
    if max_slope == 0.0:
        rule = SaturationRule(act.label, (), True, 1.0, 0.0)
        _RULES[key] = rule
        return rule
    sat = slope < thr
    edges: list[float] = []
    flips = torch.nonzero(sat[1:] != sat[:-1]).flatten().tolist()
    for i in flips:
        lo, hi = float(grid[i]), float(grid[i + 1])
        lo_sat = bool(sat[i])
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            m_sat = bool(dphi(torch.tensor([mid], dtype=torch.float64)).abs()[0] < thr)
            if m_sat == lo_sat:
                lo = mid
            else:
                hi = mid
        # Kinks of piecewise activations sit at integers (ReLU at 0, ReLU6 at 6, hardtanh at ±1); bisection
        # lands within ~1e-18 of them, and an edge of exactly 0 spares a subtraction pass over z per call.
        edges.append(float(round(hi)) if abs(hi - round(hi)) < 1e-12 else hi)
    first = bool(sat[0])
    # P(saturated) under N(0, 1): sum of Φ(b) − Φ(a) over the saturated intervals.
    bounds = [-math.inf, *edges, math.inf]
    ref = 0.0
    for j in range(len(bounds) - 1):
        if (j % 2 == 0) == first:
            ref += _phi(bounds[j + 1]) - _phi(bounds[j])
    rule = SaturationRule(act.label, tuple(edges), first, min(max(ref, 0.0), 1.0), max_slope)
    _RULES[key] = rule
    return rule


_KNOWN_LABELS = {
    "linear",
    "relu",
    "leaky_relu",
    "tanh",
    "sigmoid",
    "selu",
    "gelu",
    "gelu_tanh",
    "silu",
    "mish",
    "elu",
    "celu",
    "softplus",
    "softsign",
    "hardtanh",
    "relu6",
    "hardswish",
    "hardsigmoid",
    "logsigmoid",
    "tanhshrink",
    "sin",
    "exponential",
}


def _phi(x: float) -> float:
    if x == math.inf:
        return 1.0
    if x == -math.inf:
        return 0.0
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


# --------------------------------------------------------------------------------------------------
# Denormals
# --------------------------------------------------------------------------------------------------


def flush_denormal_state() -> bool:
    """Whether the CPU currently flushes denormals (torch has a setter but no getter: we probe).

    2⁻¹²⁶ · 2⁻³ is a float32 subnormal; with flushing on (FTZ/DAZ) the product is 0.
    """
    tiny = torch.tensor([2.0**-126], dtype=torch.float32)
    return bool((tiny * 0.125)[0] == 0.0)


# --------------------------------------------------------------------------------------------------
# Model state: snapshot and exact restore
# --------------------------------------------------------------------------------------------------


def _is_keras(model: Any) -> bool:
    return type(model).__module__.startswith("keras") and hasattr(model, "_flatten_layers")


class _Snapshot:
    """Everything inspection could touch, restored exactly by :meth:`restore`."""

    def __init__(
        self,
        model: nn.Module,
        modules: list[tuple[str, nn.Module]],
        devices: set[torch.device],
        params_untouchable: bool = False,
        tree: list[nn.Module] | None = None,
    ):
        self.slots: list[tuple[nn.Module, str, str, torch.Tensor, torch.Tensor, Any, bool]] = []
        self.storage: dict[int, torch.Tensor] = {}
        seen: set[int] = set()
        every = _all_modules(model, modules, tree)
        for m in every:
            for kind, store in (("param", m._parameters), ("buffer", m._buffers)):
                for name, t in store.items():
                    if t is None:
                        self.slots.append((m, kind, name, t, None, None, False))
                        continue
                    copy = None if id(t) in seen else t
                    seen.add(id(t))
                    self.storage[id(t)] = t.data  # the tensor behind .data, in case someone swaps it
                    self.slots.append((m, kind, name, t, copy, t.grad, t.requires_grad))
        # Values are copied only where the run could write them: buffers always (BatchNorm running
        # statistics), parameters unless no code but torch's own modules runs (see _params_untouchable).
        copies = _copy_all([
            c
            for (_, kind, _, _, c, _, _) in self.slots
            if c is not None and not (params_untouchable and kind == "param")
        ])
        self.slots = [
            (m, kind, name, t, None if c is None else copies.get(id(c), _KEEP), g, r)
            for (m, kind, name, t, c, g, r) in self.slots
        ]
        # ``.grad`` tensors are set aside rather than copied: each leaf's ``.grad`` is None during the
        # run (inspection takes its gradients with ``torch.autograd.grad``), so nothing the model runs
        # can reach the original tensors, and :meth:`restore` puts the same objects back, values
        # untouched — no copy of the gradients in and out (a model's worth of memory traffic).
        for _, _, _, t, c, grad, _ in self.slots:
            if c is not None and grad is not None and t.is_leaf:
                t.grad = None
        self.grad_values = {
            id(t): t.grad.detach().clone()
            for (_, _, _, t, c, _, _) in self.slots
            if c is not None and t.grad is not None
        }
        self.training = [(m, m.training) for m in every]
        self.hooks = [
            (m, dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks)) for m in every
        ]
        self.rng = torch.get_rng_state()
        self.cuda = {}
        for d in devices:
            if d.type == "cuda":
                self.cuda[d] = torch.cuda.get_rng_state(d)

    def restore(self) -> None:
        with torch.no_grad():
            for m, kind, name, t, copy, grad, req in self.slots:
                store = m._parameters if kind == "param" else m._buffers
                store[name] = t
                if t is None:
                    continue
                if copy is not None:
                    data = self.storage[id(t)]
                    # (t's own data_ptr and shape are those of t.data, without making that tensor)
                    if t.data_ptr() != data.data_ptr() or t.shape != data.shape:
                        t.data = data
                    if t.requires_grad != req and t.is_leaf:
                        t.requires_grad_(req)
                    # Always copied back: writes through .data do not bump the version counter,
                    # so "unchanged" cannot be told cheaply and exactly.
                    if copy is not _KEEP:
                        t.copy_(copy)
                    if t.is_leaf:
                        t.grad = grad
                    if grad is not None and id(t) in self.grad_values:
                        grad.copy_(self.grad_values[id(t)])
        for m, mode in self.training:
            if m.training is not mode:  # (nn.Module.__setattr__ is slow; most modes never changed)
                m.training = mode
        for m, fwd, pre, bwd in self.hooks:
            for store, orig in (
                (m._forward_hooks, fwd),
                (m._forward_pre_hooks, pre),
                (m._backward_hooks, bwd),
            ):
                if store != orig:  # an OrderedDict equals a dict with the same items, in any order
                    store.clear()
                    store.update(orig)
        torch.set_rng_state(self.rng)
        for d, state in self.cuda.items():
            torch.cuda.set_rng_state(state, d)


_KEEP = torch.empty(0)  # marks a parameter whose values the run cannot write (no copy was taken)


def _params_untouchable(
    model: nn.Module,
    loss_fn: Any,
    params: list[tuple[str, torch.Tensor]],
    tree: list[nn.Module] | None = None,
) -> bool:
    """True when nothing that runs during inspection can write a parameter's values, so that copying
    them in and out (a model's worth of memory traffic, ~0.1× a forward+backward) can be skipped.

    That holds when every module is one of torch's own (class defined in ``torch.nn.modules``: their
    forwards never write parameters), no module, global or parameter hook is registered (user code
    that could), and the loss is the default or one of torch's loss modules. Anything else — custom
    forwards, parametrizations, Keras layers, hooks, a custom ``loss_fn`` — gets the copy.
    """
    from torch.nn.modules import module as _module

    if loss_fn is not None and not (
        isinstance(loss_fn, nn.modules.loss._Loss) and type(loss_fn).__module__.startswith("torch.nn.modules")
    ):
        return False
    for store in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                  "_global_backward_pre_hooks", "_global_forward_hooks_always_called"):
        if getattr(_module, store, None):
            return False
    for m in model.modules() if tree is None else tree:
        if not type(m).__module__.startswith("torch.nn.modules"):
            return False
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            return False
    return all(not getattr(p, "_backward_hooks", None) and not getattr(p, "_post_accumulate_grad_hooks", None)
               for _, p in params)


def _copy_all(tensors: list[torch.Tensor]) -> dict[int, torch.Tensor]:
    """Exact copies of ``tensors``, by ``id`` of the tensor: the dense ones of each (dtype, device) as
    views into one concatenated buffer — one allocation instead of one per tensor (measured on a
    50-layer MLP of width 256: 2.3 ms instead of 13.5 ms on one CPU thread, the per-tensor allocations'
    page faults dominating) — anything else (sparse, quantized, meta, empty) cloned."""
    out: dict[int, torch.Tensor] = {}
    groups: dict[tuple[Any, Any], list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for t in tensors:
        d = t.detach()
        if d.layout == torch.strided and not d.is_meta and not d.is_quantized and d.numel() > 0:
            groups.setdefault((d.dtype, d.device), []).append((t, d))
        else:
            out[id(t)] = d.clone()
    for group in groups.values():
        flat = torch.cat([d.reshape(-1) for _, d in group])
        offset = 0
        for t, d in group:
            n = d.numel()
            out[id(t)] = flat[offset : offset + n].view(d.shape)
            offset += n
    return out


def _all_modules(
    model: nn.Module, modules: list[tuple[str, nn.Module]], tree: list[nn.Module] | None = None
) -> list[nn.Module]:
    """The model, its modules (``tree``: ``list(model.modules())`` if already made) and, for Keras,
    its layers' modules, each once."""
    out: dict[int, nn.Module] = {id(model): model}
    for m in model.modules() if tree is None else tree:
        out[id(m)] = m
    for _, m in modules:
        if id(m) not in out:  # Keras layers are not torch children of the model
            for sub in m.modules():
                out[id(sub)] = sub
    return list(out.values())


# --------------------------------------------------------------------------------------------------
# Module discovery and classification
# --------------------------------------------------------------------------------------------------


def _discover(model: Any) -> list[tuple[str, nn.Module, bool]]:
    """(path, module, is_leaf) for every module to hook, each once (shared modules fire per call)."""
    if _is_keras(model):
        out = []
        for layer in model._flatten_layers(include_self=False, recursive=True):
            if not isinstance(layer, nn.Module):
                continue
            leaf = not list(layer._flatten_layers(include_self=False, recursive=False))
            out.append((getattr(layer, "path", None) or layer.name, layer, leaf))
        return out
    out = []
    for name, m in model.named_modules():
        leaf = not any(c is not None for c in m._modules.values())  # what children() yields
        if not name and not leaf:
            continue  # the root container: its input and output are the model's
        own = any(p is not None for p in m._parameters.values())
        out.append((name or type(m).__name__, m, leaf or own))
    return out


def _own_params(module: nn.Module, keras: bool) -> list[tuple[str, torch.Tensor]]:
    if keras:
        return [
            (v.path, v.value) for v in getattr(module, "weights", []) if isinstance(v.value, torch.Tensor)
        ]
    return [(n, p) for n, p in module._parameters.items() if p is not None]


def _kind(module: nn.Module, keras: bool) -> str:
    params = _own_params(module, keras)
    if any(p.dim() >= 2 for _, p in params):
        return "layer"
    if isinstance(module, _ACT_TYPES) and not isinstance(module, nn.Identity):
        return "activation"
    if isinstance(module, _NORM_TYPES) or "Normalization" in type(module).__name__:
        return "norm"
    return "other"


def _keras_activation(layer: Any) -> Activation | None:
    fn = getattr(layer, "activation", None)
    if fn is None or not callable(fn):
        return None
    name = getattr(fn, "__name__", "") or ""
    try:
        act = activation(name) if name else activation(fn)
    except (ValueError, TypeError):
        act = Activation(name or type(fn).__name__, fn, "smooth")
    if act.family == "linear":
        return None
    return Activation(act.name, fn, act.family, act.torch_gain, act.params, act.kinks)


# --------------------------------------------------------------------------------------------------
# Tensor helpers
# --------------------------------------------------------------------------------------------------


def _first_float(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj if obj.is_floating_point() else None
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        for o in obj:
            t = _first_float(o)
            if t is not None:
                return t
    return None


def _all_float(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() else []
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _all_float(o)]
    if hasattr(obj, "__dataclass_fields__") or hasattr(obj, "_fields"):
        return [t for v in vars(obj).values() for t in _all_float(v)] if hasattr(obj, "__dict__") else []
    return []


def _map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return type(obj)((k, _map_tensors(v, fn)) for k, v in obj.items())
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_map_tensors(v, fn) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


def _std_mean(
    t: torch.Tensor, scratch: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> tuple[float, float]:
    """(std, mean) of all elements, unbiased (n − 1), as Python floats.

    Where the compiled kernels take ``t`` (:mod:`initlab.fused`), Σx and Σx² come from one float64
    pass. Otherwise one pass of torch ops: mean = Σx/n and var = (Σx² − n·mean²)/(n − 1) with
    Σx² = x·x (BLAS) and the final arithmetic in float64 — several times faster on CPU than
    ``torch.std_mean``; where float32 squares overflow or underflow, Σx² is taken on x scaled by a power
    of two (:func:`_sum_squares_scaled`). Either way, where the one-pass formula loses digits
    (mean² > 100·var) it recomputes two-pass in float64. ``scratch`` (e.g. :meth:`_Recorder.scratch`)
    gives a reusable buffer shaped like its argument for the scaled copy; it is called only on that
    rare path.
    """
    d = t.detach() if t.requires_grad and torch.is_grad_enabled() else t
    n = d.numel()
    if n < 2:
        return 0.0, float(d.to(torch.float64).sum()) if n else math.nan
    r = fused.ref(d)
    if r is not None:
        found = _from_sums(n, *fused.kernels().moments(*r), safe=True)
        if found is not None:
            return found
    elif d.dtype == torch.float32 or d.dtype == torch.float64:
        flat = d.reshape(-1)
        s1 = float(flat.sum())  # torch's CPU sum is cascaded: float32 keeps ~1e-7 relative
        s2 = float(torch.dot(flat, flat))
        safe = False
        if not (math.isfinite(s2) and s2 > 1e-20 * n):
            # Squares overflow (elements beyond ~1e19) or underflow (below ~1e-19) in float32.
            scaled = _sum_squares_scaled(flat, None if scratch is None else scratch(flat))
            if scaled is not None:
                s2, safe = scaled, True
        found = _from_sums(n, s1, s2, safe)
        if found is not None:
            return found
    d64 = d.to(torch.float64)
    mean64 = d64.mean()
    return float((d64 - mean64).pow(2).sum().div(n - 1).sqrt()), float(mean64)


def _from_sums(n: int, s1: float, s2: float, safe: bool = False) -> tuple[float, float] | None:
    """(std, mean) from Σx and Σx² by the one-pass formula, or None where it cannot be trusted (see
    :func:`_std_mean`: non-finite sums, squares that may have underflowed float32, cancellation).
    ``safe``: Σx² was accumulated where the squares cannot underflow (in float64, or scaled), so a
    small or zero Σx² is real — Σx² = 0 is an all-zero tensor, (0, 0) — rather than lost digits."""
    if not (safe or s2 > 1e-20 * n):
        return None
    mean = s1 / n
    var = (s2 - n * mean * mean) / (n - 1)
    if math.isfinite(s2) and math.isfinite(s1) and var >= 0 and var * 100 >= mean * mean:
        return math.sqrt(var), mean
    return None


def _weight_sums(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Σw and Σw² of a float parameter as 0-d tensors (no host round trip until the end of the run);
    with the fused kernels, :meth:`_Recorder._weight_stats` takes float64 sums instead."""
    d = p.reshape(-1)  # (called with autograd off)
    return d.sum(), torch.dot(d, d)


def _groups(tensors: Sequence[torch.Tensor], dtypes: tuple[torch.dtype, ...]) -> list[list[int]]:
    """Indices of the dense ``tensors`` of each (device, dtype), for dtypes in ``dtypes``: the tensors one
    batched call (``torch.stack``, ``torch._foreach_norm``) can take together."""
    groups: dict[tuple[Any, Any], list[int]] = {}
    for i, t in enumerate(tensors):
        if t.dtype in dtypes and t.layout == torch.strided:
            groups.setdefault((t.device, t.dtype), []).append(i)
    return list(groups.values())


_FLOATS = (torch.float32, torch.float64)


def _sums_many(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[float, float]]:
    """(Σx, Σx²) pairs of 0-d tensors as Python floats, with one host round trip per device and dtype."""
    out: list[tuple[float, float] | None] = [None] * len(pairs)
    for idx in _groups([a for a, _ in pairs], _FLOATS):
        flat = torch.stack([t for i in idx for t in pairs[i]]).tolist()
        for k, i in enumerate(idx):
            out[i] = (flat[2 * k], flat[2 * k + 1])
    return out  # type: ignore[return-value]


def _fused_sums(tensors: Sequence[torch.Tensor]) -> dict[int, tuple[float, float]]:
    """(Σx, Σx²) in float64 of each tensor the compiled kernels take, by index: one kernel call per
    dtype for all of them (``moments_many``) instead of one Python round trip each."""
    refs = [(i, r) for i, t in enumerate(tensors) if (r := fused.ref(t)) is not None]
    out: dict[int, tuple[float, float]] = {}
    for wide in (False, True):
        group = [(i, r) for i, r in refs if r[2] is wide]
        if group:
            addrs = np.array([r[0] for _, r in group], dtype=np.int64)
            sizes = np.array([r[1] for _, r in group], dtype=np.int64)
            sums = fused.kernels().moments_many(addrs, sizes, wide).tolist()
            out.update({i: (s1, s2) for (i, _), (s1, s2) in zip(group, sums, strict=True)})
    return out


def _std_mean_many(tensors: Sequence[torch.Tensor]) -> list[tuple[float, float]]:
    """:func:`_std_mean` of each tensor, with the sums of every float32/float64 tensor of a device taken
    together instead of two reductions and two host round trips per tensor: small float32 tensors
    (biases, norm weights: ≤ 4096 elements) concatenated in float64 and summed by segment — so that an
    all-zero bias is exactly (0, 0), not squares that may have underflowed — and the others with
    ``torch._foreach_norm`` for Σx² and one stacked ``tolist`` for Σx. Any tensor the one-pass formula
    does not suit gets :func:`_std_mean` itself. With the compiled kernels, every tensor they take is
    summed in float64 by one call (:func:`_fused_sums`) instead."""
    done = {
        i: _from_sums(tensors[i].numel(), s1, s2, safe=True)
        for i, (s1, s2) in _fused_sums(tensors).items()
        if tensors[i].numel() >= 2
    }
    out: list[tuple[float, float] | None] = [done.get(i) for i in range(len(tensors))]
    for idx in _groups(tensors, _FLOATS):
        idx = [i for i in idx if tensors[i].numel() >= 2 and i not in done]
        small = [i for i in idx if tensors[i].dtype == torch.float32 and tensors[i].numel() <= _SMALL_PARAM]
        large = [i for i in idx if i not in set(small)]
        if small:
            d = torch.cat([tensors[i].detach().reshape(-1) for i in small]).to(torch.float64)
            lengths = torch.tensor([tensors[i].numel() for i in small], device=d.device)
            s1 = torch.segment_reduce(d, "sum", lengths=lengths)
            s2 = torch.segment_reduce(d * d, "sum", lengths=lengths)
            both = torch.stack([s1, s2]).tolist()
            for k, i in enumerate(small):
                out[i] = _from_sums(tensors[i].numel(), both[0][k], both[1][k], safe=True)
        if large:
            ds = [tensors[i].detach() for i in large]
            norms = torch._foreach_norm(ds)
            sums = torch.stack([d.sum() for d in ds])
            both = torch.stack([torch.stack(norms).to(sums.dtype), sums]).tolist()
            for k, i in enumerate(large):
                out[i] = _from_sums(ds[k].numel(), both[1][k], both[0][k] ** 2)
    return [o if o is not None else _std_mean(t) for o, t in zip(out, tensors, strict=True)]


def _norm(t: torch.Tensor, scratch: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
    """‖t‖₂ from float64 sums where the compiled kernels take ``t`` (or a sparse gradient's stored
    values); else in the tensor's precision, scaled by a power of two (:func:`_sum_squares_scaled`, into
    a buffer from ``scratch`` if given) when float32 overflows (‖g‖² beyond 3.4e38) or may have
    underflowed (‖g‖ < 1e-10: squares of elements below ~1e-19 leave float32's normal range); in float64
    for other dtypes or non-finite elements."""
    g = t
    if g.layout != torch.strided:  # a sparse gradient (nn.Embedding(sparse=True)): its stored values
        g = g.coalesce().values() if g.layout == torch.sparse_coo else g.values()
    r = fused.ref(g)
    if r is not None:
        s2 = fused.kernels().moments(*r)[1]  # float64 squares of float32 values neither over- nor underflow
        if math.isfinite(s2):
            return math.sqrt(s2)
    g = g.detach() if g.requires_grad and torch.is_grad_enabled() else g
    v = float(torch.linalg.vector_norm(g))
    if (not math.isfinite(v) and bool(torch.isfinite(g).all())) or v < 1e-10:
        scaled = None
        if g.dtype in _FLOATS and g.layout == torch.strided and g.is_contiguous():
            flat = g.view(-1)
            scaled = _sum_squares_scaled(flat, None if scratch is None else scratch(flat))
        v = math.sqrt(scaled) if scaled is not None else float(torch.linalg.vector_norm(g, dtype=torch.float64))
    return v


def _sum_squares_scaled(flat: torch.Tensor, out: torch.Tensor | None = None) -> float | None:
    """Σx² of a 1-D float tensor whose float32 squares overflow or underflow, as a Python float: x is
    first multiplied by 2⁻ᵏ with 2ᵏ just above max|x| (exact in binary floating point), so the
    squares land in [0, 1) — three fast passes (min/max, scale, dot) where a float64 reduction of
    float32 data takes torch's slow conversion path, and, with ``out`` (a buffer like ``flat``), no
    allocation. Elements below 2⁻¹⁵⁰·max|x| contribute nothing, which is below float64 resolution of the
    sum anyway. 0.0 for an all-zero tensor; None if an element is not finite."""
    lo, hi = torch.aminmax(flat)
    top = max(-float(lo), float(hi))
    if not math.isfinite(top):
        return None
    if top == 0.0:
        return 0.0
    k = math.frexp(top)[1]  # top = f·2ᵏ with f in [0.5, 1)
    y = torch.mul(flat, math.ldexp(1.0, -k), out=out) if out is not None else flat * math.ldexp(1.0, -k)
    return math.ldexp(float(torch.dot(y, y)), 2 * k)


def _head(t: torch.Tensor) -> torch.Tensor:
    """The first 64 inputs' representations of ``t`` (batch first, ≥ 1 dimension), flattened: a view."""
    n = min(t.shape[0], _COSINE_SAMPLES)
    return t.detach()[:n].reshape(n, -1)


def _cosine(t: torch.Tensor, scratch: dict[tuple[Any, ...], torch.Tensor] | None = None) -> float | None:
    """Mean cosine similarity between different inputs' (flattened) representations, over the first
    64 inputs: with unit rows ŷ_i, Σ_{i≠j} ŷ_i·ŷ_j = ‖Σ_i ŷ_i‖² − Σ_i ‖ŷ_i‖², so no Gram matrix is
    needed (O(n·D), in float64 so that 1 − cosine resolves down to ~1e-14). All-zero rows count as
    orthogonal to every other row (Σ_i ‖ŷ_i‖² counts the nonzero rows). ``scratch`` caches the float64
    work buffer by shape."""
    if t.dim() < 1 or t.shape[0] < 2:
        return None
    r = fused.ref(t)
    if r is not None:
        n = min(t.shape[0], _COSINE_SAMPLES)
        _, _, t2, nonzero, bad = fused.kernels().moments_cosine(*r, t.numel() // t.shape[0], n)
        return _cosine_from(t2, nonzero, bad, n)
    src = _head(t)
    n = src.shape[0]
    key = (tuple(src.shape), src.device)
    y = None if scratch is None else scratch.get(key)
    if y is None:
        y = torch.empty(src.shape, dtype=torch.float64, device=src.device)
        if scratch is not None:
            scratch[key] = y
    y.copy_(src)
    norms = torch.linalg.vector_norm(y, dim=1)
    inv = norms.clamp_min(1e-300).reciprocal_()
    total = torch.mv(y.T, inv)  # Σ_i y_i/‖y_i‖
    nonzero = float(torch.dot(norms, inv))  # Σ_i ‖ŷ_i‖²: each term 1 (to an ulp) or 0; NaN if not finite
    if not math.isfinite(nonzero):
        return math.nan
    return (float(torch.dot(total, total)) - round(nonzero)) / (n * (n - 1))


def _cosine_from(t2: float, nonzero: int, bad: int, n: int) -> float:
    """The mean cosine from ‖Σ_i ŷ_i‖², the number of nonzero rows and of non-finite rows (see :func:`_cosine`)."""
    return math.nan if bad else (t2 - nonzero) / (n * (n - 1))


def _sum_and_nonzero(v: torch.Tensor, bound: int) -> tuple[float, int]:
    """(Σv, number of nonzero entries) of a small per-unit vector of whole-number counts whose sum is at
    most ``bound``; on CPU through numpy, whose calls cost a fraction of a torch dispatch at this size.
    A float32 sum of whole numbers is exact below 2²⁴, so only larger bounds are summed in float64."""
    if v.device.type == "cpu" and v.dtype in _FLOATS:
        a = v.numpy()  # (a statistic: never requires grad)
        total = a.sum() if bound < 2**24 else a.sum(dtype=np.float64)
        return float(total), int(np.count_nonzero(a))
    both = torch.stack([v.sum(dtype=torch.float64), torch.count_nonzero(v).to(torch.float64)]).tolist()
    return both[0], int(both[1])


# --------------------------------------------------------------------------------------------------
# Activations called as functions (F.relu, torch.tanh, x.relu_(), …) inside custom forwards
# --------------------------------------------------------------------------------------------------


def _function_table() -> dict[Any, str]:
    table: dict[Any, str] = dict(_FUNCTIONS)
    F = torch.nn.functional
    for fn, name in (
        (torch.Tensor.relu, "relu"),
        (torch.Tensor.relu_, "relu"),
        (torch.relu_, "relu"),
        (F.relu_, "relu"),
        (torch.Tensor.tanh, "tanh"),
        (torch.Tensor.tanh_, "tanh"),
        (torch.tanh_, "tanh"),
        (torch.Tensor.sigmoid, "sigmoid"),
        (torch.Tensor.sigmoid_, "sigmoid"),
        (torch.sigmoid_, "sigmoid"),
        (F.elu_, "elu"),
        (F.leaky_relu_, "leaky_relu"),
        (F.hardtanh_, "hardtanh"),
    ):
        table[fn] = name
    table.pop(torch.exp, None)  # exp is an activation only by name; as a function it is everywhere
    table.pop(torch.sin, None)
    return table


_FUNCTION_TABLE = _function_table()
_PARAM_NAMES = {"leaky_relu": "negative_slope", "elu": "alpha"}


class _FunctionalActivations(TorchFunctionMode):
    """Records elementwise activations called as functions in a model's own code, as activation rows
    named ``<module path>.<function>()``; calls inside activation modules and inside initlab's own
    hooks pass straight through."""

    def __init__(self, rec: _Recorder):
        super().__init__()
        self.rec = rec

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        rec = self.rec
        try:
            name = _FUNCTION_TABLE.get(func)
        except TypeError:  # an unhashable callable
            name = None
        if (
            name is None
            or rec.busy
            or rec.inside_act
            or not args
            or not isinstance(args[0], torch.Tensor)
            or not args[0].is_floating_point()
        ):
            return func(*args, **kwargs)
        return rec.functional(func, name, args, kwargs)


def _needs_function_mode(model: Any, keras: bool, tree: list[nn.Module] | None = None) -> bool:
    """Custom forward code (a class outside torch.nn) or torch's Transformer layers, which call their
    activation as a function, may hide activations from module hooks."""
    if keras:
        return True
    for m in model.modules() if tree is None else tree:
        mod = type(m).__module__
        if not mod.startswith("torch.nn.modules") or isinstance(
            m, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
        ):
            return True
    return False


# --------------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------------


# torch.set_grad_enabled(mode) as a plain call: the public class costs ~1 µs to construct, and inspect
# switches autograd off and on around its statistics ~200 times per run.
_set_grad_enabled = torch._C._set_grad_enabled


class _Recorder:
    def __init__(self, keras: bool, weights: bool = True):
        self.keras = keras
        self.rows: list[dict[str, Any]] = []
        self.blocks: list[dict[str, Any]] = []
        self.pending: dict[int, list[dict[str, Any]]] = {}
        self.calls: dict[int, int] = {}
        self.grad_cells: list[tuple[dict[str, Any], str]] = []
        self.keras_act_rows: dict[int, bool] = {}
        self.last: tuple[torch.Tensor, int, Any, Any] | None = None
        self.acts: dict[int, Activation | None] = {}
        self.buffers: dict[tuple[Any, ...], torch.Tensor] = {}
        self.busy = False  # True while initlab's own statistics run (not to be recorded)
        self.inside_act = 0  # > 0 inside an activation module (its F.* call is that module's row)
        self.stack: list[str] = []
        self.fcalls: dict[str, int] = {}
        self.kinds: dict[int, str] = {}
        # Σw and Σw² of each torch parameter, taken right after its layer's call, while the weights are
        # still in cache from the layer's own kernel (read again cold at the end, they cost ~0.1× a
        # forward+backward on a 50-layer MLP); 0-d tensors, converted in one round trip at the end.
        self.weight_sums: dict[int, tuple[Any, Any]] = {}
        self.weights = weights  # collect them (the first of several runs does; weights do not change)
        # Each measured output's gradient edge (the autograd node that made this version of it, and the
        # output's index among that node's outputs) and its row.
        self.edges: list[tuple[Any, int, dict[str, Any]]] = []
        self.zeros: dict[tuple[Any, Any], torch.Tensor] = {}
        self.keeps: dict[int, bool] = {}
        self.leaf_hooks: list[Any] = []

    def scratch(self, t: torch.Tensor) -> torch.Tensor:
        """A reusable buffer shaped like ``t``: elementwise temporaries in the middle of a forward would
        otherwise each take fresh memory (page faults dominate their cost on CPU)."""
        key = (tuple(t.shape), t.dtype, t.device)
        buf = self.buffers.get(key)
        if buf is None:
            buf = self.buffers[key] = torch.empty(t.shape, dtype=t.dtype, device=t.device)
        return buf

    def stats(self, t: torch.Tensor) -> tuple[Any, Any]:
        """std_mean of ``t``, reusing the previous call's output stats when ``t`` is that tensor,
        unmodified (the usual layer → activation → layer chain), so each tensor is reduced once."""
        last = self.last
        if last is not None and last[0] is t and last[1] == t._version:
            return last[2], last[3]
        std, mean = _std_mean(t, self.scratch)
        self.last = (t, t._version, std, mean)
        return std, mean

    def torch_scratch(self, t: torch.Tensor) -> torch.Tensor | None:
        """:meth:`scratch` where the torch-op path will use it; None where the compiled kernels take
        ``t`` (they need none), so no buffer is allocated in vain."""
        if fused.takes(t) or t.dtype not in _FLOATS or t.layout != torch.strided:
            return None
        return self.scratch(t)

    def saturation(self, act: Activation, z: torch.Tensor) -> float:
        """The saturated fraction of ``z`` under ``act``."""
        return saturation_rule(act).fraction(z, self.torch_scratch(z))

    def remember(self, t: torch.Tensor, s1: float, s2: float) -> None:
        """Cache (std, mean) of ``t`` from float64 Σx and Σx² (a fused pass), for :meth:`stats`."""
        found = _from_sums(t.numel(), s1, s2, safe=True) if t.numel() >= 2 else None
        std, mean = found if found is not None else _std_mean(t)
        self.last = (t, t._version, std, mean)

    def _begin(self) -> bool:
        """Marks initlab's own work (not recorded as the model's) and runs it without autograd (no
        ``detach()`` per statistic). Returns the grad mode :meth:`_end` restores."""
        self.busy = True
        grad = torch.is_grad_enabled()
        _set_grad_enabled(False)
        return grad

    def _end(self, grad: bool) -> None:
        _set_grad_enabled(grad)
        self.busy = False

    def record_norm(self, row: dict[str, Any], g: torch.Tensor | None) -> None:
        """‖dL/dz‖ of a row's output, from its gradient as the backward pass delivers it."""
        if g is not None:
            row["grad_norm"] = _norm(g, self.scratch)

    # ---- forward ----
    def pre(self, path: str, module: nn.Module, leaf: bool, args: tuple, kwargs: dict) -> None:
        self.stack.append(path)
        if leaf and self.activation_of(module) is not None:
            self.inside_act += 1
        prev = self._begin()
        try:
            self.pending.setdefault(id(module), []).append(self._pre(path, module, leaf, args, kwargs))
        finally:
            self._end(prev)

    def _pre(self, path: str, module: nn.Module, leaf: bool, args: tuple, kwargs: dict) -> dict[str, Any]:
        t = args[0] if args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point() else None
        if t is None:
            t = _first_float((args, kwargs))
        info: dict[str, Any] = {"t": t}
        if t is not None:
            info["in_shape"] = tuple(t.shape)
            info["in_std"], info["in_mean"] = self.stats(t)
            info["version"] = t._version
            act = self.activation_of(module) if leaf else None
            if act is not None:
                if type(module) is nn.ReLU and t.dim() >= 1 and t.shape[0] >= 1:
                    info["relu_counts"] = True  # saturation from the output's signs (see _row)
                else:
                    info["saturation"] = self.saturation(act, t)
                if act.name in _ZERO_BELOW and t.dim() >= 2:
                    # 64 inputs of z, for the live-unit cosine (computed only if units turn out dead): z
                    # itself, still intact after the call, where the call cannot overwrite it (torch's own
                    # activation modules with inplace=False), a copy taken now otherwise
                    if self.keeps_input(module):
                        info["z_intact"] = True
                    else:
                        info["z_head"] = _head(t).clone()
        return info

    def keeps_input(self, module: nn.Module) -> bool:
        """Whether a call of ``module`` leaves its input intact: torch's own modules with inplace=False."""
        key = id(module)
        if key not in self.keeps:
            self.keeps[key] = type(module).__module__.startswith("torch.nn.modules") and not getattr(
                module, "inplace", False
            )
        return self.keeps[key]

    def activation_of(self, module: nn.Module) -> Activation | None:
        key = id(module)
        if key not in self.acts:
            act = None
            if not self.keras and not isinstance(module, nn.Identity) and isinstance(module, _ACT_TYPES):
                act = activation(module)
            self.acts[key] = act
        return self.acts[key]

    def kind_of(self, module: nn.Module) -> str:
        key = id(module)
        if key not in self.kinds:
            self.kinds[key] = _kind(module, self.keras)
        return self.kinds[key]

    def post(self, path: str, module: nn.Module, leaf: bool, output: Any, args: tuple | None = None) -> None:
        """After a call. ``args`` is given for modules hooked without a pre-hook (layers that do not
        modify their input in place): their input statistics are taken here."""
        if args is None:
            if self.stack:
                self.stack.pop()
            if leaf and self.activation_of(module) is not None:
                self.inside_act -= 1
        prev = self._begin()
        try:
            info = self._pre(path, module, leaf, args, {}) if args is not None else None
            self._post(path, module, leaf, output, info)
        finally:
            self._end(prev)

    def functional(self, func: Any, name: str, args: tuple, kwargs: dict) -> Any:
        """An activation called as a function: one activation row around the call."""
        z = args[0]
        pname = _PARAM_NAMES.get(name)
        param = kwargs.get(pname) if pname else None
        if (
            pname
            and param is None
            and len(args) > 1
            and isinstance(args[1], (int, float))
            and not isinstance(args[1], bool)
        ):
            param = args[1]
        act = activation(name, float(param)) if param is not None else activation(name)
        path = f"{self.stack[-1] if self.stack else ''}.{getattr(func, '__name__', name)}()".lstrip(".")
        prev = self._begin()
        try:
            info: dict[str, Any] = {"t": z, "in_shape": tuple(z.shape)}
            info["in_std"], info["in_mean"] = self.stats(z)
            if name == "relu" and z.dim() >= 1 and z.shape[0] >= 1:
                info["relu_counts"] = True
            else:
                info["saturation"] = self.saturation(act, z)
            if act.name in _ZERO_BELOW and z.dim() >= 2:
                info["z_head"] = _head(z).clone()
        finally:
            self._end(prev)
        out = func(*args, **kwargs)
        prev = self._begin()
        try:
            n = self.fcalls[path] = self.fcalls.get(path, 0) + 1
            yt = out if isinstance(out, torch.Tensor) and out.is_floating_point() else None
            self._row(path, None, info, yt, n, "activation", act, module_name=getattr(func, "__name__", name))
        finally:
            self._end(prev)
        return out

    def _post(
        self, path: str, module: nn.Module, leaf: bool, output: Any, info: dict[str, Any] | None = None
    ) -> None:
        if info is None:
            stack = self.pending.get(id(module))
            info = stack.pop() if stack else {"t": None}
        n = self.calls[id(module)] = self.calls.get(id(module), 0) + 1
        out = output if isinstance(output, torch.Tensor) and output.is_floating_point() else _first_float(output)
        if not leaf:
            self._block(path, module, info, out, n)
            return
        if self.keras_act_rows.pop(id(module), False):
            return  # rows already written by the activation wrapper
        if self.weights and not self.keras and n == 1:
            self._weight_stats(module)
        self._row(path, module, info, out, n, self.kind_of(module), self.activation_of(module))

    def _weight_stats(self, module: nn.Module) -> None:
        """Σw and Σw² of the module's own parameters, at its first call while they are in cache."""
        for p in module._parameters.values():
            # (without the fused kernels, small float32 ones — biases — are summed together in
            # float64 at the end instead: an all-zero bias must read as exactly zero)
            if p is None or id(p) in self.weight_sums or p.numel() < 2:
                continue
            r = fused.ref(p)
            if r is not None:
                self.weight_sums[id(p)] = fused.kernels().moments(*r)
            elif (
                p.dtype in _FLOATS
                and p.layout == torch.strided
                and (p.numel() > _SMALL_PARAM or p.dtype == torch.float64)
            ):
                self.weight_sums[id(p)] = _weight_sums(p)

    def _row(
        self,
        path: str,
        module: nn.Module | None,
        info: dict[str, Any],
        out: torch.Tensor | None,
        n: int,
        kind: str,
        act: Activation | None,
        module_name: str | None = None,
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "path": path,
            "module": module_name or type(module).__name__,
            "kind": kind,
            "call": n,
            "in_shape": info.get("in_shape"),
            "in_std": info.get("in_std"),
            "in_mean": info.get("in_mean"),
            "activation": act.label if act is not None else None,
        }
        if "saturation" in info:
            row["saturation"] = info["saturation"]
            row["saturation_ref"] = saturation_rule(act).reference if act is not None else None
        if out is not None:
            row["out_shape"] = tuple(out.shape)
            fires: torch.Tensor | None = None
            a = fused.ref(out) if kind in ("layer", "activation") and out.dim() >= 1 else None
            if a is not None:
                # One compiled pass over the output for everything this row needs (see initlab.fused).
                k = fused.kernels()
                cols = out.numel() // out.shape[0]
                if kind == "layer":
                    head = min(out.shape[0], _COSINE_SAMPLES)
                    s1, s2, t2, nonzero, bad = k.moments_cosine(*a, cols, head)
                    row["cosine"] = _cosine_from(t2, nonzero, bad, head) if head >= 2 else None
                elif info.get("relu_counts"):
                    s1, s2, pos, nan, alive = k.relu_out(*a, cols)
                    row["saturation"] = math.nan if nan else 1.0 - pos / out.numel()
                    row["saturation_ref"] = saturation_rule(act).reference if act is not None else None
                else:
                    s1, s2, alive = k.act_out(*a, cols)
                self.remember(out, s1, s2)
                if kind == "activation":
                    row["dead"] = 1.0 - alive / max(cols, 1)
            row["out_std"], row["out_mean"] = self.stats(out)
            if kind == "activation" and a is None and out.dim() >= 1 and out.shape[0] >= 1:
                o = out
                if info.get("relu_counts"):
                    # ReLU: the output is > 0 exactly where z > 0, so the output's signs (1 or 0) give the
                    # saturated fraction — z ≤ 0, where ReLU's slope is 0 (autograd's too, at z = 0) — and,
                    # summed over the batch, how often each unit fires (0: dead): one pass over the
                    # output and a per-unit vector, instead of a pass over z and two over the output.
                    signs = torch.sign(o, out=self.scratch(out))
                    fires = signs.sum(dim=0) if o.is_floating_point() and o.element_size() >= 4 else (
                        signs.sum(dim=0, dtype=torch.float32)
                    )
                    total, alive = _sum_and_nonzero(fires, o.numel())
                    row["saturation"] = 1.0 - total / o.numel()
                    row["saturation_ref"] = saturation_rule(act).reference if act is not None else None
                else:
                    # a unit is dead when max over the batch of |output| is 0 (amax: no slow boolean
                    # reductions); the output of torch's own nn.ReLU6 is ≥ 0 (or NaN), so |·| is skipped
                    if type(module) is not nn.ReLU6:
                        o = torch.abs(o, out=self.scratch(out))
                    fires = o.amax(dim=0)
                    alive = int(torch.count_nonzero(fires))
                row["dead"] = 1.0 - alive / max(fires.numel(), 1)
            if kind == "activation" and row.get("dead", 0.0) > _DEAD_CHECK:
                head = _head(info["t"]) if info.get("z_intact") else info.get("z_head")
                if head is not None:
                    row["live_cosine"] = self._live_cosine(head, out, fires)
            if kind == "layer" and a is None:
                row["cosine"] = _cosine(out, self.buffers)
            if out.requires_grad:
                if out.grad_fn is None:  # a leaf (a parameter returned as is): no node runs for it
                    self.leaf_hooks.append(out.register_hook(lambda g, row=row: self.record_norm(row, g)))
                else:
                    # the node that made this version of ``out`` (what get_gradient_edge returns, without
                    # its checks): an in-place op applied later does not change which gradient is read
                    self.edges.append((out.grad_fn, out.output_nr, row))
        self.rows.append(row)
        return row

    def _live_cosine(self, head: torch.Tensor, out: torch.Tensor, fires: torch.Tensor | None) -> float | None:
        """Mean cosine between inputs' pre-activations ``head`` (first 64 inputs of z, flattened) over
        the units whose output ``out`` is nonzero for some input — in one compiled pass where the
        kernels take both, else from ``fires`` (per-unit counts or maxima of |out|, None: taken here)."""
        za, ya = fused.ref(head), fused.ref(out)
        same = za is not None and ya is not None and za[2] == ya[2]  # one dtype
        if same and head.shape[1] * out.shape[0] == out.numel():
            z_addr, z_n, wide = za
            t2, nonzero, bad = fused.kernels().live_cosine(
                z_addr, z_n, ya[0], ya[1], wide, head.shape[1], head.shape[0]
            )
            return _cosine_from(t2, nonzero, bad, head.shape[0]) if head.shape[0] >= 2 else None
        if fires is None:
            fires = out.abs().amax(dim=0)
        return _cosine(head * (fires > 0).reshape(-1).to(head.dtype), self.buffers)

    def _block(
        self, path: str, module: nn.Module, info: dict[str, Any], out: torch.Tensor | None, n: int
    ) -> None:
        t = info.get("t")
        if t is None or out is None or tuple(t.shape) != tuple(out.shape) or out.numel() < 2:
            return
        a, b = out.detach().to(torch.float64).flatten(), t.detach().to(torch.float64).flatten()
        # Pearson correlation of input and output elements: ~σ_in/σ_out for x + f(x), ~0 otherwise.
        ac, bc = a - a.mean(), b - b.mean()
        corr = float((ac @ bc) / (ac.norm() * bc.norm()).clamp_min(1e-300))
        branch = float((a - b).std()) if t._version == info.get("version") else None
        self.blocks.append(
            {
                "path": path,
                "module": type(module).__name__,
                "call": n,
                "in_std": info["in_std"],
                "out_std": float(a.std()),
                "branch_std": branch,
                "correlation": corr,
                "order": len(self.rows),
                "depth": path.count("."),
            }
        )

    # ---- keras activations inside Dense/Conv ----
    def keras_wrapper(self, path: str, layer: nn.Module, act: Activation) -> Callable[[Any], Any]:
        orig = layer.activation

        def wrapped(z: Any) -> Any:
            grad = self._begin()
            try:
                return measured(z, grad)
            finally:
                self._end(grad)

        def measured(z: Any, grad: bool) -> Any:
            stack = self.pending.get(id(layer))
            info = stack[-1] if stack else {"t": None}
            n = self.calls.get(id(layer), 0) + 1
            zt = z if isinstance(z, torch.Tensor) and z.is_floating_point() else None
            a_info: dict[str, Any] = {"t": zt}
            if zt is not None:
                a_info["in_shape"] = tuple(zt.shape)
                a_info["in_std"], a_info["in_mean"] = self.stats(zt)
                a_info["saturation"] = self.saturation(act, zt)
            if _kind(layer, True) == "layer":
                self._row(path, layer, info, zt, n, "layer", None)
            self.inside_act += 1
            self._end(grad)  # the activation itself is the model's computation
            try:
                y = orig(z)
            finally:
                self.inside_act -= 1
                self._begin()
            yt = y if isinstance(y, torch.Tensor) and y.is_floating_point() else None
            self._row(f"{path}.activation", None, a_info, yt, n, "activation", act, module_name=act.label)
            self.keras_act_rows[id(layer)] = True
            return y

        return wrapped


def _param_grad_hook(
    rec: _Recorder, norms: dict[int, float | None], key: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A parameter hook that records ‖∂L/∂p‖ in ``norms[key]`` and hands autograd a zero-stride zero in
    place of the gradient (the run needs only the norm)."""

    def hook(g: torch.Tensor) -> torch.Tensor:
        norms[key] = _norm(g, rec.scratch)
        if g.layout != torch.strided:
            return g  # sparse: already compact, and autograd expects that layout back
        zero = rec.zeros.get((g.dtype, g.device))
        if zero is None:
            zero = rec.zeros[(g.dtype, g.device)] = torch.zeros((), dtype=g.dtype, device=g.device)
        return zero.expand_as(g)

    return hook


def _grad_norm_hook(rec: _Recorder, output_nr: int, row: dict[str, Any]) -> Callable[[tuple], None]:
    """A pre-hook on an autograd node that records ‖∂L/∂(its output ``output_nr``)‖ in ``row``."""
    return lambda grad_outputs: rec.record_norm(row, grad_outputs[output_nr])


def _run_once(
    model: Any,
    x: Any,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None,
    target: Any,
    hooked: list[tuple[str, nn.Module, bool]],
    keras: bool,
    params: list[tuple[str, torch.Tensor]],
    function_mode: bool = False,
    weights: bool = True,
) -> tuple[_Recorder, dict[int, float | None], torch.Tensor]:
    rec = _Recorder(keras, weights)
    handles: list[Any] = []
    param_hooks: list[tuple[torch.Tensor, Any]] = []
    wrapped: list[tuple[nn.Module, Any]] = []
    try:
        for path, m, leaf in hooked:
            # A pre-hook is needed where the input may be overwritten during the call (inplace=True
            # modules, activations other than torch's own), for containers (the residual branch), for
            # Keras layers and for the module stack that names functional activations; other layers,
            # torch's own activations with inplace=False among them, read their input after the call,
            # one hook dispatch cheaper.
            needs_pre = (
                function_mode
                or keras
                or not leaf
                or bool(getattr(m, "inplace", False))
                or (isinstance(m, _ACT_TYPES) and not type(m).__module__.startswith("torch.nn.modules"))
            )
            if needs_pre:
                handles.append(
                    m.register_forward_pre_hook(
                        lambda mod, a, kw, path=path, leaf=leaf: rec.pre(path, mod, leaf, a, kw),
                        with_kwargs=True,
                    )
                )
                handles.append(
                    m.register_forward_hook(
                        lambda mod, a, o, path=path, leaf=leaf: rec.post(path, mod, leaf, o)
                    )
                )
            else:
                handles.append(
                    m.register_forward_hook(
                        lambda mod, a, o, path=path, leaf=leaf: rec.post(path, mod, leaf, o, a)
                    )
                )
            if keras and leaf:
                act = _keras_activation(m)
                if act is not None:
                    wrapped.append((m, m.activation))
                    object.__setattr__(m, "activation", rec.keras_wrapper(path, m, act))
        # Inputs become differentiable copies, so ‖dL/dz‖ reaches every call even without trainable
        # parameters upstream; a clone keeps in-place ops on the input legal.
        leaves: list[torch.Tensor] = []

        def as_input(t: torch.Tensor) -> torch.Tensor:
            if not t.is_floating_point():
                return t
            leaf = t.detach().requires_grad_(True)
            leaves.append(leaf)
            return leaf.clone()

        xin = _map_tensors(x, as_input)
        with torch.enable_grad():
            mode = _FunctionalActivations(rec) if function_mode else contextlib.nullcontext()
            with mode:
                if isinstance(xin, tuple) and not hasattr(xin, "_fields"):
                    out = model(*xin)
                elif isinstance(xin, dict) and not keras:
                    out = model(**xin)
                else:
                    out = model(xin)
            if loss_fn is None:
                outs = _all_float(out)
                if not outs:
                    raise ValueError(
                        f"inspect: the model's output ({type(out).__name__}) holds no floating-point tensor, "
                        "so the default loss (sum of squares of the outputs) is undefined; pass loss_fn=."
                    )
                loss = sum(o.to(torch.float64).pow(2).sum() for o in outs)
            else:
                loss = loss_fn(out, target)
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    raise ValueError(
                        f"inspect: loss_fn must return a scalar tensor, got {type(loss).__name__}"
                        + (f" of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else "")
                        + "."
                    )
                loss = loss.reshape(())
            wrt = [p for _, p in params if p.requires_grad] + leaves
            if not loss.requires_grad or not wrt:
                raise ValueError(
                    "inspect: the loss does not depend on any parameter or floating-point input, so there "
                    "is no gradient to measure; check that the model's output is computed from x."
                )
            # One pre-hook per measured output, on the node that made it: the gradient is reduced as it
            # arrives and freed at once (holding them all for one batched norm was measured slower: on
            # CPU every held gradient is fresh memory, and its page faults outweigh the batching).
            for node, output_nr, row in rec.edges:
                handles.append(node.register_prehook(_grad_norm_hook(rec, output_nr, row)))
            # Parameter gradients, likewise: each is reduced by a hook as the backward pass delivers it
            # and replaced by a zero-stride zero, so the run never holds a second set of gradients next
            # to the model's own ``.grad`` (a model's worth of memory that the allocator, on CPU, often
            # hands out as fresh pages: 13 MB, ~3 300 page faults, on the 50×256 benchmark MLP).
            # Small ones (biases) are cheaper returned than hooked: their norms are taken at the end.
            weights = wrt[: len(wrt) - len(leaves)]
            by_id: dict[int, float | None] = {id(p): None for p in weights}
            hooked_params = [p for p in weights if p.numel() > _SMALL_PARAM]
            param_hooks = [(p, p._backward_hooks) for p in hooked_params]
            for p in hooked_params:
                handles.append(p.register_hook(_param_grad_hook(rec, by_id, id(p))))
            grads = torch.autograd.grad(loss, wrt, allow_unused=True)
        small = [
            (p, g) for p, g in zip(weights, grads, strict=False) if g is not None and p.numel() <= _SMALL_PARAM
        ]
        sums = _fused_sums([g for _, g in small])
        for k, (p, g) in enumerate(small):
            s2 = sums[k][1] if k in sums else math.nan
            by_id[id(p)] = math.sqrt(s2) if math.isfinite(s2) else _norm(g, rec.scratch)
        return rec, by_id, loss.detach()
    finally:
        for h in handles + rec.leaf_hooks:
            h.remove()
        for p, hooks in param_hooks:
            if hooks is None:
                p._backward_hooks = None  # as it was: no hook dictionary at all
        for m, fn in wrapped:
            object.__setattr__(m, "activation", fn)


# --------------------------------------------------------------------------------------------------
# Trends
# --------------------------------------------------------------------------------------------------


def _fit(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Slope and its standard error of log(v_ℓ) on ℓ over the finite positive entries."""
    pts = [(i, math.log(v)) for i, v in enumerate(values) if v is not None and math.isfinite(v) and v > 0]
    if len(pts) < 2:
        return None, None
    xs = np.array([p[0] for p in pts], dtype=float)
    ys = np.array([p[1] for p in pts], dtype=float)
    xc = xs - xs.mean()
    sxx = float(xc @ xc)
    slope = float(xc @ (ys - ys.mean())) / sxx
    if len(pts) > 2:
        resid = ys - ys.mean() - slope * xc
        se = math.sqrt(float(resid @ resid) / (len(pts) - 2) / sxx)
    else:
        se = 0.0
    return slope, se


def trends(calls: list[CallStats], blocks: list[BlockStats]) -> Trends:
    """Depth trends (see :class:`Trends`) from the rows of one report."""
    layers = [c for c in calls if c.kind == "layer"]
    z = [c.z_std for c in layers]
    g = [c.grad_norm for c in layers]
    zs, zse = _fit(z)
    gs, gse = _fit(g)
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


# --------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------


def _devices(params: Iterable[torch.Tensor], x: Any) -> set[torch.device]:
    return {p.device for p in params} | {t.device for t in _all_float(x)}


def _average(runs: list[list[dict[str, Any]]], what: str) -> list[dict[str, Any]]:
    first = runs[0]
    if len(runs) == 1:
        return first
    for k, r in enumerate(runs[1:], start=2):
        if [(row["path"], row.get("call")) for row in r] != [(row["path"], row.get("call")) for row in first]:
            raise ValueError(
                f"inspect: run {k} called a different sequence of {what} than run 1 (data-dependent control "
                "flow); cannot average batches or seeds for this model — inspect them one at a time."
            )
    out = []
    for j, row in enumerate(first):
        merged = dict(row)
        for key, v in row.items():
            if isinstance(v, float) and key not in ("order",):
                vals = [r[j].get(key) for r in runs]
                if all(isinstance(u, float) for u in vals):
                    merged[key] = float(np.mean(vals))
        out.append(merged)
    return out


def inspect(
    model: Any,
    x: Any = None,
    *,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    target: Any = None,
    batches: Iterable[Any] | None = None,
    seeds: Sequence[int] | None = None,
    recommend: bool = True,
    tolerance: float = 10.0,
) -> Any:
    """Run ``x`` through ``model`` with hooks and return a :class:`initlab.report.Report`.

    ``x`` is a tensor (``model(x)``), a tuple (``model(*x)``) or a dict (``model(**x)``; a Keras model
    gets the dict itself). The loss is ``loss_fn(output, target)`` if given, else the sum of squares of
    all floating-point outputs, L = Σ y², whose gradient 2y propagates the output itself backward; the
    report says which. ``batches`` (an iterable of further inputs, or of ``(x, target)`` pairs when
    ``loss_fn`` is given) and ``seeds`` (for dropout and other stochastic layers: ``torch.manual_seed``
    before each run) average the statistics over runs. ``recommend`` attaches the recommended
    :func:`initlab.plan` to unhealthy findings. ``tolerance`` is the factor by which a quantity may
    change across the whole depth before a finding is raised (see :mod:`initlab.findings`).

    The model is restored exactly afterwards (see the module docstring), also when something raises.
    """
    from .findings import judge
    from .report import Report

    if not isinstance(model, nn.Module):
        raise TypeError(
            f"inspect: model must be a torch.nn.Module or a Keras 3 model on the torch backend, got "
            f"{type(model).__name__}."
        )
    keras = _is_keras(model)
    runs_in: list[tuple[Any, Any]] = []
    if x is not None:
        runs_in.append((x, target))
    if batches is not None:
        for b in batches:
            if loss_fn is not None and isinstance(b, tuple) and len(b) == 2 and not isinstance(x, tuple):
                runs_in.append(b)
            else:
                runs_in.append((b, target))
    if not runs_in:
        raise ValueError("inspect: x is None and no batches= were given; pass an example input batch.")
    if not isinstance(tolerance, (int, float)) or not tolerance > 1:
        raise ValueError(
            f"inspect: tolerance must be a number > 1 (a factor over the depth), got {tolerance!r}."
        )
    seed_list: list[int | None] = list(seeds) if seeds is not None else [None]
    if not seed_list:
        raise ValueError("inspect: seeds must be None or a non-empty sequence of ints, got [].")

    hooked = _discover(model)
    params: list[tuple[str, torch.Tensor]] = []
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            params.append((name, p))
    if not params:
        raise ValueError(
            f"inspect: the model ({type(model).__name__}) has no parameters, so there is no initialization "
            "to inspect. Inspect a model with at least one weight (Linear, Conv, Dense, …)."
        )

    tree = list(model.modules())  # one walk of the module tree for the checks and the snapshot below
    function_mode = _needs_function_mode(model, keras, tree)
    snap = _Snapshot(
        model,
        [(p, m) for p, m, _ in hooked],
        _devices((p for _, p in params), x if x is not None else runs_in[0][0]),
        params_untouchable=not keras and _params_untouchable(model, loss_fn, params, tree),
        tree=tree,
    )
    flush_before = flush_denormal_state()
    flushed = torch.set_flush_denormal(True)  # False where the CPU cannot flush (no probe needed)
    try:
        rows_runs, block_runs, grad_runs, losses = [], [], [], []
        weight_sums: dict[int, tuple[Any, Any]] = {}
        for xb, tb in runs_in:
            for s in seed_list:
                if s is not None:
                    torch.manual_seed(int(s))
                first = not rows_runs
                rec, grads, loss = _run_once(
                    model, xb, loss_fn, tb, hooked, keras, params, function_mode, weights=first
                )
                if first:
                    weight_sums = rec.weight_sums
                rows_runs.append(rec.rows)  # every statistic is already a Python float
                block_runs.append(rec.blocks)
                grad_runs.append(grads)
                losses.append(float(loss))
        param_stats = _param_stats(model, params, hooked, keras, grad_runs, weight_sums)
    finally:
        torch.set_flush_denormal(flush_before)
        snap.restore()

    rows = _average(rows_runs, "modules")
    blocks_raw = _average(block_runs, "blocks") if block_runs[0] else []
    calls = _calls(rows)
    blocks = [
        BlockStats(
            index=int(b["order"]),
            path=b["path"],
            module=b["module"],
            in_std=b["in_std"],
            out_std=b["out_std"],
            branch_std=b.get("branch_std"),
            growth=b["out_std"] / b["in_std"] if b["in_std"] else math.inf,
            correlation=b["correlation"],
        )
        for b in blocks_raw
    ]
    tr = trends(calls, blocks)
    meta = {
        "model": type(model).__name__,
        "framework": "keras" if keras else "torch",
        "loss": "sum of squares of the outputs"
        if loss_fn is None
        else f"loss_fn={getattr(loss_fn, '__name__', repr(loss_fn))}(output, target)",
        "loss_value": float(np.mean(losses)),
        "runs": len(rows_runs),
        "batches": len(runs_in),
        "seeds": [s for s in seed_list if s is not None],
        "batch_size": _batch_size(runs_in[0][0]),
        "training_mode": bool(model.training),
        "flush_denormal": bool(flushed),
        "flush_denormal_note": (
            "denormals flushed to zero during the run (torch.set_flush_denormal(True)); previous setting "
            f"({'on' if flush_before else 'off'}) restored"
            if flushed
            else "this CPU cannot flush denormals: vanishing signals may run slowly"
        ),
        "tolerance": float(tolerance),
        "functional_activations": function_mode,
    }
    report = Report(calls=calls, params=param_stats, blocks=blocks, trends=tr, findings=[], meta=meta)
    report.findings = judge(report, model=model, x=runs_in[0][0], recommend=recommend, tolerance=tolerance)
    return report


def _batch_size(x: Any) -> int | None:
    t = _first_float(x)
    if t is None and isinstance(x, torch.Tensor):
        t = x
    return int(t.shape[0]) if t is not None and t.dim() >= 1 else None


def _calls(rows: list[dict[str, Any]]) -> list[CallStats]:
    calls = []
    depth = 0
    for i, r in enumerate(rows):
        kind = r["kind"]
        z = r.get("out_std") if kind == "layer" else r.get("in_std") if kind == "activation" else None
        d = None
        if kind == "layer":
            depth += 1
            d = depth
        calls.append(
            CallStats(
                index=i,
                path=r["path"],
                module=r["module"],
                kind=kind,
                in_shape=r.get("in_shape"),
                out_shape=r.get("out_shape"),
                in_mean=r.get("in_mean"),
                in_std=r.get("in_std"),
                out_mean=r.get("out_mean"),
                out_std=r.get("out_std"),
                z_std=z,
                activation=r.get("activation"),
                saturation=r.get("saturation"),
                saturation_ref=r.get("saturation_ref"),
                dead=r.get("dead"),
                grad_norm=r.get("grad_norm"),
                cosine=r.get("cosine"),
                depth=d,
                call=int(r.get("call", 1)),
                live_cosine=r.get("live_cosine"),
            )
        )
    return calls


def _param_stats(
    model: Any,
    params: list[tuple[str, torch.Tensor]],
    hooked: list[tuple[str, nn.Module, bool]],
    keras: bool,
    grad_runs: list[dict[int, float | None]],
    weight_sums: dict[int, tuple[Any, Any]] | None = None,
) -> list[ParamStats]:
    from .fans import fans

    owner: dict[int, tuple[str, str]] = {}
    for path, m, _ in hooked:
        for pname, p in _own_params(m, keras):
            owner.setdefault(id(p), (path, pname if keras else f"{path}.{pname}"))
    layout = "keras" if keras else "torch"
    fan_cache: dict[tuple[int, ...], int | None] = {}
    weight_sums = weight_sums or {}
    ids = [id(p) for _, p in params]
    # float64 sums from a fused pass are final; torch's 0-d float32 sums come back in one round trip
    known: dict[int, tuple[float, float] | None] = {}
    taken: list[torch.Tensor] = []
    for (_, p), pid in zip(params, ids, strict=True):
        sums = weight_sums.get(pid)
        if sums is None:
            continue
        if isinstance(sums[0], float):
            known[pid] = _from_sums(p.numel(), *sums, safe=True)
        else:
            taken.append(p)
    for p, (s1, s2) in zip(taken, _sums_many([weight_sums[id(p)] for p in taken]), strict=True):
        known[id(p)] = _from_sums(p.numel(), s1, s2)
    rest = [p for (_, p), pid in zip(params, ids, strict=True) if known.get(pid) is None]
    known.update({id(p): sm for p, sm in zip(rest, _std_mean_many([p.detach() for p in rest]), strict=True)})
    runs = len(grad_runs)
    out = []
    for (name, p), pid in zip(params, ids, strict=True):
        sm = known[pid]
        mod, pretty = owner.get(pid, ("", name))
        n = p.numel()
        if not n:
            sm = (0.0, 0.0)
        # ‖W‖² = Σw² = (n − 1)·std² + n·mean²: no second pass over the weights.
        norm = math.sqrt(max((n - 1) * sm[0] ** 2 + n * sm[1] ** 2, 0.0)) if n > 1 else float(_norm(p.detach()))
        if runs == 1:
            g = grad_runs[0].get(pid)
        else:
            gvals = [r.get(pid) for r in grad_runs]
            g = sum(gvals) / runs if all(v is not None for v in gvals) else None  # type: ignore[arg-type]
        shape = tuple(p.shape)
        fan_in = None
        if len(shape) >= 2:
            if shape not in fan_cache:
                try:
                    fan_cache[shape] = int(fans(shape, layout).fan_in)
                except ValueError:
                    fan_cache[shape] = None  # a layout fans() does not know: reported as unknown (None)
            fan_in = fan_cache[shape]
        out.append(
            ParamStats(
                name=pretty,
                module=mod,
                shape=shape,
                layout=layout,
                fan_in=fan_in,
                mean=float(sm[1]) if n else 0.0,
                std=float(sm[0]) if n > 1 else 0.0,
                norm=norm,
                grad_norm=g,
                ratio=(g / norm) if g is not None and norm > 0 else None,
                requires_grad=bool(p.requires_grad),
            )
        )
    return out
