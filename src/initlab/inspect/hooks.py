"""One run with hooks: forward pre/post hooks on every module, a ``TorchFunctionMode`` for activations
called as functions inside custom forwards, Keras activations wrapped, pre-hooks on the autograd nodes
for ‖dL/dz‖ and on large parameters for ‖∂L/∂W‖, then one ``torch.autograd.grad``; every hook is removed
afterwards."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..distributed.placements import is_dtensor
from ..initializers.activations import _FUNCTIONS
from .discovery import _ACT_TYPES, _keras_activation
from .params import _SMALL_PARAM, _fused_sums
from .recorder import _Recorder
from .statistics import _all_float, _map_tensors, _norm


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


def _computing_copies(hooked: list[tuple[str, nn.Module, bool]], wrt: list[torch.Tensor]) -> list[torch.Tensor]:
    """The parameters a sharded model computed with, where they are not the ones it holds: FSDP2 gathers
    plain copies of its DTensor parameters for the forward pass, so the gradient that reaches a layer fed
    by integer inputs (an embedding) flows to its copy alone; taking gradients for the copies too makes
    autograd run that layer's backward, where its output's ‖dL/dz‖ is read. Their own gradients (each
    rank's batch shard's part) are discarded."""
    seen = {id(t) for t in wrt}
    out = []
    for _, m, _ in hooked:
        for p in m._parameters.values():
            if p is not None and p.requires_grad and id(p) not in seen and not is_dtensor(p):
                seen.add(id(p))
                out.append(p)
    return out


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
    sharded: bool = False,
) -> tuple[_Recorder, dict[int, float | None], torch.Tensor]:
    rec = _Recorder(keras, weights, sharded)
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
            copies = _computing_copies(hooked, wrt) if sharded else []
            for p in copies:
                if p.numel() > _SMALL_PARAM:
                    handles.append(p.register_hook(_param_grad_hook(rec, {}, id(p))))
            grads = torch.autograd.grad(loss, wrt + copies, allow_unused=True)[: len(wrt)]
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
