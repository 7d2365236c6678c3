"""What reading a model from one forward pass costs (initlab.plan.trace), against that forward pass itself.

Run:  .venv/bin/python benchmarks/bench_trace.py [--repeats 5] [--threads 2] [--json out.json]

Models: the GPT-2-small-sized model of ``bench_plan.py`` (torch modules, 124M parameters) and, when
transformers is installed, ``GPT2LMHeadModel`` at GPT-2 small's size (HF ``Conv1D`` layers, 124M), each on
a 1×8-token batch (what a plan needs) and a 4×128-token batch. Side by side in one process, alternating
(anchor, record, trace, anchor, ...) so machine noise hits all alike; medians of ``--repeats``:

- anchor: ``model(x)`` under ``torch.no_grad()`` in eval mode;
- ``record_dataflow``: the same forward under the recorder (each op's operands, parameter uses, add
  statistics);
- ``trace_model``: that plus the residual streams and every parameter's reading (what ``plan`` runs);
- ``plan(model, "torch", example_input=x)`` against ``plan(model, "torch")``: what the trace adds to a plan.

The recorder does Python work per op (a few µs to tens of µs), so its ratio is large for a tiny batch whose
forward is itself mostly Python overhead, and shrinks as the batch grows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from bench_plan import GPT2, VOCAB

import initlab
from initlab.plan.trace import trace_model
from initlab.theory.dataflow import record_dataflow


def _timed(fn, runs: dict, key: str) -> None:
    t = time.perf_counter()
    fn()
    runs.setdefault(key, []).append(time.perf_counter() - t)


def bench(name: str, model: torch.nn.Module, x, repeats: int) -> dict:
    model.eval()
    call = (lambda: model(**x)) if isinstance(x, dict) else (lambda: model(x))

    def anchor():
        with torch.no_grad():
            call()

    runs: dict[str, list[float]] = {}
    anchor()  # warm-up: lazy initialisation, allocator
    record_dataflow(model, x)
    for _ in range(repeats):
        _timed(anchor, runs, "forward")
        _timed(lambda: record_dataflow(model, x), runs, "record_dataflow")
        _timed(lambda: trace_model(model, x), runs, "trace_model")
        _timed(lambda: initlab.plan(model, "torch"), runs, "plan torch")
        _timed(lambda: initlab.plan(model, "torch", example_input=x), runs, "plan torch + x")
    med = {k: statistics.median(v) for k, v in runs.items()}
    out = {"model": name, "seconds": med,
           "record / forward": med["record_dataflow"] / med["forward"],
           "trace / forward": med["trace_model"] / med["forward"],
           "plan + x − plan, in forwards": (med["plan torch + x"] - med["plan torch"]) / med["forward"],
           "nodes": len(record_dataflow(model, x).nodes)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = [("torch-modules GPT-2 small", GPT2(), lambda ids: ids)]
    try:
        from transformers import GPT2Config, GPT2LMHeadModel

        models.append(("transformers GPT2LMHeadModel (small)", GPT2LMHeadModel(GPT2Config()),
                       lambda ids: {"input_ids": ids}))
    except ImportError:
        print("transformers is not installed: the HF model is skipped")
    results = []
    for name, model, wrap in models:
        for shape in ((1, 8), (4, 128)):
            ids = torch.randint(0, VOCAB, shape)
            r = bench(f"{name}, batch {shape[0]}×{shape[1]}", model, wrap(ids), args.repeats)
            results.append(r)
            s = r["seconds"]
            print(f"{r['model']:<58} forward {s['forward'] * 1e3:7.1f} ms | record ×{r['record / forward']:5.2f} | "
                  f"trace ×{r['trace / forward']:5.2f} | plan+x − plan = {r['plan + x − plan, in forwards']:5.2f} "
                  f"forwards | {r['nodes']} ops")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
