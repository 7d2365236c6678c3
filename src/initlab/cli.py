"""The ``initlab`` command line: list, describe, gain, inspect, compare, demo.

Every command reports a bad argument as one line on stderr (``initlab: error: ...``) and exits with
status 1 (typer's own usage errors exit with 2); a traceback means a bug in initlab.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app", "main"]

app = typer.Typer(
    name="initlab",
    help=(
        "Neural-network weight initialization, measured: the catalogue, gains, inspection and training "
        "experiments.\n\n"
        "Examples:\n\n"
        "  initlab list\n\n"
        "  initlab describe glorot_uniform --shape 250,16 --layout keras\n\n"
        "  initlab gain tanh\n\n"
        "  initlab inspect examples/models.py:deep_tanh --input-shape 64,40\n\n"
        "  initlab compare --inits default,glorot_uniform,he_normal --depths 10,30 --activations relu\n\n"
        "  initlab demo"
    ),
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_F = TypeVar("_F", bound=Callable[..., Any])


class CliError(ValueError):
    """A bad argument or input, reported as one line."""


def _friendly(fn: _F) -> _F:
    """Turn the errors a user can cause into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except (ValueError, TypeError, KeyError, LookupError, OSError, ImportError) as exc:
            message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
            message = " ".join(message.split()) or type(exc).__name__
            typer.echo(f"initlab: error: {message}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _console() -> Console:
    return Console(soft_wrap=False, width=max(100, Console().width))


def _ints(name: str, text: str, *, minimum: int = 0) -> list[int]:
    """``"250,16"`` -> ``[250, 16]``; names the argument and the bad piece otherwise."""
    pieces = [p.strip() for p in text.split(",")]
    out = []
    for p in pieces:
        try:
            v = int(p)
        except ValueError:
            raise CliError(
                f"{name}: {text!r} is not a comma-separated list of integers (bad piece {p!r}); e.g. 250,16."
            ) from None
        if v < minimum:
            raise CliError(f"{name}: {v} in {text!r} is below {minimum}.")
        out.append(v)
    return out


def _names(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=1, default=str))


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"


# -- list / describe / gain -------------------------------------------------------------------------


def _reference_shape(cls) -> tuple[int, ...]:
    """The tutorial's 250-input layer (torch layout: 16 outputs × 250 inputs); a 3-tap kernel for
    initializers that need one."""
    return (16, 250, 3) if getattr(cls, "min_rank", 0) >= 3 else (16, 250)


@app.command("list")
@_friendly
def list_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """The initializer catalogue with each one's formula on the tutorial's 250-input layer.

    Example: initlab list --json
    """
    from .initializers.registry import CATALOGUE

    rows = []
    for cls, (origin, aliases) in CATALOGUE.items():
        shape = _reference_shape(cls)
        try:
            d = cls().describe(shape, "torch")
            law, formula = d.distribution, d.formula
        except (ValueError, TypeError) as exc:
            # Shown, not hidden: e.g. DeltaOrthogonal needs out_channels ≥ in_channels.
            law, formula = f"not defined for shape {shape}", " ".join(str(exc).split())
        rows.append({"name": cls.__name__, "origin": origin, "aliases": list(aliases),
                     "shape": list(shape), "distribution": law, "formula": formula})
    if as_json:
        _print_json(rows)
        return
    table = Table(title="initlab catalogue (formulas for a torch weight of shape 16×250: fan_in 250, fan_out 16)")
    for col in ("name", "origin", "aliases", "distribution", "formula"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["origin"], ", ".join(r["aliases"]), r["distribution"], r["formula"])
    _console().print(table)


@app.command("describe")
@_friendly
def describe_command(
    name: str = typer.Argument(..., help="Initializer name, e.g. glorot_uniform, HeNormal, orthogonal."),
    shape: str = typer.Option("250,16", "--shape", help="Tensor shape, comma-separated, e.g. 250,16."),
    layout: str = typer.Option("torch", "--layout", help="torch, torch_transposed, keras, keras_transposed, keras_depthwise."),
    groups: int = typer.Option(1, "--groups", help="Convolution groups."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """What distribution NAME gives a tensor of SHAPE in LAYOUT, and why.

    Example: initlab describe glorot_uniform --shape 250,16 --layout keras
    """
    from .initializers.describe import describe

    d = describe(name, tuple(_ints("shape", shape, minimum=0)), layout, groups=groups)
    if as_json:
        _print_json(d.as_dict())
        return
    table = Table(show_header=False, title=f"{d.initializer} on {tuple(d.shape)} ({d.layout} layout)")
    table.add_column("", style="bold")
    table.add_column("")
    for key, value in (
        ("distribution", d.distribution),
        ("fan_in / fan_out", f"{d.fan_in} / {d.fan_out}"),
        ("mean", _fmt(d.mean)),
        ("variance", _fmt(d.variance)),
        ("std", _fmt(d.std)),
        ("bounds", f"[{_fmt(d.low)}, {_fmt(d.high)}]"),
        ("why", d.formula),
    ):
        table.add_row(key, value)
    _console().print(table)


@app.command("gain")
@_friendly
def gain_command(
    act: str = typer.Argument(..., help="Activation name, e.g. relu, tanh, gelu, leaky_relu."),
    param: float | None = typer.Option(None, "--param", help="leaky_relu slope or elu alpha."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The gain of ACT: forward (1/√E[φ(z)²]), backward (1/√E[φ'(z)²]) and torch's table value.

    Example: initlab gain tanh
    """
    from .initializers.gain import gain

    out: dict[str, Any] = {"activation": act, "param": param}
    for mode in ("forward", "backward"):
        out[mode] = gain(act, mode, param=param)
    try:
        out["torch"] = gain(act, "torch", param=param)
    except ValueError as exc:
        out["torch"] = None
        out["torch_note"] = " ".join(str(exc).split())
    if as_json:
        _print_json(out)
        return
    table = Table(title=f"gain of {act}" + (f" (param {param:g})" if param is not None else ""))
    for col in ("mode", "gain", "meaning"):
        table.add_column(col)
    table.add_row("forward", _fmt(out["forward"], 6), "g²·E[φ(z)²] = 1: activations keep their scale going up")
    table.add_row("backward", _fmt(out["backward"], 6), "g²·E[φ'(z)²] = 1: gradients keep their scale going down")
    table.add_row("torch", _fmt(out["torch"], 6), out.get("torch_note", "torch.nn.init.calculate_gain"))
    _console().print(table)


# -- inspect ----------------------------------------------------------------------------------------


def load_factory(spec: str) -> Callable[[], Any]:
    """``path/to/file.py:factory`` or ``package.module:factory`` -> the callable ``factory``."""
    if ":" not in spec:
        raise CliError(
            f"factory: {spec!r} has no ':'; write PATH/TO/file.py:factory or package.module:factory."
        )
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise CliError(f"factory: {spec!r} needs both a file or module and a name, as in models.py:make_model.")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where)
        if not path.is_file():
            raise CliError(f"factory: file {where!r} does not exist.")
        mod_spec = importlib.util.spec_from_file_location(f"_initlab_factory_{path.stem}", path)
        if mod_spec is None or mod_spec.loader is None:
            raise CliError(f"factory: cannot load {where!r} as a Python file.")
        module = importlib.util.module_from_spec(mod_spec)
        try:
            mod_spec.loader.exec_module(module)
        except Exception as exc:
            raise CliError(f"factory: running {where!r} raised {type(exc).__name__}: {exc}") from None
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise CliError(f"factory: cannot import module {where!r} ({exc}).") from None
    factory = getattr(module, attr, None)
    if factory is None:
        public = sorted(n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n)))
        raise CliError(f"factory: {where!r} has no {attr!r}; callables there: {', '.join(public[:12]) or 'none'}.")
    if not callable(factory):
        raise CliError(f"factory: {spec!r} is a {type(factory).__name__}, not a callable returning a model.")
    return factory


@app.command("inspect")
@_friendly
def inspect_command(
    factory: str = typer.Argument(..., help="PATH/TO/file.py:factory or package.module:factory returning an nn.Module."),
    input_shape: str = typer.Option(..., "--input-shape", help="Input batch shape, e.g. 64,40."),
    preset: str | None = typer.Option(None, "--plan", help="Apply initlab.plan(model, preset=...) first: auto, torch or keras."),
    seed: int = typer.Option(0, "--seed", help="Seed for the random input (and the plan)."),
    plot: Path | None = typer.Option(None, "--plot", help="Also write the per-layer figure to this PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Per-layer statistics of a model at initialization on a random N(0, 1) input batch.

    Example: initlab inspect examples/models.py:deep_tanh --input-shape 64,40 --plan auto
    """
    import torch

    from .inspect.run import inspect

    shape = _ints("input-shape", input_shape, minimum=1)
    fn = load_factory(factory)
    try:
        model = fn()
    except Exception as exc:
        raise CliError(f"factory: {factory} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise CliError(f"factory: {factory} returned {type(model).__name__}, not a torch.nn.Module.")
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    if preset is not None:
        from .plan.build import plan

        plan(model, preset=preset, example_input=x).apply(seed=seed)
    try:
        report = inspect(model, x)
    except RuntimeError as exc:
        raise CliError(f"input-shape: the model cannot run on a batch of shape {tuple(shape)} ({exc}).") from None
    if plot is not None:
        report.plot(plot)
    if as_json:
        typer.echo(report.to_json())
        return
    _console().print(report)
    if plot is not None:
        typer.echo(f"figure: {plot}")


# -- compare / demo ---------------------------------------------------------------------------------


@app.command("compare")
@_friendly
def compare_command(
    inits: str = typer.Option("default,glorot_uniform,he_normal,orthogonal", "--inits",
                              help="Comma-separated inits: normal1, normal001, default, standard, glorot_uniform, "
                                   "he_normal, orthogonal, lsuv, critical, auto, or any catalogue name."),
    depths: str = typer.Option("10", "--depths", help="Hidden-layer counts, e.g. 10,30,50."),
    activations: str = typer.Option("relu", "--activations", help="e.g. relu,tanh (relu, tanh, sigmoid, softsign, ...)."),
    widths: str = typer.Option("128", "--widths", help="Hidden widths, e.g. 64,128."),
    seeds: str = typer.Option("0", "--seeds", help="Seeds, e.g. 0,1,2."),
    optimizers: str = typer.Option("sgd", "--optimizers", help="sgd (momentum 0.9, lr 0.01) and/or adam (lr 1e-3)."),
    data: str = typer.Option("mnist1d", "--data", help="mnist1d, digits, or a .npz / .csv file."),
    epochs: int = typer.Option(20, "--epochs", min=1),
    batch_size: int = typer.Option(100, "--batch-size", min=1),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate for every optimizer (default per optimizer)."),
    target: float | None = typer.Option(None, "--target", help="Target test accuracy %% (default 45 mnist1d, 90 digits, 50 else)."),
    out: Path = typer.Option(Path("initlab-compare"), "--out", help="Output folder (rerun to resume)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Skip cells already in OUT/runs.jsonl."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    num_threads: int = typer.Option(1, "--threads", min=0,
                                    help="torch threads while training; 0 = every available CPU (1 is fastest "
                                         "for small MLPs)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results table as JSON."),
) -> None:
    """Train plain MLPs over a grid of inits × depths × activations × widths × seeds × optimizers.

    Writes runs.jsonl, results.csv, results.json, learning_curves.png and accuracy_vs_depth.png.

    Example: initlab compare --inits default,glorot_uniform,he_normal --depths 10,30 --seeds 0,1,2
    """
    from .experiments.training import Grid, compare

    grid = Grid(
        inits=tuple(_names(inits)), depths=tuple(_ints("depths", depths)),
        activations=tuple(_names(activations)), widths=tuple(_ints("widths", widths, minimum=1)),
        seeds=tuple(_ints("seeds", seeds)), optimizers=tuple(_names(optimizers)),
        epochs=epochs, batch_size=batch_size, lr=lr, target=target,
    )
    result = compare(grid, data, out, resume=resume, progress=progress and not as_json,
                     num_threads=num_threads or None)
    if as_json:
        _print_json({"out_dir": str(result.out_dir), "ran": result.ran, "skipped": result.skipped,
                     "rows": result.rows})
        return
    console = _console()
    console.print(results_table(result.rows))
    console.print(f"ran {result.ran} runs, skipped {result.skipped} already finished; results in {result.out_dir}")


def results_table(rows: list[dict[str, Any]]) -> Table:
    """The compare summary as a rich table."""
    table = Table(title="final / best test accuracy (mean ± sd over seeds), epochs to target (median, reached k/n)")
    for col in ("act", "depth", "width", "opt", "init", "final %", "best %", "epochs to target", "diverged"):
        table.add_column(col, justify="right" if col not in ("act", "opt", "init") else "left")
    for r in rows:
        ett = "–" if r["epochs_to_target"] is None else f"{r['epochs_to_target']:g}"
        table.add_row(
            r["activation"], str(r["depth"]), str(r["width"]), r["optimizer"], r["init"],
            f"{r['final_acc']:.1f} ± {r['final_sd']:.1f}", f"{r['best_acc']:.1f} ± {r['best_sd']:.1f}",
            f"{ett} ({r['reached']}/{r['seeds']} ≥ {r['target']:g}%)",
            f"div {r['diverged']}/{r['seeds']}" if r["diverged"] else "",
        )
    return table


@app.command("demo")
@_friendly
def demo_command(
    out: Path = typer.Option(Path("initlab-out"), "--out", help="Output folder for figures and report.html."),
    quick: bool = typer.Option(False, "--quick", help="A tiny configuration that runs in seconds (for tests)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as JSON."),
) -> None:
    """The tutorial's story on MNIST-1D: why N(0,1) weights fail, what Xavier and He change, and how well
    and how quickly each network then trains. Writes PNG figures and one self-contained report.html.

    Example: initlab demo --out initlab-out
    """
    from .experiments.demo import run_demo

    result = run_demo(out, quick=quick, progress=progress and not as_json)
    if as_json:
        _print_json(result.summary())
        return
    console = _console()
    console.print()
    for line in result.reading:
        console.print(f"• {line}")
    console.print(f"\nreport: {result.report.resolve()}")


def main() -> None:
    """Console-script entry point (``initlab``)."""
    app(prog_name="initlab")


if __name__ == "__main__":
    sys.exit(main())
