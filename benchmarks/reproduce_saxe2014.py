"""Saxe, McClelland & Ganguli (2014), "Exact solutions to the nonlinear dynamics of learning in deep
linear neural networks", Fig. 6A: with random orthogonal weights the learning time of a deep *linear*
network is flat in depth; with scaled Gaussian weights N(0, 1/N) it grows with depth.

Analogue (experiments.md §2.7): scikit-learn's digits, width 64, no biases, loss 0.5·mean‖ŷ − y‖² to
one-hot targets, full-batch gradient descent; the learning time is the number of steps until the loss
falls below 95 % of the attainable drop (0.5 → the least-squares optimum), at the fastest learning rate
of {0.005 · 2^k, k = 0…7}; at most 3000 steps. Depth = hidden layers (depth + 1 weight matrices).

The paper gives curves, not numbers; the reference column is experiments.md §2.7's measurement.

    python benchmarks/reproduce_saxe2014.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from initlab.experiments import flush_denormal
from initlab.experiments.data import load_dataset
from initlab.initializers import Orthogonal, RandomNormal

LRS = tuple(0.005 * 2**k for k in range(8))
MAX_STEPS = 3000
#: experiments.md §2.7: steps to threshold (best lr).
REFERENCE = {
    "gaussian": {1: "45 (0.16)", 2: "52 (0.16)", 4: "99 (0.08)", 8: "229 (0.04)", 16: "1287 (0.01)",
                 32: "2835 (0.005)", 64: ">3000"},
    "orthogonal": {1: "86 (0.16)", 2: "75 (0.16)", 4: "47 (0.16)", 8: "33 (0.16)", 16: "46 (0.08)",
                   32: "40 (0.08)", 64: "43 (0.08)"},
}


def weights(depth: int, init: str, seed: int, n_in: int, n_out: int, width: int = 64) -> list[torch.Tensor]:
    shapes = [(width, n_in)] + [(width, width)] * (depth - 1) + [(n_out, width)]
    if init == "orthogonal":
        return [Orthogonal(gain=1.0).sample(s, seed=seed * 1000 + i) for i, s in enumerate(shapes)]
    return [RandomNormal(0.0, 1.0 / s[1] ** 0.5).sample(s, seed=seed * 1000 + i) for i, s in enumerate(shapes)]


def loss_of(ws: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    h = x
    for w in ws:
        h = h @ w.T
    return 0.5 * ((h - y) ** 2).sum(dim=1).mean()


def steps_to(threshold: float, ws0: list[torch.Tensor], lr: float, x, y, limit: int) -> int | None:
    ws = [w.clone().requires_grad_(True) for w in ws0]
    for step in range(1, limit + 1):
        loss = loss_of(ws, x, y)
        grads = torch.autograd.grad(loss, ws)
        with torch.no_grad():
            for w, g in zip(ws, grads, strict=True):
                w -= lr * g
            after = loss_of(ws, x, y).item()
        if not after < 1e3:  # diverged (inf / nan / blown up)
            return None
        if after <= threshold:
            return step
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Saxe et al. (2014) deep linear learning time against depth.")
    parser.add_argument("--quick", action="store_true", help="depths 1, 4, 16, 32 only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small models: one thread is as fast, and robust when other processes compete
    start = time.perf_counter()
    data = load_dataset("digits")
    x, y = data.x_train, torch.nn.functional.one_hot(data.y_train, 10).float()
    # gelsd (SVD-based): the standardized digits have all-zero columns (constant pixels), which the
    # default driver mishandles.
    sol = torch.linalg.lstsq(x.double(), y.double(), driver="gelsd").solution
    optimum = 0.5 * ((x.double() @ sol - y.double()) ** 2).sum(1).mean().item()
    start_loss = 0.5 * (y**2).sum(1).mean().item()
    threshold = optimum + 0.05 * (start_loss - optimum)
    print("Saxe et al. 2014, Fig. 6A: deep linear nets, digits, full-batch GD")
    print(f"loss {start_loss:.4f} -> optimum {optimum:.4f} (reference 0.5000 -> 0.2023); threshold {threshold:.4f} "
          "(reference 0.2172)\n")
    depths = (1, 4, 16, 32) if args.quick else (1, 2, 4, 8, 16, 32, 64)
    print("| depth | " + " | ".join(f"{i}: steps (lr), reference" for i in ("gaussian", "orthogonal")) + " |")
    print("|---|---|---|")
    results = {}
    with flush_denormal():
        for depth in depths:
            cells = []
            for init in ("gaussian", "orthogonal"):
                ws0 = weights(depth, init, 0, data.n_features, 10)
                best, best_lr = None, None
                for lr in sorted(LRS, reverse=True):  # fast rates first, so slower runs can stop early
                    limit = MAX_STEPS if best is None else best - 1
                    n = steps_to(threshold, ws0, lr, x, y, limit) if limit > 0 else None
                    if n is not None:
                        best, best_lr = n, lr
                results[(depth, init)] = best
                found = f">{MAX_STEPS}" if best is None else f"{best} ({best_lr:g})"
                cells.append(f"{found}, {REFERENCE[init][depth]}")
            print(f"| {depth} | " + " | ".join(cells) + " |", flush=True)
    orth = [results[(d, "orthogonal")] for d in depths if d >= 4]
    if all(v is not None for v in orth):
        print(f"\northogonal, depth ≥ 4: {min(orth)}…{max(orth)} steps (flat: max/min = {max(orth) / min(orth):.2f}); "
              "Gaussian grows with depth.")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
