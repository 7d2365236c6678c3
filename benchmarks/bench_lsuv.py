"""initlab.lsuv against the ``lsuv`` 0.3.0 package, side by side in one run; and theory call timings.

Run:  .venv/bin/python benchmarks/bench_lsuv.py [--threads 1] [--repeats 3] [--json out.json]

Part 1 — tanh MLPs (width 128, batch 256) of depth 10, 50, 100: full forward passes each method runs,
wall time (median of ``--repeats``; ratio = lsuv-package time / initlab time, both measured in this
process on copies of the same model) and the final max |std − 1| over all layer outputs, measured by a
separate pass with hooks that clone the output.

Part 2 — the cases anchors.md §1.1 lists where the package goes wrong: in-place ReLU, registration
order ≠ execution order, a module called twice, a 32-block residual stream, a weight-standardized
layer. Each row gives what both methods leave behind.

Part 3 — wall time of each ``initlab.theory`` call (median of 20).

Both LSUVs include their orthonormal pre-init (a QR per layer). On a shared 2-core machine torch's
intra-op threads contend, so ``--threads 1`` (the default) gives the steadier numbers.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import initlab
from initlab import theory

WIDTH, BATCH = 128, 256


def tanh_mlp(depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(WIDTH, WIDTH), nn.Tanh()]
    return nn.Sequential(*layers)


def inplace_relu_mlp(depth: int = 5) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(WIDTH, WIDTH), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def add_linears(module: nn.Module, *names: str) -> None:
    """Register one ``nn.Linear(WIDTH, WIDTH)`` per name on ``module``, in the order given (which is
    both the registration order and the order their default inits draw from torch's RNG)."""
    for name in names:
        setattr(module, name, nn.Linear(WIDTH, WIDTH))


class Reversed(nn.Module):
    """``b`` is registered before ``a`` but runs after it."""

    def __init__(self) -> None:
        super().__init__()
        add_linears(self, "b", "a")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


class Shared(nn.Module):
    """One ``shared`` layer called twice."""

    def __init__(self) -> None:
        super().__init__()
        add_linears(self, "inp", "shared")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(torch.relu(self.shared(torch.relu(self.inp(x)))))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        add_linears(self, "fc1", "fc2")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(x)))


class ResStream(nn.Module):
    def __init__(self, blocks: int = 32) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[Block() for _ in range(blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class WSLinear(nn.Linear):
    """Weight-standardized linear layer (NF-Net style) with a fixed gain of 3: rescaling ``weight``
    cannot change its output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean(1, keepdim=True)) / (w.std(1, keepdim=True) + 1e-5)
        return F.linear(x, 3.0 * w, self.bias)


class WSNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ws = WSLinear(WIDTH, WIDTH)
        self.fc = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.ws(x)))


def layer_stds(model: nn.Module, x: torch.Tensor) -> list[tuple[str, float]]:
    """(name, std) of every nn.Linear call's output, in execution order, cloned before anything downstream runs."""
    names = {m: n for n, m in model.named_modules()}
    rec: list[tuple[str, float]] = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o: rec.append((names[mod], float(o.detach().clone().double().std()))))
        for m in model.modules()
        if isinstance(m, nn.Linear)
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return rec


def stream_stds(model: ResStream, x: torch.Tensor) -> list[float]:
    rec: list[float] = []
    hooks = [b.register_forward_hook(lambda mod, i, o: rec.append(float(o.double().std()))) for b in model.blocks]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return rec


def count_passes(model: nn.Module) -> list[int]:
    n = [0]
    model.register_forward_pre_hook(lambda mod, inp: n.__setitem__(0, n[0] + 1))
    return n


def run_reference(model: nn.Module, x: torch.Tensor) -> tuple[float, int]:
    import lsuv as lsuv_pkg

    passes = count_passes(model)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lsuv_pkg.lsuv_with_singlebatch(model, x, needed_std=1.0, verbose=False)
    return time.perf_counter() - t, passes[0]


def run_initlab(model: nn.Module, x: torch.Tensor, **kw) -> tuple[float, int, initlab.LSUVResult]:
    passes = count_passes(model)
    t = time.perf_counter()
    res = initlab.lsuv(model, x, 1.0, seed=0, **kw)
    return time.perf_counter() - t, passes[0], res


def max_err(stds: list[tuple[str, float]]) -> float:
    return max(abs(s - 1.0) for _, s in stds)


def part1(x: torch.Tensor, repeats: int, out: dict) -> None:
    print(f"Part 1: tanh MLPs, width 128, batch 256 (times: median of {repeats})")
    print(f"{'depth':>5} | {'passes pkg':>10} {'initlab':>7} | {'time pkg s':>10} {'initlab s':>9} {'ratio':>6} | "
          f"{'max|std-1| pkg':>14} {'initlab':>9}")
    for depth in (10, 50, 100):
        torch.manual_seed(depth)
        base = tanh_mlp(depth)
        t_ref, t_me = [], []
        for _ in range(repeats):
            ref, me = copy.deepcopy(base), copy.deepcopy(base)
            dt, p_ref = run_reference(ref, x)
            t_ref.append(dt)
            dt, p_me, _ = run_initlab(me, x)
            t_me.append(dt)
        e_ref, e_me = max_err(layer_stds(ref, x)), max_err(layer_stds(me, x))
        tr, tm = statistics.median(t_ref), statistics.median(t_me)
        print(f"{depth:>5} | {p_ref:>10} {p_me:>7} | {tr:>10.3f} {tm:>9.4f} {tr / tm:>6.1f} | {e_ref:>14.3g} {e_me:>9.2g}")
        out["mlp"].append({"depth": depth, "passes_pkg": p_ref, "passes_initlab": p_me, "time_pkg_s": tr,
                           "time_initlab_s": tm, "time_ratio": tr / tm, "max_err_pkg": e_ref, "max_err_initlab": e_me})


def compare_case(
    rows: list[tuple[str, list[tuple[str, float]], list[tuple[str, float]]]],
    seed: int,
    build: Callable[[], nn.Module],
    x: torch.Tensor,
    title: str,
) -> tuple[nn.Module, nn.Module, initlab.LSUVResult]:
    """Seed torch with ``seed``, build a model, run the package's LSUV and initlab's on two copies of it
    with input ``x``, append ``(title, package layer stds, initlab layer stds)`` to ``rows`` and return
    ``(package copy, initlab copy, initlab result)``."""
    torch.manual_seed(seed)
    base = build()
    ref, me = copy.deepcopy(base), copy.deepcopy(base)
    run_reference(ref, x)
    _, _, res = run_initlab(me, x)
    rows.append((title, layer_stds(ref, x), layer_stds(me, x)))
    return ref, me, res


def part2(x: torch.Tensor, out: dict) -> None:
    print("\nPart 2: where the package goes wrong (target std 1)")
    rows: list[tuple[str, list[tuple[str, float]], list[tuple[str, float]]]] = []
    compare_case(rows, 1, inplace_relu_mlp, x, "in-place ReLU, 5 layers: pre-activation std")
    # input std 3, so scaling `a` changes what `b` sees
    compare_case(rows, 2, Reversed, 3.0 * x, "registration order b, a; execution a -> b (input std 3)")
    _, _, res = compare_case(rows, 3, Shared, x, "shared layer called twice")
    ref, me, res_ws = compare_case(rows, 4, WSNet, x, "weight-standardized first layer")

    for title, a, b in rows:
        fa = ", ".join(f"{n}={s:.3f}" for n, s in a)
        fb = ", ".join(f"{n}={s:.3f}" for n, s in b)
        print(f"- {title}\n    lsuv 0.3.0: {fa}\n    initlab   : {fb}")
        out["cases"].append({"case": title, "pkg": a, "initlab": b})
    print(f"    initlab reports: {[(c.name, c.status, round(c.std_after, 3)) for c in res_ws.problems]}")
    print(f"    ws weight row norm after (orthonormal pre-init = 1): lsuv 0.3.0 "
          f"{float(ref.ws.weight.detach().norm(dim=1).mean()):.2e}, initlab {float(me.ws.weight.detach().norm(dim=1).mean()):.3g} "
          "(the package reaches std 1 only by shrinking the weight until the standardization's epsilon dominates)")
    out["ws_weight_norm"] = {"pkg": float(ref.ws.weight.detach().norm(dim=1).mean()),
                             "initlab": float(me.ws.weight.detach().norm(dim=1).mean())}
    print(f"    initlab shared-layer calls: {[(c.name, c.call, c.status, round(c.std_after, 3)) for c in res.layers]}")

    torch.manual_seed(5)
    base = ResStream(32)
    ref, me, me_res = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    run_reference(ref, x)
    run_initlab(me, x)
    _, p, res_r = run_initlab(me_res, x, residual=True)
    s_ref, s_me, s_res = stream_stds(ref, x), stream_stds(me, x), stream_stds(me_res, x)
    print("- 32-block residual stream x + f(x): stream std after blocks 1 / 8 / 16 / 32 (branch layers all at 1)")
    for label, s in (("lsuv 0.3.0", s_ref), ("initlab", s_me), ("initlab residual=True", s_res)):
        print(f"    {label:<22}: {s[0]:.3f} / {s[7]:.3f} / {s[15]:.3f} / {s[31]:.3f}")
    print(f"    initlab residual=True: {p} pass, branch std target 1/sqrt(32) = {1 / math.sqrt(32):.3f}, "
          f"max |std-target| over layer calls {res_r.max_error:.2g}")
    out["cases"].append({"case": "residual stream 32 blocks", "pkg": s_ref, "initlab": s_me, "initlab_residual": s_res})


def part3(out: dict) -> None:
    print("\nPart 3: theory calls, median of 20: wall time and CPU time of this process (the CPU time is "
          "what a loaded machine does not inflate)")
    calls = [
        ("variance_map(tanh, q=1)", lambda: theory.variance_map("tanh", 1.76, 0.05, 1.0)),
        ("fixed_point(tanh)", lambda: theory.fixed_point("tanh", 1.76, 0.05)),
        ("chi1(tanh)", lambda: theory.chi1("tanh", 1.76, 0.05)),
        ("chi1(gelu)", lambda: theory.chi1("gelu", 2.0, 0.05)),
        ("correlation_map(tanh, 9 c)", lambda: theory.correlation_map("tanh", 2.5, 0.05,
                                                                      torch.linspace(-1, 1, 9).numpy())),
        ("depth_scales(tanh, ordered)", lambda: theory.depth_scales("tanh", 1.5, 0.05)),
        ("depth_scales(tanh, chaotic)", lambda: theory.depth_scales("tanh", 2.5, 0.05)),
        ("predict_std(tanh, depth 50)", lambda: theory.predict_std("tanh", 1.76, 0.05, 50, 1.0)),
        ("critical(tanh)", lambda: theory.critical("tanh", 0.05)),
        ("critical_point(tanh) + basin", lambda: theory.critical_point("tanh", 0.05)),
        ("critical(gelu, 0.3)", lambda: theory.critical("gelu", 0.3)),
        ("critical(nn.SiLU(), 1.0)", lambda: theory.critical(nn.SiLU(), 1.0)),
    ]
    for name, fn in calls:
        fn()
        ts, cs = [], []
        for _ in range(20):
            t, c = time.perf_counter(), time.process_time()
            fn()
            ts.append(time.perf_counter() - t)
            cs.append(time.process_time() - c)
        ms, cpu = statistics.median(ts) * 1e3, statistics.median(cs) * 1e3
        print(f"  {name:<30} wall {ms:7.2f} ms   cpu {cpu:7.2f} ms")
        out["theory_ms"][name] = {"wall": ms, "cpu": cpu}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    ap.add_argument("--skip-mlp", action="store_true", help="only parts 2 and 3")
    ap.add_argument("--theory-only", action="store_true", help="only part 3")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(BATCH, WIDTH)
    out: dict = {"threads": args.threads, "mlp": [], "cases": [], "theory_ms": {}}
    if not (args.skip_mlp or args.theory_only):
        part1(x, args.repeats, out)
    if not args.theory_only:
        part2(x, out)
    part3(out)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
