"""Sharded initialization: the counter-based generator's speed, a 1.3B GPT on 1, 2 and 4 CPU processes, and a
70B model planned on meta.

Run:  .venv/bin/python benchmarks/bench_sharded.py [--quick] [--repeats 3] [--worlds 1,2,4] [--json out.json]
      (--quick: a 58M-parameter GPT on 1 and 2 processes, 1e6-element fills, one repeat: under a minute;
      default: the 1.3B matrix on 1, 2 and 4 processes, ~5 min and ~7 GB of free memory, plus the 70B plan)

Part 1 — generator speed, one process, plain tensors, 1 torch thread, side by side in one process with
runs alternating (median of ``--repeats``): each law's fill of a float32 tensor (1e6 and 1e7 elements)
by ``torch.Generator`` (``uniform_``/``normal_``/``torch.nn.init.trunc_normal_``, and the catalogue's own
truncated normal) against the counter-based fill (numba kernels; and the torch-ops implementation, which
is what runs on CUDA), as ns per element and the ratio counter ÷ torch. Then a whole GPT (110M, plain
tensors): ``plan.apply(seed)`` (``rng="torch"``, the default) against ``plan.apply(seed, rng="counter")``.

Part 2 — per rank, in fresh processes (gloo, FileStore rendezvous, loopback): build the GPT on meta,
``fully_shard`` every block and the root over 1, 2 or 4 ranks, ``to_empty``, then initialize with
(a) ``plan.apply(seed=0)`` of a plan made on meta before sharding with torchtitan's laws (embeddings
N(0, 1); wq/wk/wv/w1 trunc_normal std 0.02; wo/w2 std 0.02/√(2(layer+1)); norms 1/0; output
trunc_normal std dim^-½ cut at ±3σ) — the counter path, every rank its shard, values independent of the
sharding — or (b) torchtitan-style ``init_weights``: the same laws through ``torch.nn.init`` on the
DTensors. (b) is a time and memory baseline only: on CPU torch's DTensor random ops use each rank's
global generator (every shard gets the same values), and on CUDA their values depend on the sharding.
Reported per rank: init seconds, peak RSS (VmHWM, reset right before ``to_empty``), this rank's shard
bytes (FSDP2's padded local storage) and (peak − RSS before ``to_empty``) ÷ shard bytes (goal ≤ 1.1).
Threads per rank: max(1, 2 // world) (a 2-core machine).

Part 3 — Llama-2-70B's shape (68.98B parameters) built on meta and planned: ``plan("torch")`` and
``plan("auto")`` with a meta batch (the forward runs on meta tensors), wall time and RSS; and the
index maths one rank does before filling, for rank 63 of a 64-rank FSDP2 mesh and for (7, 7) of an 8×8
FSDP2 × TP mesh (``_StridedShard`` included).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch

import initlab
from initlab.experiments.gpt import CONFIGS, GPT, GPTConfig, n_params

SMALL = GPTConfig(vocab=32000, dim=512, n_layers=8, n_heads=8)  # 57M: --quick
PLAIN = GPTConfig(vocab=32000, dim=768, n_layers=12, n_heads=12)  # 110M: part 1's whole model


# -- memory helpers (Linux) -------------------------------------------------------------------------------

def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return math.nan


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # Linux ≥ 4.0: VmHWM := VmRSS
        f.write("5")


# -- part 1 ------------------------------------------------------------------------------------------------

def _median_time(fn, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def bench_generator(repeats: int, sizes: tuple[int, ...]) -> list[dict]:
    torch.set_num_threads(1)
    return [row for n in sizes for row in _generator_at(n, repeats)]


def _generator_at(n: int, repeats: int) -> list[dict]:
    from initlab.initializers import counter
    from initlab.initializers.counter_fill import NormalLaw, TruncNormalLaw, UniformLaw, fill_shard
    from initlab.initializers.sampling import truncated_normal_
    from initlab.initializers.shard_index import ShardIndex

    seed = counter.entry_seed(0, "bench.weight")
    x = torch.empty(n)
    g = torch.Generator().manual_seed(0)
    idx = ShardIndex.full((n,))
    trunc = TruncNormalLaw(0.0, 0.02, -0.04, 0.04)
    laws = [
        ("uniform", lambda: x.uniform_(-0.1, 0.1, generator=g), UniformLaw(-0.1, 0.1)),
        ("normal", lambda: x.normal_(0.0, 0.02, generator=g), NormalLaw(0.0, 0.02)),
        ("trunc ±2σ (nn.init)", lambda: torch.nn.init.trunc_normal_(x, 0.0, 0.02, -0.04, 0.04, generator=g), trunc),
        ("trunc ±2σ (initlab)", lambda: truncated_normal_(x, -2.0, 2.0, g, 0.02), trunc),
    ]
    rows = []
    for name, ref, law in laws:
        def cb(law=law) -> None:
            fill_shard(x, idx, law, seed, workers=1)

        cb()  # compiled kernels loaded, pages touched
        t_ref, t_cb, t_ops = [], [], []
        for _ in range(repeats):  # alternate, so load changes hit every method alike
            t_ref.append(_median_time(ref, 1))
            t_cb.append(_median_time(cb, 1))
            if n <= 10**6:
                with counter.torch_ops():
                    t_ops.append(_median_time(cb, 1))
        tr, tc = statistics.median(t_ref), statistics.median(t_cb)
        row = {"n": n, "law": name, "torch_ns": tr * 1e9 / n, "counter_ns": tc * 1e9 / n, "ratio": tc / tr}
        if t_ops:
            to = statistics.median(t_ops)
            row.update(torch_ops_ns=to * 1e9 / n, torch_ops_ratio=to / tr)
        rows.append(row)
    return rows


def bench_plain_model(repeats: int, cfg: GPTConfig) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = GPT(cfg)
    plan = initlab.plan(model, "torch")
    plan.apply(seed=0)
    plan.apply(seed=0, rng="counter")  # warm both
    t = {"torch": [], "counter": []}
    for _ in range(repeats):
        t["torch"].append(_median_time(lambda: plan.apply(seed=0), 1))
        t["counter"].append(_median_time(lambda: plan.apply(seed=0, rng="counter"), 1))
    med = {k: statistics.median(v) for k, v in t.items()}
    return {"parameters": sum(p.numel() for p in model.parameters()), "torch_s": med["torch"],
            "counter_s": med["counter"], "ratio": med["counter"] / med["torch"]}


# -- part 2 ------------------------------------------------------------------------------------------------

def titan_rules(cfg: GPTConfig) -> dict:
    """torchtitan's llama init_weights laws as initlab rules (by path)."""
    rules: dict = {"tok_embeddings.weight": initlab.RandomNormal(0.0, 1.0), "*norm.weight": "ones"}
    if cfg.bias:
        rules.update({"*.bias": "zeros"})
    for i in range(cfg.n_layers):
        depth = 0.02 / math.sqrt(2 * (i + 1))
        for name in ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1"):
            rules[f"layers.{i}.{name}.weight"] = initlab.TruncNormal(0.0, 0.02)
        for name in ("attention.wo", "feed_forward.w2", "feed_forward.w3"):
            if name != "feed_forward.w3" or cfg.mlp == "swiglu":
                rules[f"layers.{i}.{name}.weight"] = initlab.TruncNormal(0.0, depth)
    s = cfg.dim**-0.5
    rules["output.weight"] = initlab.TruncNormal(0.0, s, -3 * s, 3 * s)
    return rules


def titan_init_weights(model: GPT) -> None:
    """torchtitan-style ``init_weights`` (the idea, re-written): torch.nn.init on the DTensors."""
    nn = torch.nn
    with torch.no_grad():
        nn.init.normal_(model.tok_embeddings.weight)
        for i, blk in enumerate(model.layers):
            depth = 0.02 / math.sqrt(2 * (i + 1))
            for lin in (blk.attention.wq, blk.attention.wk, blk.attention.wv, blk.feed_forward.w1):
                nn.init.trunc_normal_(lin.weight, mean=0.0, std=0.02)
            nn.init.trunc_normal_(blk.attention.wo.weight, mean=0.0, std=depth)
            nn.init.trunc_normal_(blk.feed_forward.w2.weight, mean=0.0, std=depth)
            if blk.feed_forward.swiglu:
                nn.init.trunc_normal_(blk.feed_forward.w3.weight, mean=0.0, std=depth)
            blk.attention_norm.reset_parameters()
            blk.ffn_norm.reset_parameters()
        model.norm.reset_parameters()
        s = model.cfg.dim**-0.5
        nn.init.trunc_normal_(model.output.weight, mean=0.0, std=s, a=-3 * s, b=3 * s)


def _rank_run(rank: int, world: int, tmp: str, cfg: GPTConfig, method: str, threads: int) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor import empty as dt_empty

    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        # warm-ups outside the measured region: compiled counter kernels, DTensor op dispatch
        tiny = dt_empty(4 * world, 8, device_mesh=mesh, placements=[Shard(0)])
        with torch.no_grad():
            torch.nn.init.trunc_normal_(tiny, std=0.02)
            torch.nn.init.normal_(tiny)
        from initlab.initializers.counter_fill import fill_counter

        for init in (initlab.TruncNormal(0.0, 0.02), initlab.TruncNormal(0.0, 1.0, -3.0, 3.0), initlab.Ones()):
            fill_counter(init, tiny.to_local(), seed=1)
        with torch.device("meta"):
            model = GPT(cfg)
        plan = initlab.plan(model, "torch", rules=titan_rules(cfg))  # planned on meta, before sharding
        t0 = time.perf_counter()
        for blk in model.layers:
            fully_shard(blk, mesh=mesh)
        fully_shard(model, mesh=mesh)
        t1 = time.perf_counter()
        rss0 = _status("VmRSS")
        _reset_peak()
        model.to_empty(device="cpu")
        t2 = time.perf_counter()
        if method == "counter":
            plan.apply(seed=0, workers=threads)
        else:
            titan_init_weights(model)
        dist.barrier()
        t3 = time.perf_counter()
        peak = _status("VmHWM")
        shard = sum(p.to_local().untyped_storage().nbytes() for p in model.parameters()) / 2**20
        out = {"rank": rank, "shard_s": t1 - t0, "to_empty_s": t2 - t1, "init_s": t3 - t2, "rss_before_mb": rss0,
               "peak_mb": peak, "shard_mb": shard, "ratio": (peak - rss0) / shard}
        with open(os.path.join(tmp, f"{rank}.json"), "w") as f:
            json.dump(out, f)
    finally:
        dist.destroy_process_group()


def bench_ranks(cfg: GPTConfig, world: int, method: str) -> list[dict]:
    import torch.multiprocessing as mp

    threads = max(1, 2 // world)
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_rank_run, args=(world, tmp, cfg, method, threads), nprocs=world, join=True)
        return [json.load(open(os.path.join(tmp, f"{r}.json"))) for r in range(world)]


# -- part 3 ------------------------------------------------------------------------------------------------

def bench_plan_70b() -> dict:
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor.placement_types import _StridedShard

    from initlab.distributed import shard_index_from

    cfg = CONFIGS["70b"]
    out: dict = {"rss_start_mb": _status("VmRSS")}
    t = time.perf_counter()
    with torch.device("meta"):
        m = GPT(cfg)
    out["build_s"] = time.perf_counter() - t
    out["parameters"] = sum(p.numel() for p in m.parameters())
    out["tensors"] = len(list(m.parameters()))
    for preset, x in (("torch", None), ("auto", torch.zeros(1, 16, dtype=torch.long, device="meta"))):
        t = time.perf_counter()
        p = initlab.plan(m, preset, example_input=x)
        out[f"plan_{preset}_s"] = time.perf_counter() - t
        out[f"plan_{preset}_entries"] = len(p.entries)
        out[f"rss_after_{preset}_mb"] = _status("VmRSS")
    params = dict(m.named_parameters())

    def two_d(name: str) -> list:
        """FSDP2 over tensor parallelism: column-parallel weights strided, row-parallel ones (Shard, Shard),
        the rest on the data-parallel dimension alone (Shard(0) twice models its two copies' layout)."""
        if any(f".{k}." in name for k in ("wq", "wk", "wv", "w1", "w3")):
            return [_StridedShard(0, split_factor=8), Shard(0)]
        if ".wo." in name or ".w2." in name:
            return [Shard(0), Shard(1)]
        return [Shard(0), Shard(0)]

    for label, mesh, coord, pl in (("fsdp64", (64,), (63,), lambda n: [Shard(0)]), ("fsdp8xtp8", (8, 8), (7, 7), two_d)):
        t = time.perf_counter()
        local = sum(shard_index_from(tuple(q.shape), mesh, coord, pl(n)).numel for n, q in params.items())
        out[f"index_{label}_s"] = time.perf_counter() - t
        out[f"index_{label}_local_gib"] = local * 4 / 2**30
    out["peak_mb"] = _status("VmHWM")
    return out


# -- main ---------------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="a 58M GPT on 1 and 2 processes, 1e6-element fills, one repeat: under a minute")
    ap.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    ap.add_argument("--worlds", default=None, help="process counts, default 1,2,4 (1,2 with --quick)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.worlds = args.worlds or ("1,2" if args.quick else "1,2,4")
    report: dict = {"quick": args.quick, "load_before": os.getloadavg()}

    print("== part 1: generator speed (1 thread, float32, ns/element; ratio counter ÷ torch, > 1 = slower)")
    rows = bench_generator(args.repeats, (10**6,) if args.quick else (10**6, 10**7))
    report["generator"] = rows
    print(f"{'n':>6} {'law':<22} {'torch':>7} {'counter':>8} {'ratio':>6} {'torch-ops':>10} {'ratio':>6}")
    for r in rows:
        ops = f"{r['torch_ops_ns']:>10.1f} {r['torch_ops_ratio']:>6.2f}" if "torch_ops_ns" in r else ""
        print(f"{r['n']:>6.0e} {r['law']:<22} {r['torch_ns']:>7.1f} {r['counter_ns']:>8.1f} {r['ratio']:>6.2f} {ops}")
    whole = bench_plain_model(args.repeats, SMALL if args.quick else PLAIN)
    report["plain_model"] = whole
    print(f"GPT {whole['parameters'] / 1e6:.0f}M plain tensors, plan('torch').apply: rng='torch' {whole['torch_s']:.2f} s, "
          f"rng='counter' {whole['counter_s']:.2f} s, ratio {whole['ratio']:.2f}")

    cfg = SMALL if args.quick else CONFIGS["1.3b"]
    print(f"\n== part 2: GPT {n_params(cfg) / 1e9:.3f}B, FSDP2 on gloo/CPU, init per rank (max over ranks)")
    print(f"{'world':>5} {'method':<8} {'init s':>7} {'peak MB':>8} {'shard MB':>9} {'peak/shard':>10} {'titan ratio':>11}")
    report["ranks"] = {}
    for world in (int(w) for w in args.worlds.split(",")):
        res = {}
        for method in ("counter", "titan"):
            ranks = bench_ranks(cfg, world, method)
            res[method] = ranks
            report["ranks"][f"{world}_{method}"] = ranks
        for method, ranks in res.items():
            init = max(r["init_s"] for r in ranks)
            rel = init / max(r["init_s"] for r in res["titan"])
            print(f"{world:>5} {method:<8} {init:>7.2f} {max(r['peak_mb'] for r in ranks):>8.0f} "
                  f"{max(r['shard_mb'] for r in ranks):>9.0f} {max(r['ratio'] for r in ranks):>10.3f} {rel:>11.2f}")

    print("\n== part 3: Llama-2-70B shape planned on meta")
    big = bench_plan_70b()
    report["plan_70b"] = big
    print(f"{big['parameters'] / 1e9:.2f}B parameters, {big['tensors']} tensors; build {big['build_s']:.2f} s; "
          f"plan('torch') {big['plan_torch_s']:.2f} s; plan('auto', meta batch) {big['plan_auto_s']:.2f} s; "
          f"RSS {big['rss_start_mb']:.0f} → {big['rss_after_auto_mb']:.0f} MB (peak {big['peak_mb']:.0f} MB); "
          f"one rank's index maths: 64-rank FSDP2 {big['index_fsdp64_s']:.3f} s, 8×8 FSDP2×TP {big['index_fsdp8xtp8_s']:.3f} s")
    report["load_after"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
