"""LSUV — layer-sequential unit-variance initialization (Mishkin & Matas, ICLR 2016, arXiv:1511.06422), done right.

Algorithm (one forward pass):

1. Orthonormal pre-init of every target layer's weight (Saxe et al. 2014) and zero biases.
2. Concatenate the given batches (statistics are pooled over all of them) and run the model ONCE in
   eval mode, with a forward hook on every target layer. The hooks fire in *execution* order. At a
   layer's first call the hook measures the output's mean and std (before anything downstream — an
   in-place ReLU, say — can touch it), optionally shifts the bias by −mean (mean correction), scales
   weight and bias by s = target/std, and returns the rescaled output, so every later layer already
   sees the corrected signal. For ``nn.Linear``, ``nn.Conv*d`` and ``nn.ConvTranspose*d`` (exact types,
   no parametrization) output·s *is* the new layer's output; any other layer (a subclass overriding
   ``forward``, a parametrized weight) is re-run on the same input after the change, up to
   ``max_iter`` times until within ``tol`` (a secant step in log space, so saturating layers converge
   too) — and reported as ``"unscalable"`` (weight restored) when rescaling its weight does not move
   its std, as for weight-standardized layers and parametrized weights (``weight_norm``,
   ``spectral_norm``), whose ``weight`` is recomputed from other tensors at every call.

The reference package (``lsuv`` 0.3.0) instead runs one full forward pass per layer and attempt
(2L−1 passes), in registration order, and measures a stored output that an in-place activation may
already have overwritten; see ``benchmarks/bench_lsuv.py`` for the side-by-side numbers.

A module called several times in one pass (a shared layer) is scaled by its **first** call only;
later calls are measured and reported (``status="shared"``) — one weight cannot put two different
inputs at the target, and the report shows what the later calls got.

``residual=True`` (or a list of branch-final layers) makes it residual-aware: the last layer of each
``x + f(x)`` branch (found by :func:`initlab.theory.residual.find_residual_branches` from a forward pass on
the first batch) is scaled to target·``branch_scale`` (default 1/√(number of branches)) instead of the
target, so after L blocks the stream has variance target²·(1 + Σ branch_scale²) ≈ 2·target² instead of
(L+1)·target²; the block outputs (the sums) are measured in the same pass and reported (``kind="block"``).

On any error the model's parameters, buffers and training mode are restored before re-raising.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..initializers.matrix import Orthogonal

__all__ = ["LSUVResult", "LayerCall", "lsuv"]

#: Layer types LSUV rescales by default (subclasses too).
DEFAULT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)
_EXACT = {
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
}


@dataclass
class LayerCall:
    """One call of one layer in the LSUV pass.

    ``status``: ``"scaled"`` (brought to the target), ``"shared"`` (a later call of a module already
    scaled by its first call: measured only), ``"unscalable"`` (scaling its weight did not change its
    output std, e.g. weight standardization; the weight was restored), ``"zero"`` (output std 0: no
    scale can fix it), ``"not_converged"`` (a re-run layer still outside ``tol`` after ``max_iter``),
    ``"not_run"`` (a target layer the forward pass never called as a module, e.g. the ``out_proj`` of
    ``nn.MultiheadAttention``, which is applied functionally: pre-initialized but not rescaled), or
    ``"block"`` (``kind="block"``: a residual block output, measured only).
    """

    name: str
    type: str
    call: int
    order: int
    kind: str
    target: float
    std_before: float
    mean_before: float
    scale: float
    bias_shift: float
    std_after: float
    mean_after: float
    status: str

    @property
    def error(self) -> float:
        """|std_after − target| (nan for block outputs, which have no target)."""
        return abs(self.std_after - self.target) if self.kind == "layer" else math.nan


@dataclass
class LSUVResult(Sequence):
    """Per-layer-call results of :func:`lsuv`, in execution order, with what the run cost.

    Indexing and iteration give :class:`LayerCall` rows; ``scales`` maps each layer name to the scale
    applied; ``forward_passes`` counts full model passes (1, or 2 with ``verify=True``).
    """

    calls: list[LayerCall] = field(default_factory=list)
    forward_passes: int = 0
    samples: int = 0
    batches: int = 0
    target_std: float = 1.0
    verified: dict[str, list[float]] = field(default_factory=dict)

    def __getitem__(self, i):  # type: ignore[override]
        return self.calls[i]

    def __len__(self) -> int:
        return len(self.calls)

    @property
    def layers(self) -> list[LayerCall]:
        return [c for c in self.calls if c.kind == "layer"]

    @property
    def blocks(self) -> list[LayerCall]:
        return [c for c in self.calls if c.kind == "block"]

    @property
    def scales(self) -> dict[str, float]:
        return {c.name: c.scale for c in self.calls if c.kind == "layer" and c.call == 0}

    @property
    def problems(self) -> list[LayerCall]:
        """Calls LSUV could not bring to the target (unscalable, zero, not converged, not run)."""
        return [c for c in self.calls if c.status in ("unscalable", "zero", "not_converged", "not_run")]

    @property
    def max_error(self) -> float:
        """max |std − target| over the scaled first calls."""
        errs = [c.error for c in self.calls if c.status == "scaled"]
        return max(errs) if errs else math.nan

    def as_dicts(self) -> list[dict[str, Any]]:
        return [asdict(c) for c in self.calls]

    def __str__(self) -> str:
        head = (
            f"LSUV: {len(self.layers)} layer calls, {len(self.blocks)} block outputs, "
            f"{self.forward_passes} forward pass(es) over {self.samples} samples in {self.batches} batch(es); "
            f"target std {self.target_std:g}"
        )
        rows = [f"{'#':>3} {'layer':<28} {'call':>4} {'std before':>11} {'scale':>9} {'std after':>10}  status"]
        for c in self.calls:
            rows.append(
                f"{c.order:>3} {c.name[:28]:<28} {c.call:>4} {c.std_before:>11.4g} {c.scale:>9.4g} "
                f"{c.std_after:>10.4g}  {c.status}"
            )
        return "\n".join([head, *rows])


def _inputs(batches: Any, get_input: Callable[[Any], Any] | None, max_batches: int | None) -> list[torch.Tensor]:
    if isinstance(batches, torch.Tensor):
        items: Iterable[Any] = [batches]
    elif isinstance(batches, (str, bytes)) or not isinstance(batches, Iterable):
        raise TypeError(
            f"batches: expected a tensor, a list of tensors or an iterable of batches (e.g. a DataLoader), "
            f"got {type(batches).__name__}."
        )
    else:
        items = batches
    out: list[torch.Tensor] = []
    for item in items:
        if max_batches is not None and len(out) >= max_batches:
            break
        x = get_input(item) if get_input is not None else item
        if get_input is None and isinstance(x, (tuple, list)) and x:
            x = x[0]  # (inputs, targets) pairs: the inputs
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"batches: item {len(out)} gives {type(x).__name__}, not a tensor; pass get_input= to pick "
                "the model input out of each batch."
            )
        if x.dim() == 0 or x.shape[0] == 0:
            raise ValueError(f"batches: item {len(out)} has shape {tuple(x.shape)}: no samples in it.")
        out.append(x)
    if not out:
        raise ValueError("batches: got no batches (an empty list or loader); LSUV needs data to measure on.")
    shapes = {tuple(x.shape[1:]) for x in out}
    if len(shapes) > 1:
        raise ValueError(
            f"batches: the batches have different per-sample shapes {sorted(shapes)}; they are pooled into "
            "one forward pass, so they must agree (pass batches of one shape)."
        )
    return out


def _std_mean(t: torch.Tensor) -> tuple[float, float]:
    d = t.detach().to(torch.float64)
    if d.numel() < 2:
        return 0.0, float(d.mean()) if d.numel() else 0.0
    s, m = torch.std_mean(d)
    return float(s), float(m)


def _unit_dim(module: nn.Module, t: torch.Tensor) -> int:
    """The output-unit axis: the last for Linear-like layers, the channel axis 1 for convolutions."""
    return 1 if isinstance(module, nn.modules.conv._ConvNd) and t.dim() > 1 else t.dim() - 1


def _unit_mean(module: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """Each output unit's mean over every other axis (batch, positions), in ``t``'s dtype."""
    d = t.detach()
    ud = _unit_dim(module, d)
    return d.to(torch.float64).mean(dim=[i for i in range(d.dim()) if i != ud]).to(d.dtype)


def _unit_view(module: nn.Module, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``v`` (one value per unit) shaped to broadcast against ``t``."""
    shape = [1] * t.dim()
    shape[_unit_dim(module, t)] = v.numel()
    return v.reshape(shape)


def _is_exact(m: nn.Module) -> bool:
    return type(m) in _EXACT and not hasattr(m, "parametrizations") and not m._forward_pre_hooks


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: must be a finite number > 0, got {value!r}.")
    return float(value)


def lsuv(
    model: nn.Module,
    batches: Any,
    target_std: float = 1.0,
    *,
    tol: float = 0.01,
    max_iter: int = 10,
    orthonormal: bool = True,
    zero_bias: bool = True,
    mean_correction: bool | str = False,
    residual: bool | Sequence[nn.Module] = False,
    branch_scale: float | None = None,
    layers: tuple[type[nn.Module], ...] = DEFAULT_LAYERS,
    max_batches: int | None = 8,
    get_input: Callable[[Any], Any] | None = None,
    verify: bool = False,
    seed: int | None = None,
) -> LSUVResult:
    """Rescale every layer call of ``model`` to output std ``target_std`` in one forward pass.

    ``batches``: a tensor, a list of tensors, or an iterable of batches (``(x, y)`` pairs use ``x``;
    ``get_input`` picks the input otherwise); up to ``max_batches`` are concatenated so the statistics
    are pooled over all of them. ``tol`` is the relative std tolerance for layers that must be re-run
    (exact layer types hit the target to rounding in one step). ``mean_correction`` also shifts the
    bias so each layer's output has mean 0: ``True`` the whole tensor's mean (as in the paper's
    variants); ``"per_unit"`` each output unit's (channel's) own mean over the batch (and positions),
    b_j ← b_j − E[z_j], i.e. b = −W·E[h] for the previous layer's outputs h, with the std then taken
    of the centred output. Per-unit centring is what deep sigmoid nets need: σ's mean ½ otherwise
    reaches every unit as a fixed offset W·½ that swamps the input-dependent part of z (Pennington,
    Schoenholz & Ganguli 2017, "Resurrecting the sigmoid"); ``bias_shift`` then records the mean
    of the per-unit shifts.
    ``residual``: see the module docstring. ``layers``: the module types to rescale. ``verify=True``
    runs a second pass and records each call's std under the final weights in ``result.verified``.
    ``seed`` fixes the orthonormal pre-init. Returns an :class:`LSUVResult`.

    The module docstring explains the algorithm, shared modules and residual mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}.")
    target = _check_positive("target_std", target_std)
    tol = _check_positive("tol", tol)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter: expected an int >= 1, got {max_iter!r}.")
    if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int)
                                    or max_batches < 1):
        raise ValueError(f"max_batches: expected an int >= 1 or None (all), got {max_batches!r}.")
    if not (isinstance(layers, tuple) and layers and all(isinstance(t, type) and issubclass(t, nn.Module)
                                                          for t in layers)):
        raise TypeError(f"layers: expected a non-empty tuple of nn.Module subclasses, got {layers!r}.")
    if not (isinstance(mean_correction, bool) or (isinstance(mean_correction, str) and mean_correction == "per_unit")):
        raise ValueError(f"mean_correction: expected False, True (whole-tensor mean) or 'per_unit', "
                         f"got {mean_correction!r}.")
    per_unit = mean_correction == "per_unit"
    xs = _inputs(batches, get_input, max_batches)

    names = {m: n or type(model).__name__ for n, m in model.named_modules()}
    targets = [m for m in model.modules() if isinstance(m, layers) and isinstance(getattr(m, "weight", None),
                                                                                  torch.Tensor)]
    if not targets:
        raise ValueError(
            f"model: has no layers of the types {[t.__name__ for t in layers]} with a weight; nothing to rescale."
        )

    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    # Floating inputs follow the model's dtype (a float64 model fed float32 data); integer inputs
    # (token ids) are left alone.
    xs = [t.to(device=device, dtype=first.dtype) if first is not None and t.is_floating_point() and
          first.is_floating_point() else t.to(device) for t in xs]
    x = torch.cat(xs, dim=0) if len(xs) > 1 else xs[0]

    branch_last: list[nn.Module] = []
    block_modules: list[nn.Module] = []
    if residual is True:
        from .residual import find_residual_branches

        # From one recorded forward pass on the first batch (it sees functional code fx cannot trace).
        found = find_residual_branches(model, layers, example_input=xs[0])
        if not found:
            raise ValueError(
                "residual: found no x + f(x) branch whose last layer LSUV rescales in the model's forward pass; "
                "pass residual=[the last layer of each branch] to name them, or residual=False."
            )
        branch_last = [b.last_layer for b in found]
        block_modules = [b.block for b in found if b.block is not None and b.block is not model]
    elif residual is not False:
        if isinstance(residual, nn.Module) or not isinstance(residual, Sequence) or not all(
                isinstance(m, nn.Module) for m in residual):
            raise TypeError(
                f"residual: expected True, False or a list of modules (each branch's last layer), got {residual!r}."
            )
        branch_last = list(residual)
        missing = [m for m in branch_last if m not in names]
        if missing:
            raise ValueError(f"residual: {len(missing)} of the given modules are not part of the model.")
    if branch_scale is None:
        branch_scale = 1.0 / math.sqrt(len(branch_last)) if branch_last else 1.0
    else:
        branch_scale = _check_positive("branch_scale", branch_scale)
    branch_set = set(map(id, branch_last))


    # Snapshot everything LSUV may touch, so an error leaves the model as it was.
    saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    was_training = {m: m.training for m in model.modules()}
    result = LSUVResult(samples=int(x.shape[0]), batches=len(xs), target_std=target)
    handles: list[Any] = []
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha is not None else None
    state = {"order": 0, "busy": False}
    calls: dict[nn.Module, int] = {}

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
        if state["busy"]:
            return None
        call = calls.get(module, 0)
        calls[module] = call + 1
        order = state["order"]
        state["order"] += 1
        name = names.get(module, type(module).__name__)
        goal = target * (branch_scale if id(module) in branch_set else 1.0)
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"layers: {name} ({type(module).__name__}) returned {type(output).__name__}, not a tensor; "
                "leave it out of layers=."
            )
        std0, mean0 = _std_mean(output)  # measured now, before any in-place op downstream
        row = LayerCall(name, type(module).__name__, call, order, "layer", goal, std0, mean0, 1.0, 0.0, std0,
                        mean0, "scaled")
        result.calls.append(row)
        if call > 0:
            row.status = "shared"
            return None
        if not math.isfinite(std0) or std0 <= 0:
            row.status = "zero"
            return None
        weight = module.weight
        bias = getattr(module, "bias", None)
        bias = bias if isinstance(bias, torch.Tensor) else None
        shift: float | torch.Tensor = -mean0 if (mean_correction and bias is not None) else 0.0
        scale = goal / std0
        if per_unit and bias is not None:
            shift = -_unit_mean(module, output)
            std_c = _std_mean(output + _unit_view(module, shift, output))[0]
            if not math.isfinite(std_c) or std_c <= 0:
                row.status = "zero"
                return None
            scale = goal / std_c
        if _is_exact(module):
            with torch.no_grad():
                if bias is not None:
                    bias.add_(shift).mul_(scale)
                weight.mul_(scale)
                offset = _unit_view(module, shift, output) if isinstance(shift, torch.Tensor) else shift
                new = (output + offset) * scale
            row.scale = scale
            row.bias_shift = float(shift.mean()) if isinstance(shift, torch.Tensor) else shift
            row.std_after, row.mean_after = _std_mean(new)
            return new
        # Anything else: change the weight, re-run the layer on the same input, repeat.
        w0 = weight.detach().clone()
        b0 = bias.detach().clone() if bias is not None else None
        total, new, std, mean = 1.0, output, std0, mean0
        elasticity = 1.0  # d log std / d log scale: 1 for a layer linear in its weight
        state["busy"] = True
        try:
            for attempt in range(max_iter):
                with torch.no_grad():
                    if bias is not None and per_unit:
                        um = _unit_mean(module, new)
                        bias.sub_(um)
                        row.bias_shift -= float(um.mean())
                        std = _std_mean(new - _unit_view(module, um, new))[0]
                        if not math.isfinite(std) or std <= 0:
                            row.status = "zero"
                            break
                    elif bias is not None and mean_correction:
                        bias.sub_(mean)
                        row.bias_shift -= mean
                    # A secant step in log space: a saturating layer needs a bigger push than goal/std.
                    s = (goal / std) ** (1.0 / elasticity)
                    weight.mul_(s)
                    if bias is not None:
                        bias.mul_(s)
                    total *= s
                    new = module(*inputs)
                prev = std
                std, mean = _std_mean(new)
                if abs(std - goal) <= tol * goal:
                    break
                moved = abs(math.log(std / prev)) if std > 0 and prev > 0 else math.inf
                if attempt == 0 and abs(math.log(s)) > 0.01 and moved < 0.1 * abs(math.log(s)):
                    # Scaling the weight by s moved the std by under a tenth of what it would move a
                    # linear layer: the layer normalizes its weight (weight standardization). Give up on
                    # it rather than drive the weight towards 0 or ∞ through an epsilon.
                    with torch.no_grad():
                        weight.copy_(w0)
                        if bias is not None and b0 is not None:
                            bias.copy_(b0)
                    row.status, row.scale, row.bias_shift = "unscalable", 1.0, 0.0
                    row.std_after, row.mean_after = std0, mean0
                    return None
                if abs(math.log(s)) > 1e-12 and math.isfinite(moved):
                    elasticity = min(max(moved / abs(math.log(s)), 0.1), 1.0)
            else:
                row.status = "not_converged"
        finally:
            state["busy"] = False
        row.scale, row.std_after, row.mean_after = total, std, mean
        return new

    def block_hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if state["busy"] or not isinstance(output, torch.Tensor):
            return
        std, mean = _std_mean(output)
        order = state["order"]
        state["order"] += 1
        call = calls.get(module, 0)
        calls[module] = call + 1
        result.calls.append(LayerCall(names.get(module, type(module).__name__), type(module).__name__, call,
                                      order, "block", math.nan, std, mean, 1.0, 0.0, std, mean, "block"))

    try:
        with torch.no_grad():
            if orthonormal:
                gen = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
                ortho = Orthogonal()
                # QR of layer-sized matrices gains nothing from threads, and an oversubscribed
                # machine makes multithreaded LAPACK ~100× slower (measured: 250 ms vs 2.6 ms for a
                # 64×64 QR on a loaded 2-core box), so the pre-init runs single-threaded.
                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                try:
                    for m in targets:
                        if m.weight.dim() >= 2 and m.weight.numel() > 0:
                            ortho(m.weight, seed=gen)
                finally:
                    torch.set_num_threads(threads)
                    if zero_bias and isinstance(getattr(m, "bias", None), torch.Tensor):
                        m.bias.zero_()
        for m in targets:
            handles.append(m.register_forward_hook(hook))
        for m in block_modules:
            handles.append(m.register_forward_hook(block_hook))
        model.eval()
        # The fused MultiheadAttention/TransformerEncoderLayer fast path (eval + no_grad) skips the
        # submodules' forward calls, so their hooks would never fire: turn it off for the pass.
        if fastpath is not None:
            torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad():
            model(x)
        result.forward_passes = 1
        order = state["order"]
        for m in targets:
            if m not in calls:
                # Never called as a module (e.g. MultiheadAttention's out_proj, applied functionally):
                # orthonormalized but not rescaled — say so rather than skip it silently.
                result.calls.append(LayerCall(names.get(m, type(m).__name__), type(m).__name__, 0, order, "layer",
                                              target, math.nan, math.nan, 1.0, 0.0, math.nan, math.nan, "not_run"))
                order += 1
        if verify:
            for h in handles:
                h.remove()
            handles.clear()
            seen: dict[str, list[float]] = {}

            def measure(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
                if isinstance(output, torch.Tensor):
                    seen.setdefault(names.get(module, type(module).__name__), []).append(_std_mean(output)[0])

            for m in targets:
                handles.append(m.register_forward_hook(measure))
            with torch.no_grad():
                model(x)
            result.forward_passes = 2
            result.verified = seen
    except BaseException:
        with torch.no_grad():
            current = model.state_dict(keep_vars=True)
            for k, v in saved.items():
                current[k].data.copy_(v) if isinstance(current[k], nn.Parameter) else current[k].copy_(v)
        raise
    finally:
        if fastpath is not None:
            torch.backends.mha.set_fastpath_enabled(fastpath)
        for h in handles:
            h.remove()
        for m, t in was_training.items():
            m.training = t
    return result
