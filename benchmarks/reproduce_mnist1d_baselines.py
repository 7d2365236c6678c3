"""Greydanus (2020), "Scaling down deep learning with MNIST-1D" (arXiv 2011.14439): the baselines
logistic 32 %, MLP 68 %, CNN 94 % (GRU 91 %), with the repository's models and training loop
(experiments.md §3.4):

- LinearBase Linear(40, 10); MLPBase Linear(40,100)–ReLU, a residual Linear(100,100)–ReLU, Linear(100,10);
  ConvBase three Conv1d (25 channels; k 5/3/3, stride 2, pad 1) with ReLU, flatten 125, Linear(125, 10);
  GRUBase (``--gru``, ≈70 s) a bidirectional GRU(1 → 6) over the 40 steps, Linear(480, 10);
- PyTorch default init, cross-entropy, Adam lr 1e-2, batch 100 taken in order (no shuffle), 6000 steps,
  test accuracy every 250 steps; the repository's published inits were unseeded, so runs here are seeded.

``--init normal1`` swaps every weight for N(0, 1) with zero biases (experiments.md §2.9: MLP 53 %, CNN 32 %).

    python benchmarks/reproduce_mnist1d_baselines.py [--seeds 0,1,2] [--init normal1] [--gru]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F

from initlab.experiments import flush_denormal
from initlab.experiments.data import load_dataset
from initlab.initializers import RandomNormal, Zeros

PUBLISHED = {"LinearBase": 32, "MLPBase": 68, "ConvBase": 94, "GRUBase": 91}
NOTEBOOK = {"LinearBase": 31.5, "MLPBase": 65.1, "ConvBase": 92.3, "GRUBase": 89.1}
#: experiments.md §2.9: default-init mean ± sd (n) and N(0, 1)-swapped, 2-core CPU reruns.
RERUN = {"LinearBase": ("31.7 (seed 42)", "–"), "MLPBase": ("65.2 ± 1.3 (5)", "53.1 ± 1.9"),
         "ConvBase": ("93.8 ± 1.2 (3)", "31.6 ± 2.4"), "GRUBase": ("91.7 (1)", "–")}


class LinearBase(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(40, 10)

    def forward(self, x):
        return self.linear(x)


class MLPBase(nn.Module):
    def __init__(self, hidden: int = 100):
        super().__init__()
        self.linear1, self.linear2, self.linear3 = nn.Linear(40, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 10)

    def forward(self, x):
        h = F.relu(self.linear1(x))
        h = h + F.relu(self.linear2(h))
        return self.linear3(h)


class ConvBase(nn.Module):
    def __init__(self, channels: int = 25):
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.linear = nn.Linear(125, 10)

    def forward(self, x):
        h = x[:, None, :]
        h = F.relu(self.conv3(F.relu(self.conv2(F.relu(self.conv1(h))))))
        return self.linear(h.flatten(1))


class GRUBase(nn.Module):
    def __init__(self, hidden: int = 6):
        super().__init__()
        self.gru = nn.GRU(1, hidden, batch_first=True, bidirectional=True)
        self.linear = nn.Linear(2 * hidden * 40, 10)

    def forward(self, x):
        out, _ = self.gru(x[:, :, None])
        return self.linear(out.flatten(1))


def swap_normal1(model: nn.Module, seed: int) -> None:
    for i, p in enumerate(model.parameters()):
        (RandomNormal(0.0, 1.0) if p.dim() >= 2 else Zeros())(p, seed=seed * 1000 + i)


def run(model_cls, seed: int, data, steps: int, init: str) -> float:
    torch.manual_seed(seed)
    model = model_cls()
    if init == "normal1":
        swap_normal1(model, seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=0)
    n = len(data.x_train)
    acc = 0.0
    for step in range(steps + 1):
        bix = (step * 100) % n
        loss = F.cross_entropy(model(data.x_train[bix : bix + 100]), data.y_train[bix : bix + 100])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 250 == 0:
            with torch.no_grad():
                acc = 100 * (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
    return acc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MNIST-1D baselines beside the published numbers.")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--init", choices=("default", "normal1"), default="default")
    parser.add_argument("--gru", action="store_true", help="also the GRU (≈70 s per seed)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(1)  # small models: one thread is as fast, and robust when other processes compete
    start = time.perf_counter()
    data = load_dataset("mnist1d")
    models = [LinearBase, MLPBase, ConvBase] + ([GRUBase] if args.gru else [])
    print(f"MNIST-1D baselines: Adam 1e-2, batch 100 in order, {args.steps} steps, init {args.init}\n")
    print("| model | test % per seed | mean | paper (README) | notebook | rerun default | rerun N(0,1) |")
    print("|---|---|---|---|---|---|---|")
    with flush_denormal():
        for cls in models:
            accs = [run(cls, s, data, args.steps, args.init) for s in seeds]
            name = cls.__name__
            print(f"| {name} | {' / '.join(f'{a:.1f}' for a in accs)} | {sum(accs) / len(accs):.1f} | "
                  f"{PUBLISHED[name]} | {NOTEBOOK[name]} | {RERUN[name][0]} | {RERUN[name][1]} |", flush=True)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
