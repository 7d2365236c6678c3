"""Training experiments: plain MLPs, initialization by name, a seeded training loop, resumable grids.

The protocol is that of ``shared/reference/experiments.md`` §3.5 and §4: a *plain MLP* is
``depth × [Linear(width) + activation] + Linear(width, classes)`` and nothing else; cross-entropy,
mini-batches of 100 reshuffled every epoch, SGD with momentum 0.9 (lr 0.01) or Adam (lr 1e-3); a
non-finite loss stops the run and marks it *diverged*. Denormal floats are flushed to zero while
training (dying signals otherwise slow an x86 CPU about 30×, §3.2), and the setting is restored after.

Initializations by name (biases 0 except ``default``), §4.2:

============== ==================================================================================
normal1        N(0, 1) — the tutorial's "standard normal" weights
normal001      N(0, 0.01²)
default        PyTorch's own ``reset_parameters``: W, b ~ U(±1/√n) (Glorot's "standard" init)
standard       U(±1/√n), b = 0
glorot_uniform U(±√(6/(n_in+n_out))) (Glorot & Bengio 2010, eq. 16)
he_normal      N(0, 2/n) (He et al. 2015, eq. 10)
orthogonal     orthogonal × ``calculate_gain(act)``: √2 ReLU, 5/3 tanh (Saxe et al. 2014)
lsuv           ``initlab.lsuv``: orthonormal, then unit output variance per layer on training inputs
               (Mishkin & Matas 2016)
critical       ``initlab.Critical``: the mean-field edge of chaos σ_w² for σ_b² = 0.05 (tanh: 1.76;
               Schoenholz et al. 2017), σ_b² = 0 for ReLU-like activations (σ_w² = 2)
auto           ``initlab.plan(model, preset="auto", example_input=x).apply(seed=seed)``
(any other)    any catalogue name (``initlab.get``) for the weights, zero biases
============== ==================================================================================

Seeds fix everything: the initial weights, the data order and every random draw of a run.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..initializers import Orthogonal, RandomNormal, RandomUniform, Zeros, get
from .data import Dataset, load_dataset

__all__ = [
    "ACTIVATIONS",
    "INIT_NAMES",
    "OPTIMIZERS",
    "Cell",
    "CompareResult",
    "Grid",
    "TrainResult",
    "compare",
    "flush_denormal",
    "init_model",
    "make_mlp",
    "run_cell",
    "summarize",
    "threads",
    "train",
]

#: The named initializations of the experiments (any catalogue name works too).
INIT_NAMES = (
    "normal1",
    "normal001",
    "default",
    "standard",
    "glorot_uniform",
    "he_normal",
    "orthogonal",
    "lsuv",
    "critical",
    "auto",
)
#: Activation name -> torch module class used in the plain MLP.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softsign": nn.Softsign,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "linear": nn.Identity,
}
#: Optimizer name -> (default learning rate, description).
OPTIMIZERS: dict[str, tuple[float, str]] = {
    "sgd": (0.01, "SGD with momentum 0.9"),
    "adam": (1e-3, "Adam"),
}
#: torch.nn.init.calculate_gain for the orthogonal init (§4.2).
_TORCH_GAIN = {"relu": math.sqrt(2.0), "tanh": 5.0 / 3.0, "leaky_relu": math.sqrt(2.0 / (1 + 0.01**2)),
               "selu": 0.75}


def _check_choice(name: str, value: str, valid: Iterable[str]) -> str:
    valid = list(valid)
    if value not in valid:
        raise ValueError(f"{name}: unknown value {value!r}; valid: {', '.join(valid)}.")
    return value


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}.")
    return value


# -- models and initialization ----------------------------------------------------------------------


def make_mlp(n_in: int, n_out: int, depth: int, width: int, act: str) -> nn.Sequential:
    """The plain MLP: ``depth × [Linear + act] + Linear(width, n_out)``; ``depth = 0`` is logistic regression."""
    _check_choice("activation", act, ACTIVATIONS)
    for name, v in (("n_in", n_in), ("n_out", n_out), ("width", width)):
        _check_positive_int(name, v)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth: expected a non-negative integer (hidden layers), got {depth!r}.")
    layers: list[nn.Module] = []
    fan = n_in
    for _ in range(depth):
        layers += [nn.Linear(fan, width), ACTIVATIONS[act]()]
        fan = width
    layers.append(nn.Linear(fan, n_out))
    return nn.Sequential(*layers)


def _act_of(model: nn.Module) -> str:
    for m in model.modules():
        for name, cls in ACTIVATIONS.items():
            if name != "linear" and type(m) is cls:
                return name
    return "linear"


def init_model(
    model: nn.Module,
    init: str,
    *,
    seed: int = 0,
    act: str | None = None,
    x: torch.Tensor | None = None,
) -> nn.Module:
    """Initialize every ``nn.Linear`` of ``model`` by ``init`` (see the module table), in place.

    ``act`` is the hidden activation (read from the model when omitted); ``x`` is a batch of training
    inputs, needed by the data-driven inits (``lsuv``, ``auto``). The seed fixes every draw.
    """
    act = act or _act_of(model)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if init in ("lsuv", "auto") and x is None:
        raise ValueError(f"x: init {init!r} is data-driven and needs a batch of training inputs.")
    if init == "default":
        torch.manual_seed(seed)
        for m in linears:
            m.reset_parameters()
        return model
    if init == "auto":
        from ..plan.build import plan

        plan(model, preset="auto", example_input=x).apply(seed=seed)
        return model
    if init == "lsuv":
        from ..theory.lsuv import lsuv

        # Orthonormal pre-init, zero biases, then unit output std layer by layer (tol 0.05, ≤ 10
        # iterations per layer: experiments.md §3.5).
        lsuv(model, x, tol=0.05, max_iter=10, seed=seed)
        return model
    if init == "critical":
        from ..initializers.activations import activation
        from ..theory.critical_init import Critical

        # σ_b² = 0.05 as in Schoenholz et al. (2017) (σ_w² = 1.76 for tanh); ReLU-like and linear
        # activations have an edge of chaos only at σ_b² = 0 (σ_w² = 2 resp. 1).
        weight_init = Critical(act, sigma_b2=0.0 if activation(act).family in ("relu", "linear") else 0.05)
    elif init == "normal1":
        weight_init = RandomNormal(0.0, 1.0)
    elif init == "normal001":
        weight_init = RandomNormal(0.0, 0.01)
    elif init == "standard":
        weight_init = None
    elif init == "orthogonal":
        weight_init = Orthogonal(gain=_TORCH_GAIN.get(act, 1.0))
    else:
        weight_init = get(init)
    for i, m in enumerate(linears):
        if weight_init is None:
            bound = 1.0 / math.sqrt(m.in_features)
            RandomUniform(-bound, bound)(m.weight, seed=seed * 1000 + i)
        else:
            weight_init(m.weight, seed=seed * 1000 + i)
        if m.bias is not None:
            # Critical draws a rank-1 tensor (a bias) from N(0, σ_b²); every other init has zero biases.
            bias_init = weight_init if init == "critical" else Zeros()
            bias_init(m.bias, seed=seed * 1000 + 500 + i)
    return model


# -- the training loop ------------------------------------------------------------------------------


@contextlib.contextmanager
def flush_denormal() -> Iterator[bool]:
    """Flush float32 subnormals to zero inside the block (``torch.set_flush_denormal(True)``), then
    restore the previous setting; yields whether the CPU supports flushing."""
    from ..inspect.snapshot import flush_denormal_state

    before = flush_denormal_state()
    supported = torch.set_flush_denormal(True)
    try:
        yield supported
    finally:
        torch.set_flush_denormal(before)


@contextlib.contextmanager
def threads(n: int | None = None) -> Iterator[int]:
    """Run the block with ``n`` torch threads (default: every CPU this process may use), then restore."""
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@dataclass
class TrainResult:
    """One training run. Accuracies are test % (index 0 = at initialization); losses are mean train loss."""

    test_acc: list[float]
    train_loss: list[float]
    diverged: bool
    wall_s: float
    target: float | None = None

    @property
    def final_acc(self) -> float:
        return self.test_acc[-1]

    @property
    def best_acc(self) -> float:
        return max(self.test_acc)

    @property
    def epochs_to_target(self) -> int | None:
        """First epoch (≥ 1) whose test accuracy reaches ``target``; ``None`` if never."""
        if self.target is None:
            return None
        return next((e for e, a in enumerate(self.test_acc) if e >= 1 and a >= self.target), None)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return 100.0 * (model(x).argmax(dim=1) == y).float().mean().item()


def _optimizer(name: str, params, lr: float | None) -> torch.optim.Optimizer:
    _check_choice("optimizer", name, OPTIMIZERS)
    lr = OPTIMIZERS[name][0] if lr is None else lr
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr: expected a positive learning rate, got {lr!r}.")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.Adam(params, lr=lr)


def train(
    model: nn.Module,
    data: Dataset,
    *,
    optimizer: str = "sgd",
    lr: float | None = None,
    epochs: int = 20,
    batch_size: int = 100,
    seed: int = 0,
    target: float | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` with cross-entropy; test accuracy after every epoch.

    A non-finite training loss stops the run (``diverged``). ``on_epoch(epoch, test_acc)`` is called
    after each epoch (progress bars).
    """
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    opt = _optimizer(optimizer, model.parameters(), lr)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    accs = [_accuracy(model, data.x_test, data.y_test)]
    losses: list[float] = []
    diverged = False
    n = len(data.x_train)
    start = time.perf_counter()
    with flush_denormal():
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(n, generator=gen)
            total, count = 0.0, 0
            for i in range(0, n, batch_size):
                idx = order[i : i + batch_size]
                loss = loss_fn(model(data.x_train[idx]), data.y_train[idx])
                if not torch.isfinite(loss):
                    diverged = True
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                count += len(idx)
            model.eval()
            losses.append(total / count if count else math.nan)
            accs.append(_accuracy(model, data.x_test, data.y_test))
            if on_epoch is not None:
                on_epoch(epoch, accs[-1])
            if diverged:
                break
    return TrainResult(accs, losses, diverged, time.perf_counter() - start, target)


# -- grids ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One run of a grid: everything that determines its result."""

    init: str
    depth: int
    activation: str
    width: int
    seed: int
    optimizer: str
    lr: float
    epochs: int
    batch_size: int
    data: str
    target: float | None

    @property
    def key(self) -> str:
        """A stable id: the same configuration always has the same key (resume uses it)."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def group(self) -> tuple:
        """The cell without its seed: runs of one group are summarized together."""
        return (self.data, self.activation, self.depth, self.width, self.optimizer, self.lr, self.init)


@dataclass(frozen=True)
class Grid:
    """inits × depths × activations × widths × seeds × optimizers, with shared training settings."""

    inits: Sequence[str] = ("default", "glorot_uniform", "he_normal")
    depths: Sequence[int] = (10,)
    activations: Sequence[str] = ("relu",)
    widths: Sequence[int] = (128,)
    seeds: Sequence[int] = (0,)
    optimizers: Sequence[str] = ("sgd",)
    epochs: int = 20
    batch_size: int = 100
    lr: float | None = None
    target: float | None = None

    def __post_init__(self) -> None:
        for name in ("inits", "depths", "activations", "widths", "seeds", "optimizers"):
            if not len(getattr(self, name)):
                raise ValueError(f"{name}: the grid needs at least one value.")
        for act in self.activations:
            _check_choice("activations", act, ACTIVATIONS)
        for opt in self.optimizers:
            _check_choice("optimizers", opt, OPTIMIZERS)
        for init in self.inits:
            if init not in INIT_NAMES:
                get(init)  # raises, naming the unknown initializer and close matches
        for d in self.depths:
            if isinstance(d, bool) or not isinstance(d, int) or d < 0:
                raise ValueError(f"depths: expected non-negative integers, got {d!r}.")
        for w in self.widths:
            _check_positive_int("widths", w)
        _check_positive_int("epochs", self.epochs)
        _check_positive_int("batch_size", self.batch_size)
        if self.target is not None and not 0 < self.target <= 100:
            raise ValueError(f"target: a test accuracy in percent, in (0, 100]; got {self.target!r}.")

    def cells(self, data: str) -> list[Cell]:
        out = []
        for act in self.activations:
            for depth in self.depths:
                for width in self.widths:
                    for opt in self.optimizers:
                        lr = OPTIMIZERS[opt][0] if self.lr is None else self.lr
                        for init in self.inits:
                            for seed in self.seeds:
                                out.append(Cell(init, depth, act, width, seed, opt, lr, self.epochs,
                                                self.batch_size, data, self.target))
        return out


def run_cell(cell: Cell, data: Dataset, on_epoch: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Build, initialize and train one cell; the JSON-ready record of the run."""
    torch.manual_seed(cell.seed)
    model = make_mlp(data.n_features, data.n_classes, cell.depth, cell.width, cell.activation)
    gen = torch.Generator().manual_seed(cell.seed)
    sample = data.x_train[torch.randperm(len(data.x_train), generator=gen)[:500]]
    with flush_denormal():
        init_model(model, cell.init, seed=cell.seed, act=cell.activation, x=sample)
    result = train(model, data, optimizer=cell.optimizer, lr=cell.lr, epochs=cell.epochs,
                   batch_size=cell.batch_size, seed=cell.seed, target=cell.target, on_epoch=on_epoch)
    return {
        "key": cell.key,
        "config": dataclasses.asdict(cell),
        "test_acc": result.test_acc,
        "train_loss": result.train_loss,
        "final_acc": result.final_acc,
        "best_acc": result.best_acc,
        "epochs_to_target": result.epochs_to_target,
        "diverged": result.diverged,
        "wall_s": result.wall_s,
    }


def _mean_sd(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per group (a cell without its seed): final and best test accuracy (mean and sample sd
    over seeds, n − 1 in the denominator), the median epochs to target over the seeds that reached it,
    how many seeds reached it (``reached`` of ``seeds``) and how many runs diverged."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(Cell(**r["config"]).group, []).append(r)
    rows = []
    for (data, act, depth, width, opt, lr, init), rs in groups.items():
        final_m, final_sd = _mean_sd([r["final_acc"] for r in rs])
        best_m, best_sd = _mean_sd([r["best_acc"] for r in rs])
        reached = [r["epochs_to_target"] for r in rs if r["epochs_to_target"] is not None]
        rows.append({
            "data": data, "activation": act, "depth": depth, "width": width, "optimizer": opt, "lr": lr,
            "init": init, "seeds": len(rs), "target": rs[0]["config"]["target"],
            "final_acc": final_m, "final_sd": final_sd, "best_acc": best_m, "best_sd": best_sd,
            "reached": len(reached),
            "epochs_to_target": statistics.median(reached) if reached else None,
            "diverged": sum(bool(r["diverged"]) for r in rs),
            "wall_s": sum(r["wall_s"] for r in rs),
        })
    return rows


# -- compare ----------------------------------------------------------------------------------------


@dataclass
class CompareResult:
    """What :func:`compare` did and wrote."""

    out_dir: Path
    records: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    ran: int
    skipped: int
    files: dict[str, Path] = field(default_factory=dict)


RUNS_FILE = "runs.jsonl"


def _load_records(path: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by an interrupted run: that cell simply runs again
        if isinstance(rec, dict) and "key" in rec:
            done[rec["key"]] = rec
    return done


def default_target(data: str) -> float:
    """Epochs-to-target threshold (test %) when none is given: 45 MNIST-1D (§2.5), 90 digits (§2.10), 50 else."""
    return {"mnist1d": 45.0, "digits": 90.0}.get(data, 50.0)


def compare(
    grid: Grid,
    data: str = "mnist1d",
    out_dir: str | os.PathLike[str] = "initlab-compare",
    *,
    resume: bool = True,
    progress: bool = True,
    plots: bool = True,
    num_threads: int | None = 1,
) -> CompareResult:
    """Run every cell of ``grid`` on ``data``; write ``runs.jsonl`` (one record per run, appended as it
    finishes), ``results.csv``/``results.json`` (the summary) and plots into ``out_dir``.

    With ``resume`` a cell whose record is already in ``runs.jsonl`` is not run again.
    ``num_threads``: torch intra-op threads while training (``None``: every CPU this process may use).
    The default is 1 — measured on 2 cores, a width-128 MLP at batch 100 gains nothing from a second
    thread, and when other processes compete for the cores two threads ran ~6× slower than one.
    """
    dataset = load_dataset(data)
    if os.fspath(data) in ("mnist1d", "digits"):
        data_name = target_key = os.fspath(data)
    else:
        # A user file is named by its content too, so an edited file is never resumed from old runs.
        digest = hashlib.sha256(Path(data).read_bytes()).hexdigest()[:8]
        target_key, data_name = "file", f"{Path(data).name}@{digest}"
    if grid.target is None:
        grid = dataclasses.replace(grid, target=default_target(target_key))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs_path = out / RUNS_FILE
    done = _load_records(runs_path) if resume else {}
    if not resume and runs_path.exists():
        runs_path.unlink()
    cells = grid.cells(data_name)
    todo = [c for c in cells if c.key not in done]
    records: dict[str, dict[str, Any]] = {c.key: done[c.key] for c in cells if c.key in done}
    from .render import progress_bar

    with threads(num_threads), flush_denormal(), progress_bar(enabled=progress) as bar:
        task = bar.add_task("compare", total=len(todo) * grid.epochs)
        for cell in todo:
            bar.update(task, description=f"{cell.activation} d{cell.depth} w{cell.width} {cell.optimizer} "
                                         f"{cell.init} s{cell.seed}")
            rec = run_cell(cell, dataset, on_epoch=lambda e, a: bar.advance(task))
            bar.advance(task, grid.epochs - (len(rec["test_acc"]) - 1))
            records[cell.key] = rec
            with runs_path.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
    ordered = [records[c.key] for c in cells]
    rows = summarize(ordered)
    files = {"runs": runs_path, **write_summary(rows, out)}
    if plots:
        from .render import plot_accuracy_vs_depth, plot_learning_curves

        files["learning_curves"] = plot_learning_curves(ordered, out / "learning_curves.png")
        files["accuracy_vs_depth"] = plot_accuracy_vs_depth(rows, out / "accuracy_vs_depth.png")
    return CompareResult(out, ordered, rows, ran=len(todo), skipped=len(cells) - len(todo), files=files)


def write_summary(rows: Sequence[dict[str, Any]], out: Path) -> dict[str, Path]:
    """``results.csv`` and ``results.json`` from :func:`summarize`'s rows."""
    csv_path, json_path = out / "results.csv", out / "results.json"
    fields = list(rows[0]) if rows else []
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    json_path.write_text(json.dumps(list(rows), indent=1))
    return {"csv": csv_path, "json": json_path}
