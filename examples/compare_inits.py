"""``initlab compare`` from Python: a small init × depth grid on scikit-learn's digits (≈30 s).

Run it twice: the second run resumes from ``compare-out/runs.jsonl`` and trains nothing.

    python examples/compare_inits.py
"""

from rich.console import Console

import initlab
from initlab.cli import results_table

grid = initlab.Grid(
    inits=("default", "glorot_uniform", "he_normal", "orthogonal"),
    depths=(2, 8, 16),
    activations=("relu",),
    widths=(64,),
    seeds=(0,),
    optimizers=("sgd",),
    epochs=5,
    target=90.0,
)
result = initlab.compare(grid, "digits", "compare-out")
Console(width=120).print(results_table(result.rows))
print(f"ran {result.ran}, resumed {result.skipped}; files: {', '.join(str(p) for p in result.files.values())}")
