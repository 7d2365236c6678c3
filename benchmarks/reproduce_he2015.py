"""He, Zhang, Ren & Sun (2015), "Delving Deep into Rectifiers", Fig. 3: a 30-layer plain ReLU network
stalls under Xavier initialization and trains under theirs, N(0, 2/n).

Two analogues on MNIST-1D (experiments.md §2.5):

- plain MLP, ReLU, depth 30, width 128, SGD with momentum 0.9 (lr 0.01), 20 epochs, target 45 %:
  glorot_uniform (Xavier) against he_normal (and orthogonal √2), seeds 0–2;
- plain 1-D CNN, L × [Conv1d(32 ch, k 3, pad 1) + ReLU], max-pool /2 after layers L/3 and 2L/3, global
  average pool, Linear(32, 10), no batch norm or residuals; Xavier N(0, 1/n) against He N(0, 2/n),
  n = in_ch·k, zero biases; SGD-m 0.9, lr 0.003, batch 100, 15 epochs, L = 22 and 30.

``--quick``: the MLP with seed 0 and the 30-layer CNN with seeds 0 and 1 (≈1.5 min on one idle core).

    python benchmarks/reproduce_he2015.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F

from initlab.experiments import Cell, flush_denormal, run_cell
from initlab.experiments.data import load_dataset
from initlab.initializers import VarianceScaling, Zeros

#: experiments.md §2.5 (best test %, reach 45 % k/3; CNN: test % at epoch 15, seeds 0 / 1).
MLP_REFERENCE = {"glorot_uniform": "10.3 ± 0.3 (0/3)", "he_normal": "49.1 ± 0.3 (3/3, 10.3 ep)",
                 "orthogonal": "50.4 ± 0.4 (3/3, 5.7 ep)"}
CNN_REFERENCE = {(22, "xavier"): "14.4 / 8.9, loss 2.29", (22, "he"): "83.9 / 90.9, loss 0.35",
                 (30, "xavier"): "8.9 / 8.9, loss 2.30", (30, "he"): "71.6 / 47.2, loss 1.2"}


def plain_cnn(depth: int, channels: int = 32) -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = 1
    pools = {depth // 3, (2 * depth) // 3}
    for i in range(1, depth + 1):
        layers += [nn.Conv1d(c_in, channels, 3, padding=1), nn.ReLU()]
        if i in pools:
            layers.append(nn.MaxPool1d(2))
        c_in = channels
    layers += [nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(channels, 10)]
    return nn.Sequential(*layers)


def init_cnn(model: nn.Module, scheme: str, seed: int) -> None:
    # Xavier as He et al. use the name: N(0, 1/n); theirs: N(0, 2/n); n = in_ch · k (fan_in).
    init = VarianceScaling(1.0 if scheme == "xavier" else 2.0, "fan_in", "untruncated_normal")
    for i, m in enumerate(m for m in model.modules() if isinstance(m, nn.Conv1d | nn.Linear)):
        init(m.weight, seed=seed * 1000 + i)
        Zeros()(m.bias)


def dz_ratio(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    outs: list[torch.Tensor] = []

    def keep(module, inputs, out) -> None:
        out.retain_grad()
        outs.append(out)

    hooks = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, nn.Conv1d)]
    F.cross_entropy(model(x), y).backward()
    for h in hooks:
        h.remove()
    model.zero_grad()
    return outs[0].grad.norm().item() / outs[-1].grad.norm().item()


def train_cnn(depth: int, scheme: str, seed: int, data, epochs: int = 15) -> dict:
    torch.manual_seed(seed)
    model = plain_cnn(depth)
    init_cnn(model, scheme, seed)
    x_tr, x_te = data.x_train[:, None, :], data.x_test[:, None, :]
    ratio = dz_ratio(model, x_te[:1000], data.y_test[:1000])
    opt = torch.optim.SGD(model.parameters(), lr=0.003, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    loss_sum = math.nan
    for _ in range(epochs):
        order = torch.randperm(len(x_tr), generator=gen)
        total = 0.0
        for i in range(0, len(order), 100):
            idx = order[i : i + 100]
            loss = F.cross_entropy(model(x_tr[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        loss_sum = total / len(order)
    with torch.no_grad():
        acc = 100 * (model(x_te).argmax(1) == data.y_test).float().mean().item()
    return {"dz_ratio": ratio, "train_loss": loss_sum, "test_acc": acc}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="He et al. (2015) Fig. 3 analogues on MNIST-1D.")
    parser.add_argument("--quick", action="store_true", help="MLP seed 0; the 30-layer CNN, seeds 0 and 1")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small models: one thread is as fast, and robust when other processes compete
    start = time.perf_counter()
    data = load_dataset("mnist1d")
    seeds = (0,) if args.quick else (0, 1, 2)
    print("He et al. 2015, Fig. 3: 30 layers of plain ReLU — Xavier stalls, He trains.\n")
    print("Plain MLP, ReLU, depth 30, width 128, SGD-m lr 0.01, 20 epochs, target 45 %\n")
    print("| init | final % per seed | best % mean | reach 45 % | reference (best, reach) |")
    print("|---|---|---|---|---|")
    with flush_denormal():
        for init in ("glorot_uniform", "he_normal", "orthogonal"):
            recs = [run_cell(Cell(init, 30, "relu", 128, s, "sgd", 0.01, 20, 100, "mnist1d", 45.0), data)
                    for s in seeds]
            reached = [r["epochs_to_target"] for r in recs if r["epochs_to_target"] is not None]
            best = sum(r["best_acc"] for r in recs) / len(recs)
            finals = " / ".join(f"{r['final_acc']:.1f}" for r in recs)
            print(f"| {init} | {finals} | {best:.1f} | "
                  f"{len(reached)}/{len(recs)}{f', {sum(reached) / len(reached):.1f} ep' if reached else ''} | "
                  f"{MLP_REFERENCE[init]} |")
        print("\nPlain 1-D CNN, 32 channels, SGD-m lr 0.003, 15 epochs (paper: 30 layers, Xavier stalls)\n")
        print("| L | init | ‖dL/dz₁‖/‖dL/dz_L‖ | train loss ep 15 | test % ep 15 | reference (test % seeds 0/1) |")
        print("|---|---|---|---|---|---|")
        depths = (30,) if args.quick else (22, 30)
        # Deep plain CNNs are seed-sensitive even under He (experiments.md §2.5: 72 % and 47 % at L = 30;
        # here seed 0 stalls at L = 30 while seeds 1 and 2 reach 65 % and 58 %), so never a single seed.
        cnn_seeds = (0, 1) if args.quick else (0, 1, 2)
        for depth in depths:
            for scheme in ("xavier", "he"):
                for s in cnn_seeds:
                    r = train_cnn(depth, scheme, s, data)
                    print(f"| {depth} | {scheme} (seed {s}) | {r['dz_ratio']:.2g} | {r['train_loss']:.2f} | "
                          f"{r['test_acc']:.1f} | {CNN_REFERENCE[(depth, scheme)]} |")
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, denormals flushed, "
          f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
