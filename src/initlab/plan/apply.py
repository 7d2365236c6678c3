"""Whole-model plans: see every parameter's fans, initializer, std and the reason — then apply.

>>> import torch, initlab
>>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
>>> p = initlab.plan(model, preset="auto", example_input=torch.randn(4, 8))
>>> [e.initializer.name for e in p.entries]
['Orthogonal', 'Zeros', 'GlorotUniform', 'Zeros']
>>> _ = p.apply(seed=0)

Guarantees of :meth:`Plan.apply`:

- **by name**: each entry's values come from a generator seeded with a stable hash (SHA-256) of
  ``(seed, entry path)``; they do not depend on registration order or on which other parameters exist;
- **all or nothing**: everything that can fail runs before the first write — every entry is validated
  (dtype, shape and fans through ``describe``, seed), and every value from an initializer outside
  initlab's trusted catalogue is computed into a fresh tensor; only then are the trusted entries filled
  in place (fills that cannot fail once validated) and the fresh tensors swapped in (and everything
  swapped back if a post step fails — plans with post steps use fresh tensors throughout);
- **meta device**: a model built under ``torch.device("meta")`` is materialized parameter by parameter
  on ``device`` — each parameter gets a fresh tensor that replaces the meta one, so the model is never
  held twice;
- **sharded models**: on DTensor parameters (FSDP2, tensor parallelism) every rank fills only its shard,
  with values that do not depend on the sharding (:mod:`initlab.plan.sharded`).
"""

from __future__ import annotations

import concurrent.futures as cf
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..distributed import comm
from ..distributed.placements import is_dtensor
from ..initializers import Initializer, serialize
from ..initializers.base import _check_seed
from ..initializers.counter import entry_seed
from ..initializers.counter_fill import fill_shard
from ..initializers.description import Description
from ..initializers.fans import Fans
from ..initializers.registry import CATALOGUE
from ..initializers.shard_index import ShardIndex
from .labels import _fmt, _init_label
from .sharded import apply_sharded, pinned_threads
from .sites import PostStep

if TYPE_CHECKING:
    from ..theory.streams import ResidualStream
    from .trace import ModelTrace

__all__ = ["Plan", "PlanEntry", "entry_seed"]


def _trusted(init: Initializer) -> bool:
    """Whether ``init`` may fill a parameter in place during an all-or-nothing apply: one of initlab's own
    catalogue classes, by exact type (a user subclass may override ``_fill``), whose
    :meth:`~initlab.initializers.Initializer.fill_cannot_fail` says its fill cannot raise once validated."""
    cls = type(init)
    return cls.__module__.startswith("initlab.initializers.") and cls in CATALOGUE and init.fill_cannot_fail()


@dataclass
class PlanEntry:
    """One row of a plan: a parameter, or a slice of one (``path`` then ends in ``[label]``).

    ``initializer`` is ``None`` when the parameter is left as is (``why`` says why); ``std``, ``low`` and
    ``high`` are the planned law of the values (from :meth:`Initializer.describe` with these fans);
    ``rule`` names the rule that chose the initializer, if one did. ``rng`` says, once :meth:`Plan.apply`
    has filled it, what drew its values: ``"torch"`` (the initializer itself, a ``torch.Generator`` seeded
    by the entry seed), ``"counter"`` (the counter-based fill by global index) or ``"torch (whole on rank
    k)"`` (a sharded model's whole-tensor entry, computed on rank k and sent in blocks).
    """

    path: str
    shape: tuple[int, ...]
    layout: str
    fans: Fans | None
    initializer: Initializer | None
    std: float | None
    why: str
    rule: str | None = None
    param_path: str = ""
    part: str | None = None
    index: tuple[Any, ...] | None = None
    module_type: str = ""
    role: str | None = None
    description: Description | None = None
    fixed: bool = False
    rng: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def low(self) -> float | None:
        return None if self.description is None else self.description.low

    @property
    def high(self) -> float | None:
        return None if self.description is None else self.description.high

    @property
    def mean(self) -> float | None:
        return None if self.description is None else self.description.mean

    @property
    def initializer_label(self) -> str:
        return "left as is" if self.initializer is None else _init_label(self.initializer)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "param_path": self.param_path,
            "part": self.part,
            "shape": list(self.shape),
            "layout": self.layout,
            "fan_in": None if self.fans is None else self.fans.fan_in,
            "fan_out": None if self.fans is None else self.fans.fan_out,
            "initializer": None if self.initializer is None else serialize(self.initializer),
            "initializer_label": self.initializer_label,
            "std": self.std,
            "mean": self.mean,
            "low": self.low,
            "high": self.high,
            "why": self.why,
            "rule": self.rule,
            "module_type": self.module_type,
            "role": self.role,
            "rng": self.rng,
            "aliases": list(self.aliases),
        }


@dataclass
class Plan:
    """The dry run of initializing ``model`` with ``preset`` (and ``rules``): see :func:`plan`.

    ``options``: the preset options the call gave (checked; defaults not repeated). ``trace``: what one
    forward pass on ``example_input`` said about the model (:class:`~initlab.plan.trace.ModelTrace`), or
    ``None`` when the plan was made without one; :attr:`residual` its residual streams."""

    model: Any
    preset: str
    entries: list[PlanEntry]
    post_steps: list[PostStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _params: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    options: dict[str, Any] = field(default_factory=dict)
    #: How the last :meth:`apply` drew the values (``None`` before): seed, rng, ranks, entries per rng.
    applied: dict[str, Any] | None = None
    trace: ModelTrace | None = field(default=None, repr=False)
    #: Per-parameter learning-rate factors (preset ``mup``), by parameter name; see :meth:`param_groups`.
    lr_scales: dict[str, Any] = field(default_factory=dict, repr=False)

    def param_groups(self, base_lr: float, *, weight_decay: float = 0.0, optimizer: str = "adam") -> list[dict[str, Any]]:
        """Optimizer parameter groups with μP's per-layer learning rates (a ``mup`` plan), for
        ``torch.optim.AdamW(plan.param_groups(lr, weight_decay=wd))`` — what ``mup.MuAdamW(params, lr=lr,
        weight_decay=wd)`` would use: ``{"params", "param_names", "lr", "weight_decay", "lr_mult"}``, one
        group per factor, each tensor once (tied ones under their first name). ``optimizer='sgd'``:
        MuSGD's factors. Every group sets ``weight_decay`` (× 1/lr factor, so lr × decay is as given; 0 by
        default, as in mup). A plan of another preset has no per-layer rates: ``ValueError``."""
        from .mup import param_groups

        params = self._bind(self.model, explicit=False) if self.lr_scales else {}
        return param_groups(self, base_lr, weight_decay=weight_decay, optimizer=optimizer, params=params)

    @property
    def residual(self) -> list[ResidualStream] | None:
        """The residual streams found on ``example_input`` (:class:`~initlab.theory.streams.ResidualStream`:
        each add's output projection, N, the blocks, pre/post-LN); ``None`` when the plan ran no example input."""
        return None if self.trace is None else self.trace.streams

    def _preset_label(self) -> str:
        if not self.options:
            return repr(self.preset)
        return f"{self.preset!r} ({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"

    # -- looking -------------------------------------------------------------------------------------

    def __repr__(self) -> str:
        left = sum(e.initializer is None for e in self.entries)
        steps = f", {len(self.post_steps)} post steps" if self.post_steps else ""
        opts = f", options={self.options!r}" if self.options else ""
        return (f"Plan(preset={self.preset!r}{opts}, {len(self._params)} parameters, {len(self.entries)} entries, "
                f"{left} left as is{steps})")

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    def __getitem__(self, path: str) -> PlanEntry:
        """The entry of ``path``; a tied tensor's other names give its one entry."""
        for e in self.entries:
            if e.path == path:
                return e
        for e in self.entries:
            if e.part is None and path in e.aliases:
                return e
        raise KeyError(f"path: no entry {path!r} in this plan; entries are e.g. "
                       f"{', '.join(repr(e.path) for e in self.entries[:4])}.")

    def table(self) -> Any:
        """A ``rich.table.Table``: parameter path | shape | layout | fan_in | fan_out | initializer | std | why."""
        from rich.table import Table
        from rich.text import Text

        t = Table(title=f"initlab plan: preset {self._preset_label()}, {len(self._params)} parameters, "
                        f"{sum(p.numel() for p in self._params.values()):,} values", show_lines=False)
        for col, kw in (("parameter path", {"no_wrap": True}), ("shape", {}), ("layout", {}),
                        ("fan_in", {"justify": "right"}), ("fan_out", {"justify": "right"}),
                        ("initializer", {}), ("std", {"justify": "right"}), ("why", {})):
            t.add_column(col, **kw)
        for e in self.entries:
            why = f"rule {e.rule}: {e.why}" if e.rule else e.why
            cells = (
                e.path, str(tuple(e.shape)), e.layout,
                "" if e.fans is None else str(e.fans.fan_in), "" if e.fans is None else str(e.fans.fan_out),
                e.initializer_label, _fmt(e.std), why,
            )
            t.add_row(*(Text(c) for c in cells))  # Text: "[i]" in a path is not rich markup
        return t

    def __str__(self) -> str:
        from rich.console import Console
        from rich.text import Text

        buf = io.StringIO()
        console = Console(file=buf, width=220, force_terminal=False, color_system=None)
        console.print(self.table())
        for s in self.post_steps:
            console.print(Text(f"after apply: {s.name} — {s.why}"))
        for n in self.notes:
            console.print(Text(f"note: {n}"))
        if self.applied is not None:
            a = self.applied
            counts = ", ".join(f"{n} by {k}" for k, n in a["entries"].items())
            console.print(Text(f"applied: seed {a['seed']}, rng={a['rng']!r} on {a['ranks']} rank(s): {counts}"))
        return buf.getvalue().rstrip("\n")

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict: preset, options, entries (with serialized initializers), post steps, notes."""
        return {
            "preset": self.preset,
            "options": dict(self.options),
            "entries": [e.as_dict() for e in self.entries],
            "post_steps": [{"name": s.name, "why": s.why, "preset": s.preset} for s in self.post_steps],
            "notes": list(self.notes),
            "applied": None if self.applied is None else dict(self.applied),
        }

    # -- doing -----------------------------------------------------------------------------------------

    def apply(self, seed: int = 0, device: torch.device | str | None = None, *, atomic: bool = True,
              workers: int | None = None, rng: str | None = None, model: Any = None,
              matrix_threads: int | None = 1) -> Any:
        """Fill every planned parameter, then run the post steps; returns the model.

        ``seed`` (an int) and each entry's path determine its values (:func:`entry_seed`). ``device``:
        where the parameters live afterwards (required for a model on meta; default: where each one is).
        ``atomic=True`` (default), all or nothing: nothing changes unless every value could be computed
        and every post step ran. It works in three phases, so that everything that can fail runs before
        the first write: (1) validate every entry that will be filled in place (float32/float64
        contiguous target, ``describe`` with its shape, layout and fans, its seed); (2) compute every
        other value into fresh tensors — entries whose initializer is not one of initlab's trusted
        catalogue fills (user classes and subclasses, matrix and truncated initializers), parameters
        that move device or leave meta, and every parameter when the plan has post steps; (3) fill the
        trusted entries in place — single ``zero_``/``fill_``/``uniform_``/``normal_`` passes that
        cannot fail once (1) passed — and swap the fresh tensors in, undoing the swaps if a post step
        fails. In place saves the fresh memory, whose page faults cost about as much as the fill itself
        on CPU. The values are the same on every path. ``atomic=False`` fills every parameter that
        stays on its device in place, validated or not, so an initializer that fails half way leaves
        the parameters before it changed. ``workers`` (default: ``torch.get_num_threads()``, so one
        under a single-threaded torch) > 1 fills parameters on that many threads (each
        entry has its own generator, so the values do not change); fresh tensors filled concurrently
        contend on page faults, in-place fills do not (GPT-2-small, preset torch, 2 cores: 0.5–0.8× of
        ``reset_parameters`` with two threads).

        ``rng``: what draws the values. ``"torch"`` — each initializer itself with a ``torch.Generator``
        seeded by the entry seed: the values the catalogue promises bit for bit (``torch.nn.init``,
        Keras 3 on torch), the default for plain tensors. ``"counter"`` — a counter-based fill
        (:mod:`initlab.initializers.counter_fill`: each value a function of seed, entry path and global
        element index), for every entry whose initializer has a counter law; the others (orthogonal,
        STFT, user initializers) run whole as with ``"torch"``, on ``matrix_threads`` threads (QR bits
        depend on the thread count). The default, and the only choice, when a parameter is a DTensor
        (FSDP2 or tensor parallelism): every rank fills only its shard (:mod:`initlab.plan.sharded`), and
        ``apply(seed, rng="counter")`` on one process gives the same whole tensors, bit for bit. Each
        entry's ``rng`` says afterwards what drew it, and :attr:`applied` sums it up.

        ``model``: the model to fill, bound **by parameter path** (default: the planned model). FSDP2 and
        ``parallelize_module`` replace the Parameter objects but keep their names, so a plan made before
        sharding — or on an unsharded twin built on meta — applies to the sharded model; every planned
        path must exist there with the planned (global) shape.
        """
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed: expected an int (entry seeds derive from it and each path), got {seed!r}.")
        if not isinstance(atomic, bool):
            raise TypeError(f"atomic: expected True or False, got {atomic!r}.")
        if workers is None:
            # Parallel fills do not change values (independent generators), so use the cores torch may use.
            workers = max(1, torch.get_num_threads())
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers: expected an int >= 1 (threads filling parameters), got {workers!r}.")
        if rng not in (None, "torch", "counter"):
            raise ValueError(f"rng: expected 'torch', 'counter' or None (counter for DTensors, else torch), got {rng!r}.")
        if matrix_threads is not None and (
                isinstance(matrix_threads, bool) or not isinstance(matrix_threads, int) or matrix_threads < 1):
            raise ValueError(f"matrix_threads: expected an int >= 1 or None (leave torch's count), got {matrix_threads!r}.")
        dev = None if device is None else torch.device(device)
        if dev is not None and dev.type == "meta":
            raise ValueError("device: 'meta' holds no values; pass a real device such as 'cpu' or 'cuda'.")
        filled = self.model if model is None else model
        params = self._bind(filled, explicit=model is not None)
        sharded = any(is_dtensor(p) for p in params.values())
        if rng is None:
            rng = "counter" if sharded else "torch"
        if sharded:
            if rng == "torch":
                raise ValueError(
                    "rng: 'torch' cannot fill DTensor parameters reproducibly: a torch.Generator draws a stream, "
                    "so each rank would need the elements before its shard, and torch's DTensor random ops draw "
                    "per-sharding values (on CPU they even ignore generator=). Use rng='counter' (the default "
                    "for DTensors); apply(seed, rng='counter') on one process gives the same values."
                )
            if dev is not None:
                raise ValueError(
                    "device: a sharded model is materialized where it lives (model.to_empty(device=...) after "
                    "fully_shard/parallelize_module); apply writes each shard in place, so leave device=None."
                )
            apply_sharded(self, params, seed, matrix_threads=matrix_threads, workers=workers)
            self._record(seed, "counter", comm.world())
            return filled
        counter_mode = rng == "counter"
        laws: dict[str, Any] = {}

        def law_of(e: PlanEntry, shape: tuple[int, ...]) -> Any:
            """The entry's counter law in counter mode (None: drawn whole by the initializer)."""
            if not counter_mode:
                return None
            if e.path not in laws:
                try:
                    laws[e.path] = e.initializer.counter_law(shape, e.layout, fans=e.fans)
                except (ValueError, TypeError):
                    laws[e.path] = None  # describe refuses it: phase 1 or the fill reports it
            return laws[e.path]

        def fill(e: PlanEntry, view: torch.Tensor) -> None:
            s = entry_seed(seed, e.path)
            law = law_of(e, tuple(view.shape))
            if law is not None:
                fill_shard(view, ShardIndex.full(view.shape), law, s, workers=workers)
            elif counter_mode:
                with pinned_threads(matrix_threads):
                    e.initializer(view, seed=s, layout=e.layout, fans=e.fans)
            else:
                e.initializer(view, seed=s, layout=e.layout, fans=e.fans)

        by_param: dict[str, list[PlanEntry]] = {}
        for e in self.entries:
            by_param.setdefault(e.param_path, []).append(e)
        jobs: list[tuple[str, torch.Tensor, list[PlanEntry], torch.device]] = []
        for path, param in params.items():
            entries = [e for e in by_param.get(path, []) if e.initializer is not None]
            target = dev or param.device
            if target.type == "meta":
                left = by_param.get(path, [])
                reason = left[0].why if left else "it is not in the plan"
                raise ValueError(
                    f"device: parameter {path!r} is on the meta device; pass device='cpu' (or another real "
                    f"device) to materialize the model. ({reason})" if entries else
                    f"device: parameter {path!r} is on the meta device and the plan leaves it as is ({reason}); "
                    f"add a rule for it, e.g. rules={{{path!r}: 'zeros'}}, so it can be materialized."
                )
            if param.is_meta and (not entries or entries[0].index is not None):
                raise ValueError(
                    f"device: parameter {path!r} is on the meta device but the plan fills only slices of it "
                    f"({', '.join(e.path for e in entries)}); add a rule for the whole parameter."
                )
            if entries or target != param.device:
                jobs.append((path, param, entries, target))

        # Which parameters are filled in place. atomic=False: every one that stays on its device. atomic=True:
        # only those whose entries all have trusted fills (see _trusted) on contiguous float32/float64
        # views, and only in a plan without post steps (a post step that fails must find every parameter's
        # old value to restore, and in-place fills keep none). Such a fill cannot fail once phase 1 below
        # accepted it, so writing it after every fallible computation keeps the all-or-nothing promise: an
        # untrusted initializer that fails does so in phase 2, before any parameter was written.
        def fills_in_place(job: tuple[str, torch.Tensor, list[PlanEntry], torch.device]) -> bool:
            _, param, entries, target = job
            if param.is_meta or target != param.device:
                return False
            if not atomic:
                return True
            if self.post_steps or not entries or param.dtype not in (torch.float32, torch.float64):
                return False
            # counter mode: the entries with a counter law, whose chunked fill cannot fail once validated
            return all(
                e.initializer is not None
                and (law_of(e, tuple(view.shape)) is not None if counter_mode else _trusted(e.initializer))
                and view.is_contiguous()
                for e in entries
                for view in (param if e.index is None else param.detach()[e.index],)
            )

        def failed(e: PlanEntry, shape: tuple[int, ...], err: Exception, changed: str) -> RuntimeError:
            return RuntimeError(
                f"apply: {_init_label(e.initializer)} failed on {e.path!r} (shape {shape}): {err}. {changed}"
            )

        def compute(job: tuple[str, torch.Tensor, list[PlanEntry], torch.device]) -> torch.Tensor | None:
            _, param, entries, target = job
            with torch.no_grad():
                in_place = fills_in_place(job)
                if in_place:
                    fresh = param.data
                elif entries and entries[0].index is None:
                    fresh = torch.empty(param.shape, dtype=param.dtype, device=target) if param.is_meta \
                        else torch.empty_like(param, device=target)
                else:
                    fresh = param.detach().to(target, copy=True)
                for e in entries:
                    view = fresh if e.index is None else fresh[e.index]
                    try:
                        fill(e, view)
                    except Exception as err:
                        raise failed(e, tuple(view.shape), err, (
                            "atomic=False: parameters filled before it keep their new values." if not atomic
                            else "Nothing was changed." if not in_place
                            else "It had been validated, so this fill should not fail; parameters filled in "
                                 "place before it keep their new values. Please report this as a bug."
                        )) from err
            return None if in_place else fresh

        jobs.sort(key=lambda j: -j[1].numel())
        in_place_jobs = [j for j in jobs if fills_in_place(j)]
        fresh_jobs = [j for j in jobs if not fills_in_place(j)]

        # Phase 1 (atomic): validate the in-place entries — everything Initializer.__call__ checks before
        # it writes (dtype, describe with shape/layout/fans, seed). Nothing is written.
        if atomic:
            for _, param, entries, _ in in_place_jobs:
                for e in entries:
                    shape = tuple(param.shape if e.index is None else param.detach()[e.index].shape)
                    try:
                        _check_seed(entry_seed(seed, e.path))
                        e.initializer.describe(shape, e.layout, fans=e.fans)
                    except Exception as err:
                        raise failed(e, shape, err, "Nothing was changed.") from err

        # Phase 2: every other value into fresh tensors (large ones first when several threads share the
        # work; each entry has its own generator, so the order of work does not change any value). A
        # failure here leaves the model untouched (atomic) since no parameter has been written yet.
        def run(batch: list[tuple[str, torch.Tensor, list[PlanEntry], torch.device]]) -> list[torch.Tensor | None]:
            # counter mode: entries one after the other (whole-tensor ones pin torch's thread count, a
            # process-wide setting), each counter fill running its chunks on ``workers`` threads
            n = 1 if counter_mode else max(1, min(len(batch), workers))
            if n > 1:
                with cf.ThreadPoolExecutor(n) as pool:
                    return list(pool.map(compute, batch))
            return [compute(j) for j in batch]

        fresh_list = run(fresh_jobs)

        # Phase 3: swap the fresh tensors in and materialize buffers (both undone if anything later fails),
        # then the in-place fills (atomic: trusted and validated, so they do not fail), then the post steps
        # (a plan with post steps has no in-place fills when atomic, so undoing the swaps restores it all).
        undo: list[tuple[torch.Tensor, Any, str]] = []
        try:
            for (_, param, _, _), fresh in zip(fresh_jobs, fresh_list, strict=True):
                undo.append(_swap_in(param, fresh))
            undo.extend(_materialize_buffers(filled, dev))
            run(in_place_jobs)
            for step in self.post_steps:
                try:
                    step.fn(filled, seed) if step.seeded else step.fn(filled)
                except Exception as err:
                    raise RuntimeError(
                        f"apply: post step {step.name!r} failed ({type(err).__name__}: {err}); every parameter "
                        "was restored to its value before apply."
                    ) from err
        except BaseException:
            for item in reversed(undo):
                _undo(item)
            raise
        for e in self.entries:
            if e.initializer is not None and e.param_path in params:
                e.rng = "counter" if law_of(e, tuple(e.shape)) is not None else "torch"
        self._record(seed, rng, 1)
        return filled

    def _record(self, seed: int, rng: str, ranks: int) -> None:
        counts: dict[str, int] = {}
        for e in self.entries:
            if e.rng is not None and e.initializer is not None:
                key = "torch" if e.rng.startswith("torch") else e.rng
                counts[key] = counts.get(key, 0) + 1
        self.applied = {"seed": seed, "rng": rng, "ranks": ranks, "entries": counts}

    def _bind(self, target: Any, explicit: bool) -> dict[str, torch.Tensor]:
        """The planned parameters of ``target``, by path. Sharding (``fully_shard``,
        ``parallelize_module``) swaps Parameter objects but keeps names, so a path that resolves to
        another object now binds to it; ``explicit`` (``apply(model=...)``): every path must resolve."""
        if not explicit and not isinstance(target, nn.Module):
            return self._params
        if not isinstance(target, nn.Module):
            raise TypeError(f"model: expected the torch.nn.Module to fill, got {type(target).__name__}.")
        out: dict[str, torch.Tensor] = {}
        missing: list[str] = []
        for path, planned in self._params.items():
            try:
                out[path] = target.get_parameter(path)
            except AttributeError:
                if explicit:
                    missing.append(path)
                else:
                    out[path] = planned  # a path torch cannot resolve (a Keras variable's): as planned
        if missing:
            raise ValueError(
                f"model: {len(missing)} planned parameter(s) are not in this model, e.g. "
                f"{', '.join(map(repr, missing[:3]))}; a plan applies by parameter path, so plan this model "
                "(or its unsharded twin, built with the same module names)."
            )
        wrong = [(p, tuple(self._params[p].shape), tuple(t.shape)) for p, t in out.items()
                 if tuple(t.shape) != tuple(self._params[p].shape)]
        if wrong:
            path, planned, found = wrong[0]
            raise ValueError(
                f"model: parameter {path!r} has shape {found} but the plan was made for {planned} "
                f"({len(wrong)} such); plan the model you apply to (a DTensor's shape is its global shape)."
            )
        return out


def _swap_in(param: torch.Tensor, fresh: torch.Tensor) -> tuple[torch.Tensor, Any, str]:
    if not param.is_meta and param.device.type == fresh.device.type:
        old = param.data
        param.data = fresh
        return param, old, "data"
    holder = nn.Parameter(fresh, requires_grad=param.requires_grad) if isinstance(param, nn.Parameter) else fresh
    torch.utils.swap_tensors(param, holder)
    return param, holder, "swap"


def _undo(item: tuple[Any, Any, str]) -> None:
    obj, old, how = item
    if how == "data":
        obj.data = old
    elif how == "swap":
        torch.utils.swap_tensors(obj, old)
    else:  # buffer: (module, (name, old))
        name, buf = old
        obj._buffers[name] = buf


_BUFFER_DEFAULTS = {"running_mean": 0.0, "running_var": 1.0, "num_batches_tracked": 0}


def _materialize_buffers(model: Any, dev: torch.device | None) -> list[tuple[Any, Any, str]]:
    """Buffers follow the parameters to ``dev``; meta buffers get the norm defaults (running mean 0,
    running var 1, num_batches_tracked 0) or, for any other buffer, uninitialized memory as ``to_empty``."""
    undo: list[tuple[Any, Any, str]] = []
    if not isinstance(model, nn.Module):
        return undo
    for m in model.modules():
        for name, b in list(m._buffers.items()):
            if b is None:
                continue
            target = dev or b.device
            if b.is_meta:
                if target.type == "meta":
                    continue
                new = torch.empty(b.shape, dtype=b.dtype, device=target)
                if name in _BUFFER_DEFAULTS:
                    new.fill_(_BUFFER_DEFAULTS[name])
            elif target != b.device:
                new = b.to(target)
            else:
                continue
            undo.append((m, (name, b), "buffer"))
            m._buffers[name] = new
    return undo
