"""initlab.inspect against a plain forward + backward of the same model and batch, side by side in one run.

Run:  .venv/bin/python benchmarks/bench_inspect.py [--repeats 7] [--threads 2] [--json out.json]

Target (issue 4): inspect ≤ 1.5× a plain forward+backward (L = Σ y², ``loss.backward()``) on
  * a 50-layer ReLU MLP, width 256, batch 256 (He init: a healthy signal, no subnormals);
  * the same MLP with N(0, 0.01²) weights: the signal shrinks ×0.01·√128 ≈ 0.11 per layer, falls
    below float32's normal range (1.2e-38) after ~40 layers, and subnormal floats slow a plain CPU
    forward+backward down (experiments.md: ~30×). inspect flushes
    denormals during its run (``torch.set_flush_denormal(True)``, restored after); the plain anchor is
    timed both as is and with flushing on, so the table shows both effects;
  * a small CNN: 8 × [Conv2d(32 ch, 3×3, pad 1) + ReLU] on 32×32 inputs, batch 64, global average
    pool, Linear(32, 10).
The runs alternate (plain, inspect, plain, inspect, …) so machine noise hits both; the table gives the
median of ``--repeats`` runs of each and the ratio of the medians, in wall time and in this process's
CPU time (steadier on a shared machine, where other jobs stretch wall time). ``recommend=False``: the plan of a
finding is not part of the measurement (healthy models make none anyway).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import initlab
from initlab.inspect import flush_denormal_state


def mlp(init: str, depth: int = 50, width: int = 256) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        lin = nn.Linear(width, width)
        if init == "he":
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
            nn.init.zeros_(lin.bias)
        elif init == "small":
            nn.init.normal_(lin.weight, 0.0, 0.01)
            nn.init.zeros_(lin.bias)
        layers += [lin, nn.ReLU()]
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def cnn(depth: int = 8, ch: int = 32) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    c_in = 3
    for _ in range(depth):
        conv = nn.Conv2d(c_in, ch, 3, padding=1)
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        layers += [conv, nn.ReLU()]
        c_in = ch
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, 10)]
    return nn.Sequential(*layers)


def plain(model: nn.Module, x: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    model(x).pow(2).sum().backward()


def plain_flushed(model: nn.Module, x: torch.Tensor) -> None:
    before = flush_denormal_state()
    torch.set_flush_denormal(True)
    try:
        plain(model, x)
    finally:
        torch.set_flush_denormal(before)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process)."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    cases = [
        ("MLP 50×256, He, batch 256", mlp("he"), torch.randn(256, 256)),
        ("MLP 50×256, N(0, 0.01²) (subnormals), batch 256", mlp("small"), torch.randn(256, 256)),
        ("CNN 8×Conv2d(32, 3×3), 32×32, batch 64", cnn(), torch.randn(64, 3, 32, 32)),
    ]
    table = Table(
        title=f"initlab.inspect vs plain forward+backward ({args.threads} threads, median of {args.repeats})"
    )
    for col in (
        "model",
        "plain (s)",
        "plain, flushed (s)",
        "inspect (s)",
        "inspect / plain",
        "inspect / plain flushed",
        "CPU-time ratio",
        "verdict",
    ):
        table.add_column(col, justify="left" if col in ("model", "verdict") else "right")
    rows = []
    for name, model, x in cases:
        # Warm-up (allocator, saturation rules, lazy imports).
        plain(model, x)
        report = initlab.inspect(model, x, recommend=False)
        tp, tf, ti = [], [], []
        for _ in range(args.repeats):
            tp.append(timed(lambda m=model, x=x: plain(m, x)))
            ti.append(timed(lambda m=model, x=x: initlab.inspect(m, x, recommend=False)))
            tf.append(timed(lambda m=model, x=x: plain_flushed(m, x)))
        p, f, i = (statistics.median(w for w, _ in t) for t in (tp, tf, ti))
        cpu = statistics.median(c for _, c in ti) / statistics.median(c for _, c in tp)
        rows.append(
            {
                "model": name,
                "plain_s": p,
                "plain_flushed_s": f,
                "inspect_s": i,
                "ratio": i / p,
                "ratio_flushed": i / f,
                "cpu_ratio": cpu,
                "verdict": report.verdict,
            }
        )
        table.add_row(
            name,
            f"{p:.4f}",
            f"{f:.4f}",
            f"{i:.4f}",
            f"{i / p:.2f}×",
            f"{i / f:.2f}×",
            f"{cpu:.2f}×",
            ", ".join(report.verdict),
        )
    Console(width=170).print(table)
    print("target: inspect / plain ≤ 1.5×; denormals flushed during inspect:", report.meta["flush_denormal"])
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
