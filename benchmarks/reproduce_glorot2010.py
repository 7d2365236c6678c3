"""Glorot & Bengio (2010), "Understanding the difficulty of training deep feedforward neural networks".

Their 5 × 1000 MLPs at initialization under the "standard" init U(±1/√n) (eq. 1, Var 1/(3n)) and the
"normalized" init U(±√6/√(n_in+n_out)) (eq. 16, Var 2/(n_in+n_out)), zero biases, on 1000 MNIST-1D test
inputs with the cross-entropy loss:

- activation std by layer (their Fig. 6: standard narrows upward, normalized stays level);
- back-propagated gradient ‖dL/dz‖ by layer (Fig. 7: standard shrinks downward) and the ratio
  ‖dL/dz₁‖ / ‖dL/dz₅‖;
- mean singular value of the layer Jacobians ∂h_ℓ/∂h_{ℓ−1} = diag(φ′(z_ℓ)) W_ℓ, ℓ = 2…5, at 5 inputs
  (§4.2.2: ≈ 0.5 standard vs ≈ 0.8 normalized, tanh).

``--train`` adds their training set-up on scikit-learn's digits (plain SGD, batch 10, lr 0.01, 20
epochs): test accuracy after epoch 1 and 20, epochs to 90 % (experiments.md §2.3).

    python benchmarks/reproduce_glorot2010.py [--train]
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F

from initlab.experiments import flush_denormal
from initlab.experiments.data import load_dataset
from initlab.initializers import GlorotUniform, RandomUniform, Zeros

ACTS = {"tanh": torch.tanh, "softsign": F.softsign, "sigmoid": torch.sigmoid}
#: experiments.md §2.3 (measured, MNIST-1D): act std L1 → L5, dz ratio, Jacobian mean singular value.
REFERENCE = {
    ("tanh", "standard"): ("0.456 → 0.046", "0.085", "0.479"),
    ("tanh", "normalized"): ("0.259 → 0.207", "0.81", "0.803"),
    ("softsign", "standard"): ("0.317 → 0.022", "0.044", "0.437"),
    ("softsign", "normalized"): ("0.196 → 0.089", "0.41", "0.696"),
    ("sigmoid", "standard"): ("0.134 → 0.071", "3.8e-4", ""),
    ("sigmoid", "normalized"): ("0.069 → 0.121", "3.2e-3", ""),
}
PUBLISHED_JACOBIAN = {"standard": "≈0.5", "normalized": "≈0.8"}


def build(n_in: int, init: str, seed: int, width: int = 1000, depth: int = 5) -> list[nn.Linear]:
    layers = []
    fan = n_in
    for i in range(depth + 1):
        lin = nn.Linear(fan, 10 if i == depth else width)
        if init == "standard":
            b = 1 / math.sqrt(lin.in_features)
            RandomUniform(-b, b)(lin.weight, seed=seed * 100 + i)
        else:
            GlorotUniform()(lin.weight, seed=seed * 100 + i)
        Zeros()(lin.bias)
        layers.append(lin)
        fan = width
    return layers


def forward(layers: list[nn.Linear], act, x: torch.Tensor):
    zs, hs = [], []
    h = x
    for lin in layers[:-1]:
        z = lin(h)
        if z.requires_grad:
            z.retain_grad()
        h = act(z)
        zs.append(z)
        hs.append(h)
    return layers[-1](h), zs, hs


def jacobian_mean_sv(layers, act, x5: torch.Tensor) -> float:
    """Mean singular value of diag(φ′(z_ℓ)) W_ℓ over the square layers ℓ = 2…5 and the given inputs."""
    with torch.no_grad():
        _, zs, _ = forward(layers, act, x5)
    values = []
    for ell in range(1, len(zs)):
        w = layers[ell].weight.detach()
        z = zs[ell].detach().requires_grad_(True)
        (slope,) = torch.autograd.grad(act(z).sum(), z)  # φ′(z), elementwise
        for i in range(len(x5)):
            values.append(torch.linalg.svdvals(slope[i][:, None] * w).mean().item())
    return sum(values) / len(values)


def measure(act_name: str, init: str, data) -> dict:
    act = ACTS[act_name]
    layers = build(data.n_features, init, seed=0)
    x, y = data.x_test, data.y_test
    out, zs, hs = forward(layers, act, x)
    F.cross_entropy(out, y).backward()
    stds = [h.std().item() for h in hs]
    grads = [z.grad.norm().item() for z in zs]
    # The Jacobian check has reference values for tanh and softsign only (20 SVDs of 1000 × 1000 each).
    jac = jacobian_mean_sv(layers, act, x[:5]) if act_name != "sigmoid" else None
    return {"act_std": stds, "grad": grads, "dz_ratio": grads[0] / grads[-1], "jacobian": jac}


def train_digits(act_name: str, init: str, epochs: int = 20) -> tuple[float, float, int | None]:
    data = load_dataset("digits")
    layers = build(data.n_features, init, seed=0)
    model = nn.Sequential(*[m for lin in layers[:-1] for m in (lin, _Act(ACTS[act_name]))], layers[-1])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(0)
    accs = []
    for _ in range(epochs):
        order = torch.randperm(len(data.x_train), generator=gen)
        for i in range(0, len(order), 10):
            idx = order[i : i + 10]
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            accs.append(100 * (model(data.x_test).argmax(1) == data.y_test).float().mean().item())
    reach = next((e + 1 for e, a in enumerate(accs) if a >= 90), None)
    return accs[0], accs[-1], reach


class _Act(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Glorot & Bengio (2010) at initialization (and --train).")
    parser.add_argument("--train", action="store_true", help="also train on digits (≈1 min per cell)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small models: one thread is as fast, and robust when other processes compete
    start = time.perf_counter()
    data = load_dataset("mnist1d")
    print("Glorot & Bengio 2010: 5 × 1000 MLP at init, 1000 MNIST-1D test inputs, cross-entropy\n")
    print("| act | init | act std L1 … L5 | measured L1 → L5 (ref) | ‖dL/dz₁‖/‖dL/dz₅‖ (ref) | "
          "Jacobian mean sv (ref; paper) |")
    print("|---|---|---|---|---|---|")
    with flush_denormal():
        for act_name in ACTS:
            for init in ("standard", "normalized"):
                m = measure(act_name, init, data)
                ref = REFERENCE[(act_name, init)]
                paper = PUBLISHED_JACOBIAN[init] if act_name == "tanh" else "–"
                jac = "–" if m["jacobian"] is None else f"{m['jacobian']:.3f}"
                print(f"| {act_name} | {init} | {' '.join(f'{s:.3f}' for s in m['act_std'])} | "
                      f"{m['act_std'][0]:.3f} → {m['act_std'][-1]:.3f} ({ref[0]}) | {m['dz_ratio']:.3g} ({ref[1]}) | "
                      f"{jac} ({ref[2] or '–'}; {paper}) |")
        if args.train:
            print("\ndigits, plain SGD batch 10 lr 0.01, 20 epochs (paper: Table 1 direction, tanh N best)\n")
            print("| act | init | test % ep 1 / ep 20 | epochs to 90 % |")
            print("|---|---|---|---|")
            for act_name in ACTS:
                for init in ("standard", "normalized"):
                    a1, a20, reach = train_digits(act_name, init)
                    print(f"| {act_name} | {init} | {a1:.1f} / {a20:.1f} | {reach or 'never'} |")
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, denormals flushed, "
          f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
