"""Each initializer against its ``torch.nn.init`` counterpart, on the same tensors, side by side in one run.

Run:  .venv/bin/python benchmarks/bench_initializers.py [--big] [--repeats 5] [--seconds 1] [--threads 2]
                                                        [--only NAME ...] [--shapes 16384x4096 ...]

Shapes: 1024², 4096² and, with ``--big``, 16384×4096 (float32; a conv-shaped tensor of about the same
size for ``dirac``). For every pair the runs alternate (torch, initlab, torch, initlab, ...) on the same
tensor with generators seeded alike, so machine noise hits both (fast pairs repeat for ``--seconds``
per side, at least ``--repeats`` times; calls over 5 s run once after the warm-up); the table gives the
best and the median time and the ratio initlab/torch of each (< 1: initlab faster). Where both sides
run the same torch kernel (uniform_, normal_, zero_, eye_) the ratio is 1 plus initlab's fixed
per-call cost (fans, describe: tens of µs) and machine noise. Targets
(issue 2): every ratio ≤ 1, and the Keras-style truncated normal (±2σ) at least 10× faster than
``torch.nn.init.trunc_normal_(w, std=σ, a=-2σ, b=2σ)``.

Counterparts: Keras presets are timed against the torch call that gives the same law (frameworks.md §6):
``glorot_uniform`` ↔ ``xavier_uniform_``; ``he_normal``/``lecun_normal``/``truncated_normal`` ↔
``trunc_normal_`` with bounds ±2σ; ``torch_default`` ↔ ``kaiming_uniform_(a=√5)``.
Orthogonal is a QR (seconds at 4096²), so it runs at 1024² and 4096² only.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table
from torch.nn import init as tinit

import initlab

C = 0.87962566103423978  # std of N(0,1) cut at ±2 (Keras's correction)
SHAPES = [(1024, 1024), (4096, 4096)]
BIG = (16384, 4096)

Fill = Callable[[torch.Tensor, torch.Generator], object]


def _pairs(shape: tuple[int, int]) -> list[tuple[str, str, Fill, Fill]]:
    """(initlab name, torch counterpart, initlab fill, torch fill) for a 2-D (out, in) weight."""
    fan_in = shape[1]  # torch layout (out, in)
    he, lecun = math.sqrt(2 / fan_in) / C, math.sqrt(1 / fan_in) / C
    s = 0.02
    return [
        ("random_uniform", "uniform_(-0.05, 0.05)", lambda w, g: initlab.RandomUniform()(w, seed=g),
         lambda w, g: tinit.uniform_(w, -0.05, 0.05, generator=g)),
        ("random_normal", "normal_(0, 0.05)", lambda w, g: initlab.RandomNormal()(w, seed=g),
         lambda w, g: tinit.normal_(w, 0.0, 0.05, generator=g)),
        ("zeros", "zeros_", lambda w, g: initlab.Zeros()(w), lambda w, g: tinit.zeros_(w)),
        ("constant", "constant_(0.1)", lambda w, g: initlab.Constant(0.1)(w), lambda w, g: tinit.constant_(w, 0.1)),
        ("xavier_uniform", "xavier_uniform_", lambda w, g: initlab.XavierUniform()(w, seed=g),
         lambda w, g: tinit.xavier_uniform_(w, generator=g)),
        ("xavier_normal", "xavier_normal_", lambda w, g: initlab.XavierNormal()(w, seed=g),
         lambda w, g: tinit.xavier_normal_(w, generator=g)),
        ("glorot_uniform", "xavier_uniform_", lambda w, g: initlab.GlorotUniform()(w, seed=g),
         lambda w, g: tinit.xavier_uniform_(w, generator=g)),
        ("kaiming_uniform", "kaiming_uniform_", lambda w, g: initlab.KaimingUniform()(w, seed=g),
         lambda w, g: tinit.kaiming_uniform_(w, generator=g)),
        ("kaiming_normal(a=0.2)", "kaiming_normal_(a=0.2)", lambda w, g: initlab.KaimingNormal(a=0.2)(w, seed=g),
         lambda w, g: tinit.kaiming_normal_(w, a=0.2, generator=g)),
        ("torch_default", "kaiming_uniform_(a=√5)", lambda w, g: initlab.TorchDefault()(w, seed=g),
         lambda w, g: tinit.kaiming_uniform_(w, a=math.sqrt(5), generator=g)),
        ("he_normal", "trunc_normal_(±2σ)", lambda w, g: initlab.HeNormal()(w, seed=g),
         lambda w, g: tinit.trunc_normal_(w, 0.0, he, -2 * he, 2 * he, generator=g)),
        ("lecun_normal", "trunc_normal_(±2σ)", lambda w, g: initlab.LecunNormal()(w, seed=g),
         lambda w, g: tinit.trunc_normal_(w, 0.0, lecun, -2 * lecun, 2 * lecun, generator=g)),
        ("truncated_normal", "trunc_normal_(±2σ)", lambda w, g: initlab.TruncatedNormal(stddev=s)(w, seed=g),
         lambda w, g: tinit.trunc_normal_(w, 0.0, s, -2 * s, 2 * s, generator=g)),
        ("trunc_normal(std=0.02)", "trunc_normal_(std=0.02)", lambda w, g: initlab.TruncNormal(std=s)(w, seed=g),
         lambda w, g: tinit.trunc_normal_(w, std=s, generator=g)),
        ("identity", "eye_", lambda w, g: initlab.Identity()(w), lambda w, g: tinit.eye_(w)),
        ("sparse(0.1)", "sparse_(0.1)", lambda w, g: initlab.Sparse(0.1)(w, seed=g),
         lambda w, g: tinit.sparse_(w, 0.1, generator=g)),
        ("orthogonal", "orthogonal_", lambda w, g: initlab.Orthogonal()(w, seed=g),
         lambda w, g: tinit.orthogonal_(w, generator=g)),
        ("dirac", "dirac_", lambda w, g: initlab.Dirac()(w), lambda w, g: tinit.dirac_(w)),
    ]


def _time(fn: Fill, w: torch.Tensor, g: torch.Generator) -> float:
    t0 = time.perf_counter()
    fn(w, g)
    return time.perf_counter() - t0


def run(shapes: list[tuple[int, int]], repeats: int, only: set[str] | None, seconds: float = 1.0) -> list[dict]:
    rows = []
    for shape in shapes:
        numel = math.prod(shape)
        flat = torch.empty(shape)
        c = round(math.sqrt(numel / 9))
        conv = torch.empty(c, c, 3, 3)  # about the same number of values, for dirac
        for name, counterpart, ours, theirs in _pairs(shape):
            if only and name not in only:
                continue
            if name == "orthogonal" and numel > 4096 * 4096:
                continue
            w = conv if name == "dirac" else flat
            g_ours, g_torch = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
            # Warm-up (allocator, first-call overheads), not timed; it also sizes the repeat count:
            # fast pairs repeat until each side has run ~`seconds`, slow ones (> 5 s a call) once.
            warm = max(_time(ours, w, g_ours), _time(theirs, w, g_torch))
            reps = 1 if warm > 5.0 else min(200, max(repeats, math.ceil(seconds / warm)))
            t_ours, t_torch = [], []
            for i in range(reps):
                if i % 2:  # alternate which side goes first
                    t_ours.append(_time(ours, w, g_ours))
                    t_torch.append(_time(theirs, w, g_torch))
                else:
                    t_torch.append(_time(theirs, w, g_torch))
                    t_ours.append(_time(ours, w, g_ours))
            rows.append({
                "shape": "×".join(map(str, w.shape)), "name": name, "counterpart": counterpart, "reps": reps,
                "torch_best": min(t_torch), "ours_best": min(t_ours),
                "torch_median": statistics.median(t_torch), "ours_median": statistics.median(t_ours),
                "bytes": w.numel() * w.element_size(),
            })
            _print_row(rows[-1])
    return rows


def _print_row(r: dict) -> None:
    print(
        f"  {r['shape']:>14} {r['name']:<24} torch {1e3 * r['torch_best']:9.2f} ms  initlab "
        f"{1e3 * r['ours_best']:9.2f} ms  ratio {r['ours_best'] / r['torch_best']:.3f}",
        file=sys.stderr,
        flush=True,
    )


def table(rows: list[dict], threads: int) -> Table:
    t = Table(title=f"initlab vs torch.nn.init, float32, {threads} threads (ratio = initlab / torch; < 1 is faster)")
    for col in ("shape", "initlab", "torch counterpart"):
        t.add_column(col)
    for col in ("torch ms (best)", "initlab ms (best)", "ratio (best)", "ratio (median)", "initlab GB/s"):
        t.add_column(col, justify="right")
    for r in rows:
        ratio = r["ours_best"] / r["torch_best"]
        style = "green" if ratio <= 1.0 else "red"
        t.add_row(
            r["shape"], r["name"], r["counterpart"], f"{1e3 * r['torch_best']:.2f}", f"{1e3 * r['ours_best']:.2f}",
            f"[{style}]{ratio:.3f}[/]", f"{r['ours_median'] / r['torch_median']:.3f}",
            f"{r['bytes'] / r['ours_best'] / 1e9:.2f}",
        )
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--big", action="store_true", help="also run 16384×4096 (minutes: torch's trunc_normal_ is slow)")
    p.add_argument("--repeats", type=int, default=5, help="at least this many timed runs per side")
    p.add_argument("--seconds", type=float, default=1.0,
                   help="repeat fast pairs until each side has run about this long (at most 200 runs)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="*", help="initlab names to run (default: all)")
    p.add_argument("--shapes", nargs="*", help="shapes such as 16384x4096, instead of the defaults")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    shapes = SHAPES + ([BIG] if args.big else [])
    if args.shapes:
        shapes = [tuple(int(d) for d in sh.lower().replace("×", "x").split("x")) for sh in args.shapes]
        if any(len(sh) != 2 for sh in shapes):
            p.error(f"--shapes: expected 2-D shapes such as 4096x4096, got {args.shapes}")
    rows = run(shapes, args.repeats, set(args.only) if args.only else None, args.seconds)
    console = Console(width=160)
    console.print(table(rows, args.threads))
    slow = [r for r in rows if r["ours_best"] > r["torch_best"]]
    trunc = [r for r in rows if r["name"] == "truncated_normal"]
    for r in trunc:
        console.print(f"truncated normal (±2σ) at {r['shape']}: {r['torch_best'] / r['ours_best']:.1f}× faster than "
                      f"trunc_normal_ (best of {r['reps']}; median {r['torch_median'] / r['ours_median']:.1f}×), "
                      f"target ≥ 10×")
    console.print(f"{len(rows) - len(slow)}/{len(rows)} pairs at least as fast as torch (best times)"
                  + (f"; slower: {', '.join(r['name'] + ' ' + r['shape'] for r in slow)}" if slow else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
