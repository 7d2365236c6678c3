"""The tutorial's single node, with real draws: why N(0, 1) weights saturate a sigmoid and Xavier does not.

One node with ``n_inputs`` inputs all equal to 1 and no bias computes z = Σᵢ wᵢ. With independent
weights of variance v, Var[z] = n·v, so

- N(0, 1) weights: std(z) = √n = √250 ≈ 15.81 — σ(z) is almost always < 0.01 or > 0.99 and σ′(z) ≈ 0;
- Xavier/LeCun, v = 1/n (LeCun et al. 1998; the tutorial's "Xavier"): std(z) = 1;
- He, v = 2/n (He et al. 2015): std(z) = √2;
- the original Glorot & Bengio (2010) "normalized" variance v = 2/(n_in + n_out): std(z) = √(2n/(n+n_out)).

The weights are drawn with initlab's own initializers (untruncated normals, fans (n_in, n_out)), so the
table is also a check of the catalogue. Reference (experiments.md §2.2, 100k draws): N(0, 1) gives
std(z) 15.76 against 15.81 and 77 % saturated.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from rich.table import Table

from ..initializers import Initializer, RandomNormal, VarianceScaling

__all__ = ["TutorialRow", "tutorial_node", "tutorial_table"]

_CHUNK = 8192


class TutorialRow(NamedTuple):
    """One weight choice for the tutorial node."""

    name: str
    #: The weight variance, e.g. "1/n = 1/250".
    formula: str
    #: Measured std of z = Σ wᵢ over the draws.
    std_z: float
    #: √(n · Var[w]).
    theory_std: float
    #: Fraction of draws with σ(z) < 0.01 or σ(z) > 0.99.
    saturated: float
    #: Mean of σ′(z) = σ(z)(1 − σ(z)) over the draws (at most 0.25, at z = 0).
    mean_dsigmoid: float


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}.")
    return value


def _choices(n: int, n_out: int) -> list[tuple[str, str, float, Initializer]]:
    return [
        ("N(0, 1)", "1", 1.0, RandomNormal(0.0, 1.0)),
        ("Xavier", f"1/n = 1/{n}", 1.0 / n, VarianceScaling(1.0, "fan_in", "untruncated_normal")),
        ("He", f"2/n = 2/{n}", 2.0 / n, VarianceScaling(2.0, "fan_in", "untruncated_normal")),
        (
            "Glorot (original)",
            f"2/(n_in+n_out) = 2/{n + n_out}",
            2.0 / (n + n_out),
            VarianceScaling(1.0, "fan_avg", "untruncated_normal"),
        ),
    ]


def tutorial_node(
    n_inputs: int = 250, draws: int = 100_000, seed: int = 0, *, n_outputs: int = 1
) -> list[TutorialRow]:
    """Run the tutorial's node (``n_inputs`` inputs = 1, no bias) for ``draws`` weight draws per choice.

    Returns one :class:`TutorialRow` per weight choice: N(0, 1), Xavier var 1/n, He var 2/n and the
    original Glorot 2/(n_in + n_out) with n_out = ``n_outputs``. An int ``seed`` makes every number
    reproducible (each choice draws from ``torch.Generator().manual_seed(seed + i)``).

    The measured std(z) has relative standard error ≈ 1/√(2·draws) (0.22 % at 100k draws).

    >>> rows = tutorial_node(draws=20_000)
    >>> round(rows[0].theory_std, 2), rows[0].saturated > 0.7, rows[1].saturated < 0.01
    (15.81, True, True)
    """
    n = _check_int("n_inputs", n_inputs, 1)
    draws = _check_int("draws", draws, 2)
    n_out = _check_int("n_outputs", n_outputs, 1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an int, got {seed!r}.")
    rows = []
    for i, (name, formula, var, init) in enumerate(_choices(n, n_out)):
        gen = torch.Generator().manual_seed(seed + i)
        z = torch.empty(draws, dtype=torch.float64)
        for start in range(0, draws, _CHUNK):
            m = min(_CHUNK, draws - start)
            # One row per draw: the node's n weights (torch layout (out, in) with the node's fans).
            w = init.sample((m, n), seed=gen, dtype=torch.float64, fans=(n, n_out))
            z[start : start + m] = w.sum(dim=1)
        s = torch.sigmoid(z)
        rows.append(
            TutorialRow(
                name=name,
                formula=formula,
                std_z=float(z.std()),
                theory_std=math.sqrt(n * var),
                saturated=float(((s < 0.01) | (s > 0.99)).double().mean()),
                mean_dsigmoid=float((s * (1 - s)).mean()),
            )
        )
    return rows


def tutorial_table(rows: list[TutorialRow], *, title: str | None = None) -> Table:
    """The rows of :func:`tutorial_node` as a rich table."""
    table = Table(
        title=title or "One sigmoid node, inputs all 1, no bias: z = Σ wᵢ",
        caption="saturated: σ(z) < 0.01 or > 0.99; σ′(z) is at most 0.25 (at z = 0)",
    )
    table.add_column("weights", no_wrap=True)
    table.add_column("Var[w]", no_wrap=True)
    table.add_column("std(z) measured", justify="right")
    table.add_column("theory √(n·Var[w])", justify="right")
    table.add_column("saturated", justify="right")
    table.add_column("mean σ′(z)", justify="right")
    for r in rows:
        table.add_row(
            r.name,
            r.formula,
            f"{r.std_z:.3f}",
            f"{r.theory_std:.3f}",
            f"{100 * r.saturated:.1f} %",
            f"{r.mean_dsigmoid:.3f}",
        )
    return table
