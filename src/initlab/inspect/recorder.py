"""The recorder of one run: turns every module call (and every activation called as a function) into a
row of statistics as the forward pass makes it, and hands the backward pass the hooks that add ‖dL/dz‖."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..initializers.activations import Activation, activation
from . import fused
from .discovery import _ACT_TYPES, _kind
from .params import _SMALL_PARAM, _weight_sums
from .saturation import saturation_rule
from .statistics import (
    _COSINE_SAMPLES,
    _FLOATS,
    _cosine,
    _cosine_from,
    _first_float,
    _from_sums,
    _head,
    _norm,
    _std_mean,
    _sum_and_nonzero,
)

_DEAD_CHECK = 0.25  # the dead-unit rule (findings.DEAD_EXCESS) can only fire above this fraction
_ZERO_BELOW = {"relu", "relu6"}  # φ(z) = 0 for z ≤ 0: a unit is dead when z ≤ 0 for the whole batch
_PARAM_NAMES = {"leaky_relu": "negative_slope", "elu": "alpha"}
# torch.set_grad_enabled(mode) as a plain call: the public class costs ~1 µs to construct, and inspect
# switches autograd off and on around its statistics ~200 times per run.
_set_grad_enabled = torch._C._set_grad_enabled


class _Recorder:
    """What one run records, as the forward pass makes it: a row per module call (and per activation called
    as a function or inside a Keras layer), the residual blocks, each parameter's Σw and Σw² at its layer's
    first call, and the autograd edges whose gradients fill in ‖dL/dz‖ during the backward pass.
    :mod:`initlab.inspect.hooks` installs the hooks that call it.

    It is one class on purpose (~390 lines). Every method works on the same run state: the pending calls
    that a post-hook pops, the statistics of the last tensor (which the next call reuses), the scratch
    buffers, the per-module caches (activation, kind, whether the input survives the call) and the busy
    flag that keeps initlab's own statistics out of the functional-activation mode. Split into several
    classes, each part would need all of that state. This is also the hook path whose per-call Python
    cost the inspection benchmarks measure (README, *Inspection*).
    """

    def __init__(self, keras: bool, weights: bool = True, sharded: bool = False):
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
        # A data-parallel run (initlab.inspect.sharded) reduces its rows over ranks afterwards: it needs
        # which units fired (a unit is dead only if dead on every rank's batch) and residual blocks' sums.
        self.sharded = sharded
        self.units: list[tuple[dict[str, Any], torch.Tensor]] = []

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
                # One compiled pass over the output for everything this row needs (see initlab.inspect.fused).
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
            if self.sharded and "dead" in row:
                self.units.append((row, (out != 0).reshape(out.shape[0], -1).any(0).to(torch.uint8)))
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
        sums = [float(a.numel()), float(a.sum()), float(a @ a), float(b.sum()), float(b @ b), float(a @ b)] \
            if self.sharded else None
        self.blocks.append(
            {
                "sums": sums,
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
