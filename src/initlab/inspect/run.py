"""``inspect()``: check the arguments, snapshot the model, run every batch × seed with hooks
(:mod:`initlab.inspect.hooks`), restore the model, average the runs into rows, compute the trends and
the parameter table, and judge the report (:mod:`initlab.inspect.findings`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .depth_trends import trends
from .discovery import _discover, _is_keras
from .findings import judge
from .hooks import _needs_function_mode, _run_once
from .params import _param_stats
from .report import Report
from .rows import BlockStats, CallStats
from .sharded import detect, reshard
from .snapshot import _params_untouchable, _Snapshot, flush_denormal_state
from .statistics import _all_float, _first_float

__all__ = ["inspect"]


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
    """Run ``x`` through ``model`` with hooks and return a :class:`initlab.inspect.report.Report`.

    ``x`` is a tensor (``model(x)``), a tuple (``model(*x)``) or a dict (``model(**x)``; a Keras model
    gets the dict itself). The loss is ``loss_fn(output, target)`` if given, else the sum of squares of
    all floating-point outputs, L = Σ y², whose gradient 2y propagates the output itself backward; the
    report says which. ``batches`` (an iterable of further inputs, or of ``(x, target)`` pairs when
    ``loss_fn`` is given) and ``seeds`` (for dropout and other stochastic layers: ``torch.manual_seed``
    before each run) average the statistics over runs. ``recommend`` attaches the recommended
    :func:`initlab.plan` to unhealthy findings. ``tolerance`` is the factor by which a quantity may
    change across the whole depth before a finding is raised (see :mod:`initlab.inspect.findings`).

    The model is restored exactly afterwards (see the module docstring), also when something raises.
    """
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

    # FSDP2 leaves its root's unsharded parameters registered after a forward pass: start from the sharded
    # state, so the parameters collected here (and snapshot below) are the ones that persist
    reshard(model)
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

    sharding = detect(params)  # DTensor parameters under a process group: reduce over the ranks
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
                    model, xb, loss_fn, tb, hooked, keras, params, function_mode, weights=first,
                    sharded=sharding is not None and sharding.data_parallel,
                )
                if first:
                    weight_sums = rec.weight_sums
                if sharding is not None:
                    loss = sharding.reduce_run(rec.rows, rec.blocks, rec.units, float(loss))
                    if sharding.data_parallel:  # each rank's ∂L/∂W is its batch shard's part: not the whole
                        grads = dict.fromkeys(grads)
                rows_runs.append(rec.rows)  # every statistic is already a Python float
                block_runs.append(rec.blocks)
                grad_runs.append(grads)
                losses.append(float(loss))
        if sharding is not None:
            reshard(model)  # before the parameter table: FSDP2's root still holds its unsharded copies
        moments = sharding.param_moments(params) if sharding is not None else None  # every shard, once
        param_stats = _param_stats(model, params, hooked, keras, grad_runs, weight_sums, moments)
    finally:
        torch.set_flush_denormal(flush_before)
        if sharding is not None:
            reshard(model)
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
    if sharding is not None:
        meta.update(rank=sharding.rank, ranks=sharding.world, sharding=sharding.note())
        if sharding.data_parallel and rows:
            meta["batch_size"] = _global_batch(rows, meta["batch_size"])
    report = Report(calls=calls, params=param_stats, blocks=blocks, trends=tr, findings=[], meta=meta)
    report.findings = judge(report, model=model, x=runs_in[0][0], recommend=recommend, tolerance=tolerance)
    return report


def _global_batch(rows: list[dict[str, Any]], local: int | None) -> int | None:
    """The whole batch of a data-parallel run: the first row's reduced input batch dimension."""
    shape = rows[0].get("in_shape") or rows[0].get("out_shape")
    return int(shape[0]) if shape else local


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
