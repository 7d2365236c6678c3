"""The trainability benchmark (issue 6, item 5; experiments.md §4.4 suite S3).

Plain MLPs on MNIST-1D, width 128, 20 epochs, batch 100: ReLU at depth 10, 30, 50 (target 45 %) and
tanh at depth 10, 30 (target 50 %); inits N(0,1), PyTorch default, glorot_uniform, he_normal,
orthogonal, lsuv, critical and ``auto``; SGD with momentum 0.9 (lr 0.01) and Adam (lr 1e-3); seeds 0–2.
Output: final test accuracy (mean ± sd), epochs to target (median, k/n seeds) per cell, and whether
``auto`` is at least as good as the best hand-picked init in each cell (within the seeds' noise:
one standard error of the difference, or 1 point when only one seed ran). Three seeds cannot tell a gap of
a point or two from draw-to-draw noise, so each cell where ``auto`` trails is re-run with ``--confirm N``
seeds (default 10; the three made are resumed) for ``auto`` and that cell's best init, and judged again
on those — a sequential check whose second stage is printed under the table.

Profiles: ``--quick`` (ReLU depth 30, SGD, default / glorot / he / orthogonal / auto, seed 0; experiments.md
§4.6, ≈30 s) and ``--full`` (everything above, 240 runs, ≈40 min on one core of this machine). Runs are resumable:
records go to ``OUT/<activation>/runs.jsonl`` and a rerun skips finished cells.

Published anchors (He et al. 2015, Fig. 3; experiments.md §2.5–2.6): ReLU 30 with SGD — He/orthogonal
≈ 49–50 % (3/3 reach 45 %), Glorot and default ≈ 10 % (0/3), N(0,1) diverges; with Adam Glorot trains
(51 %). Tanh 10 with Adam — Glorot best (68 %), He first to 50 % (4.7 epochs) but 61 %.

    python benchmarks/trainability.py --quick
    python benchmarks/trainability.py --full --out bench-out/trainability
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

from initlab.experiments import Grid, compare

ALL_INITS = ("normal1", "default", "glorot_uniform", "he_normal", "orthogonal", "lsuv", "critical", "auto")
HAND_PICKED = tuple(i for i in ALL_INITS if i != "auto")
#: Reference numbers, experiments.md §2.5 (ReLU 30) and §2.6 (tanh 10): best test %, (reach k/3).
REFERENCE = {
    ("relu", 30, "sgd"): {"normal1": "div ×3", "default": "10.2 (0/3)", "glorot_uniform": "10.3 (0/3)",
                          "he_normal": "49.1 (3/3)", "orthogonal": "50.4 (3/3)"},
    ("relu", 30, "adam"): {"normal1": "10.1 (0/3)", "default": "10.1 (0/3)", "glorot_uniform": "51.1 (3/3)",
                           "he_normal": "49.7 (3/3)", "orthogonal": "52.8 (3/3)"},
    ("tanh", 10, "adam"): {"normal1": "13.0 (0/3)", "default": "49.1 (0/3)", "glorot_uniform": "68.1 (3/3)",
                           "he_normal": "60.8 (3/3)", "orthogonal": "55.9 (3/3)"},
    ("tanh", 10, "sgd"): {"normal1": "16.3 (0/3)", "default": "44.4 (0/3)", "glorot_uniform": "64.6 (3/3)",
                          "he_normal": "59.9 (3/3)", "orthogonal": "54.3 (3/3)"},
}


def profiles(name: str) -> list[tuple[str, Grid]]:
    if name == "quick":
        return [("relu", Grid(inits=("default", "glorot_uniform", "he_normal", "orthogonal", "auto"), depths=(30,),
                              activations=("relu",), seeds=(0,), optimizers=("sgd",), epochs=20, target=45.0))]
    return [
        ("relu", Grid(inits=ALL_INITS, depths=(10, 30, 50), activations=("relu",), seeds=(0, 1, 2),
                      optimizers=("sgd", "adam"), epochs=20, target=45.0)),
        ("tanh", Grid(inits=ALL_INITS, depths=(10, 30), activations=("tanh",), seeds=(0, 1, 2),
                      optimizers=("sgd", "adam"), epochs=20, target=50.0)),
    ]


def auto_check(rows: list[dict]) -> list[dict]:
    """Per cell: the best hand-picked init by final accuracy, auto's gap to it, and the verdict."""
    cells: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        cells.setdefault((r["activation"], r["depth"], r["optimizer"]), {})[r["init"]] = r
    out = []
    for (act, depth, opt), by_init in cells.items():
        auto = by_init.get("auto")
        hand = [r for i, r in by_init.items() if i in HAND_PICKED]
        if auto is None or not hand:
            continue
        best = max(hand, key=lambda r: r["final_acc"])
        gap = auto["final_acc"] - best["final_acc"]
        n = auto["seeds"]
        noise = math.sqrt((auto["final_sd"] ** 2 + best["final_sd"] ** 2) / n) if n > 1 else 1.0
        out.append({"activation": act, "depth": depth, "optimizer": opt, "best_hand_picked": best["init"],
                    "best_final": best["final_acc"], "auto_final": auto["final_acc"], "gap": gap,
                    "noise": noise, "auto_at_least_as_good": gap >= -max(noise, 1.0)})
    return out


def confirm(checks: list[dict], grids: dict[str, Grid], seeds: int, out: Path, progress: bool) -> list[dict]:
    """Cells where 3 seeds put ``auto`` behind the best hand-picked init, re-run with ``seeds`` seeds for
    both (the first three are the runs already made, resumed): a sequential check, so that a verdict
    rests on enough seeds to tell a real gap from draw-to-draw noise. Returns the new checks."""
    out_checks = []
    for c in checks:
        if c["auto_at_least_as_good"]:
            continue
        base = grids[c["activation"]]
        grid = dataclasses.replace(base, inits=(c["best_hand_picked"], "auto"), depths=(c["depth"],),
                                   optimizers=(c["optimizer"],), seeds=tuple(range(seeds)))
        where = out / "confirm" / f"{c['activation']}{c['depth']}-{c['optimizer']}"
        where.mkdir(parents=True, exist_ok=True)
        runs = where / "runs.jsonl"
        if not runs.exists():  # the main run's records of these cells (seeds 0–2) are resumed, not re-run
            keys = {cell.key for cell in grid.cells("mnist1d")}
            main = out / c["activation"] / "runs.jsonl"
            lines = main.read_text().splitlines() if main.exists() else []
            runs.write_text("".join(ln + "\n" for ln in lines if json.loads(ln)["key"] in keys))
        res = compare(grid, "mnist1d", where, progress=progress)
        out_checks += auto_check(res.rows)
    return out_checks


def markdown(rows: list[dict], checks: list[dict]) -> str:
    lines = ["| act | depth | opt | init | final % | best % | epochs to target (k/n) | diverged | reference |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ett = "–" if r["epochs_to_target"] is None else f"{r['epochs_to_target']:g}"
        ref = REFERENCE.get((r["activation"], r["depth"], r["optimizer"]), {}).get(r["init"], "")
        lines.append(
            f"| {r['activation']} | {r['depth']} | {r['optimizer']} | {r['init']} | "
            f"{r['final_acc']:.1f} ± {r['final_sd']:.1f} | {r['best_acc']:.1f} | {ett} ({r['reached']}/{r['seeds']}) | "
            f"{r['diverged']}/{r['seeds']} | {ref} |"
        )
    lines += ["", "| act | depth | opt | best hand-picked | its final % | auto final % | auto − best | auto ≥ best? |",
              "|---|---|---|---|---|---|---|---|"]
    for c in checks:
        lines.append(
            f"| {c['activation']} | {c['depth']} | {c['optimizer']} | {c['best_hand_picked']} | {c['best_final']:.1f} | "
            f"{c['auto_final']:.1f} | {c['gap']:+.1f} (noise {c['noise']:.1f}) | "
            f"{'yes' if c['auto_at_least_as_good'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", dest="profile", action="store_const", const="quick", help="≈30 s (default)")
    group.add_argument("--full", dest="profile", action="store_const", const="full", help="≈20–25 min")
    parser.add_argument("--out", type=Path, default=Path("bench-out/trainability"))
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--confirm", type=int, default=10, metavar="N",
                        help="re-run cells where auto trails with N seeds for auto and the best init (0: off)")
    args = parser.parse_args(argv)
    profile = args.profile or "quick"
    seeds_run = max(len(g.seeds) for _, g in profiles(profile))
    if args.confirm != 0 and args.confirm <= seeds_run:
        parser.error(f"--confirm: {args.confirm} seeds would add nothing to the {seeds_run} already run; "
                     f"give more than {seeds_run} (the default is 10), or 0 to skip the re-run.")
    torch.set_num_threads(1)  # small models: one thread is as fast, and robust when other processes compete
    start = time.perf_counter()
    rows: list[dict] = []
    grids = dict(profiles(profile))
    for act, grid in grids.items():
        res = compare(grid, "mnist1d", args.out / profile / act, progress=not args.no_progress)
        print(f"{act}: ran {res.ran}, resumed {res.skipped}", file=sys.stderr)
        rows += res.rows
    checks = auto_check(rows)
    confirmed = confirm(checks, grids, args.confirm, args.out / profile, not args.no_progress) if args.confirm else []
    table = markdown(rows, checks)
    if confirmed:
        n = args.confirm
        table += f"\n\nCells where auto trailed, re-run with {n} seeds (auto and the best hand-picked init):\n\n"
        table += "\n".join(markdown([], confirmed).splitlines()[3:])
    wall = time.perf_counter() - start
    print(table)
    print(f"\nprofile {profile}; torch {torch.__version__}, {torch.get_num_threads()} threads, denormals flushed; "
          f"python {platform.python_version()}; {wall:.0f} s")
    (args.out / profile).mkdir(parents=True, exist_ok=True)
    (args.out / profile / "trainability.md").write_text(table + "\n")
    (args.out / profile / "trainability.json").write_text(json.dumps(
        {"profile": profile, "rows": rows, "auto_check": checks, "confirmed": confirmed, "wall_s": wall,
         "torch": torch.__version__},
        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
