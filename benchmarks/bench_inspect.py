"""initlab.inspect against a plain forward + backward of the same model and batch, side by side in one run.

Run:  .venv/bin/python benchmarks/bench_inspect.py [--repeats 21] [--threads 1,2] [--json out.json]

Target (issue 4): inspect ≤ 1.5× a plain forward+backward (L = Σ y², ``loss.backward()``) on
  * a 50-layer ReLU MLP, width 256, batch 256 (He init: a healthy signal, no subnormals);
  * the same MLP with N(0, 0.01²) weights: the signal shrinks ×0.01·√128 ≈ 0.11 per layer, falls
    below float32's normal range (1.2e-38) after ~40 layers, and subnormal floats slow a plain CPU
    forward+backward down (experiments.md: ~30×). inspect flushes
    denormals during its run (``torch.set_flush_denormal(True)``, restored after); the plain anchor is
    timed both as is and with flushing on, so the table shows both effects;
  * a small CNN: 8 × [Conv2d(32 ch, 3×3, pad 1) + ReLU] on 32×32 inputs, batch 64, global average
    pool, Linear(32, 10).

How it is measured. The runs alternate (plain, inspect, plain flushed, plain, inspect, …) for each
intra-op thread count in ``--threads``. The machine's speed drifts between rounds (on the 2-core VM
this was written on, a plain pass takes anywhere from 45 to 110 ms at two threads), so the headline
ratio is the *paired* one: the median over rounds of inspect_i / plain_i, each pair timed back to back
in the same round. The ratio of the fastest runs (min/min) is shown next to it, and so is inspect with
its compiled single-pass statistics (:mod:`initlab.inspect.fused`, numba) turned off — torch ops only. Page faults are
counted per run (``ru_minflt``): whether glibc hands a pass recycled memory or fresh pages (~6 400
faults, tens of ms of kernel time for this MLP) changes from run to run for plain and inspect alike,
and is the largest source of spread. ``recommend=False``: the plan of a finding is not part of the
measurement (healthy models make none anyway).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import initlab
from initlab.inspect import flush_denormal_state, fused


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


def timed(fn: Callable[[], object]) -> tuple[float, int]:
    """(wall seconds, minor page faults of this process) of one call."""
    f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f


def inspect_torch_ops(model: nn.Module, x: torch.Tensor) -> None:
    """inspect with its compiled single-pass statistics (initlab.inspect.fused) turned off: torch ops only."""
    with fused.disabled():
        initlab.inspect(model, x, recommend=False)


def measure(name: str, model: nn.Module, x: torch.Tensor, threads: int, repeats: int) -> dict:
    torch.set_num_threads(threads)
    plain(model, x)  # warm-up: allocator, saturation rules, lazy imports, numba's compiled kernels
    report = initlab.inspect(model, x, recommend=False)
    inspect_torch_ops(model, x)
    tp, ti, tf, tt = [], [], [], []
    for _ in range(repeats):
        tp.append(timed(lambda: plain(model, x)))
        ti.append(timed(lambda: initlab.inspect(model, x, recommend=False)))
        tf.append(timed(lambda: plain_flushed(model, x)))
        tt.append(timed(lambda: inspect_torch_ops(model, x)))
    med = statistics.median
    return {
        "model": name,
        "threads": threads,
        "rounds": repeats,
        "plain_s": med(w for w, _ in tp),
        "plain_flushed_s": med(w for w, _ in tf),
        "inspect_s": med(w for w, _ in ti),
        "ratio": med(i / p for (i, _), (p, _) in zip(ti, tp, strict=True)),
        "ratio_min": min(w for w, _ in ti) / min(w for w, _ in tp),
        "ratio_flushed": med(i / f for (i, _), (f, _) in zip(ti, tf, strict=True)),
        "ratio_torch_ops": med(i / p for (i, _), (p, _) in zip(tt, tp, strict=True)),
        "fused": fused.available(),
        "flush_denormal": report.meta["flush_denormal"],
        "faults_plain": med(f for _, f in tp),
        "faults_inspect": med(f for _, f in ti),
        "verdict": report.verdict,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--threads", type=str, default="1,2", help="intra-op thread counts, comma-separated")
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args(argv)
    try:
        thread_counts = [int(t) for t in args.threads.split(",")]
    except ValueError:
        ap.error(f"--threads must be comma-separated whole numbers such as 1,2; got {args.threads!r}")
    if args.repeats < 1 or any(t < 1 for t in thread_counts):
        ap.error("--repeats and every --threads value must be at least 1")

    cases = [
        ("MLP 50×256, He, batch 256", mlp("he"), torch.randn(256, 256)),
        ("MLP 50×256, N(0, 0.01²) (subnormals), batch 256", mlp("small"), torch.randn(256, 256)),
        ("CNN 8×Conv2d(32, 3×3), 32×32, batch 64", cnn(), torch.randn(64, 3, 32, 32)),
    ]
    before = torch.get_num_threads()
    try:
        rows = [measure(n, m, x, t, args.repeats) for t in thread_counts for n, m, x in cases]
    finally:
        torch.set_num_threads(before)
    table = Table(title=f"initlab.inspect vs plain forward+backward ({args.repeats} alternating rounds)")
    for col in (
        "model",
        "threads",
        "plain (s)",
        "inspect (s)",
        "inspect / plain",
        "min / min",
        "inspect / plain flushed",
        "torch ops only / plain",
        "page faults plain / inspect",
        "verdict",
    ):
        table.add_column(col, justify="left" if col in ("model", "verdict") else "right")
    for r in rows:
        table.add_row(
            r["model"],
            str(r["threads"]),
            f"{r['plain_s']:.4f}",
            f"{r['inspect_s']:.4f}",
            f"{r['ratio']:.2f}×",
            f"{r['ratio_min']:.2f}×",
            f"{r['ratio_flushed']:.2f}×",
            f"{r['ratio_torch_ops']:.2f}×",
            f"{r['faults_plain']:.0f} / {r['faults_inspect']:.0f}",
            ", ".join(r["verdict"]),
        )
    Console(width=210).print(table)
    print(
        "inspect / plain: median over rounds of the paired ratio; target ≤ 1.5×. Denormals flushed during "
        "inspect:",
        all(r["flush_denormal"] for r in rows),
        "| compiled statistics (numba):",
        fused.available(),
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
