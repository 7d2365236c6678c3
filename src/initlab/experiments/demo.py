"""``initlab demo``: the tutorial's whole story on MNIST-1D, with pictures, in a few minutes.

a. The tutorial's node: 250 inputs equal to 1, no bias, z = Σ wᵢ. N(0, 1) weights give std(z) = √250
   ≈ 15.8 and a saturated sigmoid; Xavier (Var 1/n) gives 1, He (Var 2/n) √2
   (Glorot & Bengio 2010; He et al. 2015).
b. A deep net at initialization under N(0, 1), PyTorch's default, Glorot and He: the activation std,
   the back-propagated ‖dL/dz‖ and the saturated share layer by layer (``initlab.inspect``).
c. Training: a tanh MLP of depth 10 (Adam) and a ReLU MLP of depth 30 (SGD with momentum), width 128,
   under those inits and ``auto``: learning curves, final test accuracy and epochs to a target accuracy
   (experiments.md §2.5–2.6 and §4.7 give the expected numbers).
d. A plain-language reading generated from the numbers of a–c.

Everything lands in one folder: PNG figures, ``demo.json`` with the numbers, and ``report.html``, one
self-contained page with the figures embedded.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import Dataset, load_dataset
from .render import HtmlReport, colour, plot_learning_curves, progress_bar
from .training import Cell, flush_denormal, init_model, make_mlp, run_cell, threads
from .tutorial import TutorialRow, tutorial_node

__all__ = ["DemoConfig", "DemoResult", "NetSpec", "run_demo"]

INIT_LABELS = {
    "normal1": "N(0,1)",
    "default": "PyTorch default",
    "glorot_uniform": "Glorot (Xavier)",
    "he_normal": "He",
    "auto": "auto",
}


@dataclass(frozen=True)
class NetSpec:
    """One network of parts b and c: a plain MLP and how it is trained."""

    activation: str
    depth: int
    width: int
    optimizer: str
    target: float

    @property
    def label(self) -> str:
        return f"{self.activation} depth {self.depth}"

    @property
    def slug(self) -> str:
        return f"{self.activation}{self.depth}"


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs. :data:`FULL` is ``initlab demo``; :data:`QUICK` is the tiny test run."""

    node_draws: int = 100_000
    nets: tuple[NetSpec, ...] = (
        NetSpec("tanh", 10, 128, "adam", 50.0),
        NetSpec("relu", 30, 128, "sgd", 45.0),
    )
    inits_at_init: tuple[str, ...] = ("normal1", "default", "glorot_uniform", "he_normal")
    inits_trained: tuple[str, ...] = ("normal1", "default", "glorot_uniform", "he_normal", "auto")
    epochs: int = 20
    seeds: tuple[int, ...] = (0,)
    probe: int = 1000
    data: str = "mnist1d"
    #: Train on the first ``train_subset`` training samples only (``None``: all 4000); the quick run's saving.
    train_subset: int | None = None
    #: torch threads (``None``: every CPU available). 1 because these small nets gain nothing from a
    #: second intra-op thread, and on a busy 2-core machine two threads made the demo 6× slower
    #: (7.5 min against 71 s, measured side by side).
    num_threads: int | None = 1


FULL = DemoConfig()
QUICK = DemoConfig(
    node_draws=4000,
    nets=(NetSpec("tanh", 3, 32, "adam", 30.0), NetSpec("relu", 6, 32, "sgd", 25.0)),
    epochs=2,
    probe=200,
    train_subset=1000,
)


@dataclass
class DemoResult:
    """The demo's numbers and files."""

    out_dir: Path
    report: Path
    figures: dict[str, Path]
    node: list[TutorialRow]
    propagation: dict[str, dict[str, dict[str, Any]]]
    training: list[dict[str, Any]]
    reading: list[str]
    wall_s: float
    config: DemoConfig = field(default_factory=DemoConfig)

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers (also written to ``demo.json``)."""
        return {
            "out_dir": str(self.out_dir),
            "report": str(self.report),
            "figures": {k: str(v) for k, v in self.figures.items()},
            "node": [r._asdict() for r in self.node],
            "propagation": self.propagation,
            "training": [
                {k: r[k] for k in ("config", "final_acc", "best_acc", "epochs_to_target", "diverged", "wall_s",
                                   "test_acc")}
                for r in self.training
            ],
            "reading": self.reading,
            "wall_s": self.wall_s,
            "environment": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
                            "threads": self.config.num_threads or "all"},
        }


# -- part a: the tutorial node ----------------------------------------------------------------------


def _figure_node(rows: list[TutorialRow], path: Path) -> Path:
    from .render import _pyplot, _save

    plt = _pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8))
    z = np.linspace(-45, 45, 1801)
    ax.plot(z, 1 / (1 + np.exp(-z)), color="black", lw=1.5, label="σ(z)")
    ax.axhspan(0.99, 1.0, color="#d62728", alpha=0.12)
    ax.axhspan(0.0, 0.01, color="#d62728", alpha=0.12)
    dens = ax.twinx()
    for r, c in zip(rows, ("#d62728", "#1f77b4", "#2ca02c", "#9467bd"), strict=False):
        pdf = np.exp(-0.5 * (z / r.std_z) ** 2) / (r.std_z * math.sqrt(2 * math.pi))
        dens.fill_between(z, pdf, color=c, alpha=0.25, label=f"z under {r.name}: std {r.std_z:.2f}")
    dens.set_ylabel("density of z")
    dens.set_yscale("log")
    dens.set_ylim(1e-4, 1)
    ax.set_xlabel("z = Σ wᵢ (250 inputs equal to 1)")
    ax.set_ylabel("σ(z)")
    ax.set_title("where z falls on the sigmoid (red bands: saturated)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = dens.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="center left")
    names = [r.name for r in rows]
    x = np.arange(len(rows))
    bx.bar(x - 0.2, [100 * r.saturated for r in rows], width=0.4, color="#d62728", label="saturated (%)")
    bx.set_ylabel("saturated σ(z) (%)")
    bx.set_ylim(0, 100)
    b2 = bx.twinx()
    b2.bar(x + 0.2, [r.mean_dsigmoid for r in rows], width=0.4, color="#1f77b4", label="mean σ′(z)")
    b2.set_ylim(0, 0.26)
    b2.set_ylabel("mean σ′(z) (max 0.25)")
    bx.set_xticks(x, names, fontsize=8)
    bx.set_title("saturation and the gradient a sigmoid lets through")
    h1, l1 = bx.get_legend_handles_labels()
    h2, l2 = b2.get_legend_handles_labels()
    bx.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper right")
    fig.tight_layout()
    return _save(fig, path)


# -- part b: signal propagation at initialization ---------------------------------------------------


def _propagation(
    cfg: DemoConfig, data: Dataset, out: Path, bar, task
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, Path]]:
    """``initlab.inspect`` each net under each init on ``cfg.probe`` test inputs with the cross-entropy
    loss; the signal propagation plot (``initlab.plot``) per net and one saturation figure."""
    from torch.nn import functional as F

    from ..inspect.report import plot
    from ..inspect.run import inspect

    x, y = data.x_test[: cfg.probe], data.y_test[: cfg.probe]
    numbers: dict[str, dict[str, dict[str, Any]]] = {}
    figures: dict[str, Path] = {}
    for net in cfg.nets:
        reports = {}
        for init in cfg.inits_at_init:
            torch.manual_seed(0)
            model = make_mlp(data.n_features, data.n_classes, net.depth, net.width, net.activation)
            init_model(model, init, seed=0, act=net.activation, x=data.x_train[:500])
            reports[init] = inspect(model, x, loss_fn=F.cross_entropy, target=y, recommend=False)
            bar.advance(task)
        numbers[net.slug] = {init: _layer_numbers(rep) for init, rep in reports.items()}
        path = out / f"b_signal_{net.slug}.png"
        fig = plot([reports[i] for i in cfg.inits_at_init], None,
                   labels=[INIT_LABELS.get(i, i) for i in cfg.inits_at_init])
        fig.suptitle(f"{net.label}, width {net.width}, at initialization: {cfg.probe} MNIST-1D test inputs, "
                     "cross-entropy loss")
        from .render import _save

        figures[f"b_{net.slug}"] = _save(fig, path)
    figures["b_saturation"] = _figure_saturation(numbers, cfg, out / "b_saturation.png")
    return numbers, figures


def _layer_numbers(report) -> dict[str, Any]:
    """Per hidden layer ℓ: std of z_ℓ, std of the activation output h_ℓ, ‖dL/dz_ℓ‖ and the saturated
    share of units; ``dz_ratio`` = ‖dL/dz₁‖ / ‖dL/dz_L‖ over the weight layers (inspect's trends)."""
    layers = report.layers
    acts = [c for c in report.calls if c.kind == "activation"]
    return {
        "z_std": [c.z_std for c in layers],
        "act_std": [c.out_std for c in acts],
        "grad_norm": [c.grad_norm for c in layers],
        "saturated": [c.saturation for c in acts],
        "dz_ratio": report.trends.dz_ratio,
        "initial_loss": report.meta.get("loss_value"),
    }


def _figure_saturation(numbers: dict[str, dict[str, dict[str, Any]]], cfg: DemoConfig, path: Path) -> Path:
    from .render import _pyplot, _save

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(cfg.nets), figsize=(5.5 * len(cfg.nets), 3.4), squeeze=False)
    for ax, net in zip(axes.flat, cfg.nets, strict=False):
        for init, p in numbers[net.slug].items():
            sat = [100 * s if s is not None else math.nan for s in p["saturated"]]
            ax.plot(range(1, len(sat) + 1), sat, marker="o", ms=3, color=colour(init), label=INIT_LABELS.get(init, init))
        ax.set_ylim(-2, 102)
        ax.set_xlabel("hidden layer")
        ax.set_ylabel("saturated units (%)")
        ax.set_title(f"{net.label}: share of units with |φ′(z)| < 5% of its maximum", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


# -- part c: training -------------------------------------------------------------------------------


def _figure_training(records: list[dict[str, Any]], cfg: DemoConfig, path: Path) -> Path:
    from .render import _pyplot, _save

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(cfg.nets), figsize=(5.5 * len(cfg.nets), 3.8), squeeze=False)
    for ax, net in zip(axes.flat, cfg.nets, strict=False):
        rows = _net_rows(records, net, cfg)
        x = np.arange(len(rows))
        ax.bar(x, [r["final_acc"] for r in rows], color=[colour(r["init"]) for r in rows])
        for i, r in enumerate(rows):
            ett = "never" if r["epochs_to_target"] is None else f"{r['epochs_to_target']:g} ep"
            note = "diverged" if r["diverged"] else ett
            ax.text(i, r["final_acc"] + 1.5, f"{r['final_acc']:.1f}%\n{note}", ha="center", fontsize=7)
        ax.axhline(net.target, ls=":", color="black", lw=0.8)
        ax.set_xticks(x, [INIT_LABELS.get(r["init"], r["init"]) for r in rows], fontsize=8, rotation=15)
        ax.set_ylim(0, 100)
        ax.set_ylabel("final test accuracy (%)")
        ax.set_title(f"{net.label} ({net.optimizer}): final accuracy, epochs to {net.target:g}%", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _net_rows(records: list[dict[str, Any]], net: NetSpec, cfg: DemoConfig) -> list[dict[str, Any]]:
    """Per init: mean final and best accuracy over seeds, median epochs to target among seeds reaching it."""
    rows = []
    for init in cfg.inits_trained:
        rs = [r for r in records if r["config"]["activation"] == net.activation
              and r["config"]["depth"] == net.depth and r["config"]["init"] == init]
        reached = sorted(r["epochs_to_target"] for r in rs if r["epochs_to_target"] is not None)
        rows.append({
            "init": init,
            "final_acc": float(np.mean([r["final_acc"] for r in rs])),
            "best_acc": float(np.mean([r["best_acc"] for r in rs])),
            "epochs_to_target": float(np.median(reached)) if reached else None,
            "reached": len(reached),
            "seeds": len(rs),
            "diverged": sum(bool(r["diverged"]) for r in rs),
        })
    return rows


# -- part d: the reading ----------------------------------------------------------------------------


def _g(x: float | None) -> str:
    if x is None:
        return "–"
    if not math.isfinite(x):
        return "infinite" if x > 0 else "not a number"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.3g}"
    return f"{x:.1e}"


def reading(
    node: list[TutorialRow],
    propagation: dict[str, dict[str, dict[str, Any]]],
    records: list[dict[str, Any]],
    cfg: DemoConfig,
) -> list[str]:
    """A short plain-language reading of the demo, every number taken from the results."""
    lines = []
    by_name = {r.name: r for r in node}
    n1, xa, he = by_name.get("N(0, 1)"), by_name.get("Xavier"), by_name.get("He")
    if n1 and xa and he:
        lines.append(
            f"One node with 250 inputs: N(0,1) weights make its weighted sum spread with std {n1.std_z:.1f} "
            f"(theory √250 = {n1.theory_std:.2f}), so {100 * n1.saturated:.0f}% of sigmoid outputs sit below "
            f"0.01 or above 0.99, where the slope is nearly 0 (mean σ′ {n1.mean_dsigmoid:.3f} of at most 0.25). "
            f"Xavier's variance 1/n brings the std to {xa.std_z:.2f} ({100 * xa.saturated:.1f}% saturated); "
            f"He's 2/n to {he.std_z:.2f}."
        )
    for net in cfg.nets:
        prop = propagation.get(net.slug, {})
        if prop:
            parts = []
            for init, p in prop.items():
                last = p["act_std"][-1] if p["act_std"] else math.nan
                parts.append(f"{INIT_LABELS.get(init, init)} {_g(last)} (gradient ratio first/last layer "
                             f"{_g(p['dz_ratio'])})")
            lines.append(
                f"{net.label.capitalize()} at initialization, activation std after the last hidden layer: "
                + "; ".join(parts)
                + ". A ratio far below 1 means the gradient vanishes on its way down, far above 1 that it "
                "explodes; near 1 every layer learns."
            )
        rows = _net_rows(records, net, cfg)
        if not rows:
            continue
        best = max(rows, key=lambda r: r["final_acc"])
        reached = [r for r in rows if r["epochs_to_target"] is not None]
        failed = [INIT_LABELS.get(r["init"], r["init"]) for r in rows if r["epochs_to_target"] is None]
        finals = ", ".join(f"{INIT_LABELS.get(r['init'], r['init'])} {r['final_acc']:.1f}%" for r in rows)
        text = (
            f"Training the {net.label} net ({net.optimizer}, {cfg.epochs} epochs), final test accuracy: {finals}. "
            f"{INIT_LABELS.get(best['init'], best['init'])} ends best"
        )
        if reached:
            fastest = min(reached, key=lambda r: (r["epochs_to_target"], -r["final_acc"]))
            text += (
                f"; {INIT_LABELS.get(fastest['init'], fastest['init'])} is first to {net.target:g}% "
                f"(epoch {fastest['epochs_to_target']:g})"
            )
            if fastest["init"] != best["init"]:
                text += f" but ends at {fastest['final_acc']:.1f}% — faster is not the same as better"
        if failed:
            text += f". Never reaching {net.target:g}%: {', '.join(failed)}"
        diverged = [INIT_LABELS.get(r["init"], r["init"]) for r in rows if r["diverged"]]
        if diverged:
            text += f" ({', '.join(diverged)} diverged: the loss became infinite)"
        auto = next((r for r in rows if r["init"] == "auto"), None)
        if auto is not None and auto["init"] != best["init"]:
            gap = best["final_acc"] - auto["final_acc"]
            text += f". auto ends {gap:.1f} points below the best hand-picked init"
        lines.append(text + ".")
    return lines


# -- the whole demo ---------------------------------------------------------------------------------


def run_demo(
    out_dir: str | Path = "initlab-out", *, quick: bool = False, progress: bool = True,
    config: DemoConfig | None = None,
) -> DemoResult:
    """Run parts a–d and write the figures, ``demo.json`` and ``report.html`` into ``out_dir``."""
    cfg = config or (QUICK if quick else FULL)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    figures: dict[str, Path] = {}
    n_train = len(cfg.nets) * len(cfg.inits_trained) * len(cfg.seeds)
    with threads(cfg.num_threads), flush_denormal(), progress_bar(enabled=progress) as bar:
        t_a = bar.add_task("a. the tutorial node", total=1)
        t_b = bar.add_task("b. signal propagation at init", total=len(cfg.nets) * len(cfg.inits_at_init))
        t_c = bar.add_task("c. training", total=n_train * cfg.epochs)
        node = tutorial_node(250, cfg.node_draws, seed=0)
        figures["a_node"] = _figure_node(node, out / "a_node.png")
        bar.advance(t_a)
        data = load_dataset(cfg.data)
        if cfg.train_subset is not None:
            data = Dataset(data.name, data.x_train[: cfg.train_subset], data.y_train[: cfg.train_subset],
                           data.x_test, data.y_test)
        propagation, figs_b = _propagation(cfg, data, out, bar, t_b)
        figures.update(figs_b)
        records = []
        for net in cfg.nets:
            for init in cfg.inits_trained:
                for seed in cfg.seeds:
                    bar.update(t_c, description=f"c. training {net.label}, {INIT_LABELS.get(init, init)}")
                    cell = Cell(init, net.depth, net.activation, net.width, seed, net.optimizer,
                                {"sgd": 0.01, "adam": 1e-3}[net.optimizer], cfg.epochs, 100, cfg.data, net.target)
                    rec = run_cell(cell, data, on_epoch=lambda e, a: bar.advance(t_c))
                    bar.advance(t_c, cfg.epochs - (len(rec["test_acc"]) - 1))
                    records.append(rec)
        bar.update(t_c, description="c. training")
    figures["c_learning_curves"] = plot_learning_curves(records, out / "c_learning_curves.png")
    figures["c_summary"] = _figure_training(records, cfg, out / "c_summary.png")
    lines = reading(node, propagation, records, cfg)
    result = DemoResult(out, out / "report.html", figures, node, propagation, records, lines,
                        time.perf_counter() - start, cfg)
    _write_report(result)
    (out / "demo.json").write_text(json.dumps(result.summary(), indent=1, default=_json_default))
    return result


def _json_default(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return str(x)


def _write_report(res: DemoResult) -> Path:
    cfg = res.config
    page = HtmlReport("initlab demo: why weight initialization matters")
    page.paragraph(
        "The tutorial's argument on real data (MNIST-1D, made locally: 4000 training and 1000 test "
        "sequences of 40 values, 10 classes). Every number below was measured by this run."
    )
    page.heading("d. What it means")
    page.bullets(res.reading)

    page.heading("a. One node with 250 inputs")
    page.table(
        ["weights", "Var[w]", "std(z) measured", "theory √(n·Var[w])", "saturated σ(z)", "mean σ′(z)"],
        [[r.name, r.formula, f"{r.std_z:.3f}", f"{r.theory_std:.3f}", f"{100 * r.saturated:.1f}%",
          f"{r.mean_dsigmoid:.3f}"] for r in res.node],
    )
    page.figure(res.figures["a_node"], f"z = Σ wᵢ for {cfg.node_draws:,} weight draws per choice, on the sigmoid.")

    page.heading("b. A deep network at initialization")
    for net in cfg.nets:
        prop = res.propagation.get(net.slug, {})
        if not prop:
            continue
        depth = len(next(iter(prop.values()))["act_std"])
        show = sorted({1, 2, depth // 4, depth // 2, (3 * depth) // 4, depth} - {0})
        header = ["hidden layer"] + [f"{INIT_LABELS.get(i, i)}: std(h) / ‖dL/dz‖ / saturated" for i in prop]
        rows = []
        for layer in show:
            row = [str(layer)]
            for p in prop.values():
                sat = p["saturated"][layer - 1]
                row.append(f"{_g(p['act_std'][layer - 1])} / {_g(p['grad_norm'][layer - 1])} / "
                           f"{'–' if sat is None else f'{100 * sat:.0f}%'}")
            rows.append(row)
        rows.append(["‖dL/dz₁‖ / ‖dL/dz_L‖"] + [_g(p["dz_ratio"]) for p in prop.values()])
        rows.append(["initial loss (ideal ln 10 = 2.30)"] + [_g(p["initial_loss"]) for p in prop.values()])
        page.paragraph(f"{net.label.capitalize()}, width {net.width}, {cfg.probe} test inputs:")
        page.table(header, rows)
        page.figure(res.figures[f"b_{net.slug}"],
                    f"{net.label}: std of the pre-activations z and the back-propagated ‖dL/dz‖ by layer.")
    page.figure(res.figures["b_saturation"], "Saturated units by layer (for ReLU: units with z < 0).")

    page.heading("c. Training: how well and how quickly")
    for net in cfg.nets:
        rows = _net_rows(res.training, net, cfg)
        page.paragraph(f"{net.label.capitalize()}, width {net.width}, {net.optimizer}, {cfg.epochs} epochs, "
                       f"seeds {list(cfg.seeds)}, target {net.target:g}%:")
        page.table(
            ["init", "final test %", "best test %", f"epochs to {net.target:g}%", "diverged"],
            [[INIT_LABELS.get(r["init"], r["init"]), f"{r['final_acc']:.1f}", f"{r['best_acc']:.1f}",
              "never" if r["epochs_to_target"] is None else f"{r['epochs_to_target']:g} ({r['reached']}/{r['seeds']})",
              f"{r['diverged']}/{r['seeds']}"] for r in rows],
        )
    page.figure(res.figures["c_learning_curves"], "Test accuracy by epoch (dotted: the target).")
    page.figure(res.figures["c_summary"], "Final test accuracy and epochs to the target per init.")
    page.paragraph(
        f"Run: torch {torch.__version__}, {cfg.num_threads or 'all'} thread(s), denormals flushed while training, "
        f"{res.wall_s:.0f} s."
    )
    return page.write(res.report)
