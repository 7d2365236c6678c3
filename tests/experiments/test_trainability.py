"""The trainability benchmark's verdict logic (benchmarks/trainability.py): is ``auto`` at least as good
as the best hand-picked init per cell, and the 10-seed re-check of the cells where it trails."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from initlab.experiments import Grid
from tests._benchmarks import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("trainability")


def _row(init, final, sd, seeds=3, act="relu", depth=10, opt="sgd"):
    return {"activation": act, "depth": depth, "optimizer": opt, "init": init, "final_acc": final,
            "final_sd": sd, "seeds": seeds}


def test_auto_check_uses_the_standard_error_of_the_difference(bench):
    rows = [_row("he_normal", 50.0, 1.0), _row("orthogonal", 52.0, 2.0), _row("auto", 51.0, 1.0),
            _row("he_normal", 40.0, 0.3, depth=30), _row("auto", 38.5, 0.3, depth=30)]
    by = {c["depth"]: c for c in bench.auto_check(rows)}
    c = by[10]
    assert c["best_hand_picked"] == "orthogonal" and c["gap"] == pytest.approx(-1.0)
    assert c["noise"] == pytest.approx(math.sqrt((1.0 + 4.0) / 3))  # 1.29: the gap of 1.0 is within it
    assert c["auto_at_least_as_good"]
    # −1.5 against a standard error of 0.24 (floored at 1 point): auto trails
    assert not by[30]["auto_at_least_as_good"] and by[30]["noise"] == pytest.approx(math.sqrt(0.18 / 3))


def test_confirm_reruns_only_trailing_cells_with_more_seeds_resuming_the_first_three(bench, tmp_path, monkeypatch):
    base = Grid(inits=bench.ALL_INITS, depths=(10, 30), activations=("relu",), seeds=(0, 1, 2),
                optimizers=("sgd", "adam"), epochs=20, target=45.0)
    main = tmp_path / "relu"
    main.mkdir()
    kept = [c for c in base.cells("mnist1d") if c.depth == 30 and c.optimizer == "adam" and c.init in ("lsuv", "auto")]
    other = next(c for c in base.cells("mnist1d") if c.depth == 10)
    main.joinpath("runs.jsonl").write_text("".join(json.dumps({"key": c.key}) + "\n" for c in [*kept, other]))
    calls = []

    def fake_compare(grid, data, where, progress):
        calls.append((grid, Path(where)))
        resumed = [json.loads(ln)["key"] for ln in Path(where, "runs.jsonl").read_text().splitlines()]
        calls.append(resumed)
        return SimpleNamespace(rows=[_row("lsuv", 49.5, 2.0, seeds=10, depth=30, opt="adam"),
                                     _row("auto", 50.7, 2.2, seeds=10, depth=30, opt="adam")])

    monkeypatch.setattr(bench, "compare", fake_compare)
    checks = [{"activation": "relu", "depth": 30, "optimizer": "adam", "best_hand_picked": "lsuv",
               "auto_at_least_as_good": False},
              {"activation": "relu", "depth": 10, "optimizer": "sgd", "best_hand_picked": "orthogonal",
               "auto_at_least_as_good": True}]
    out = bench.confirm(checks, {"relu": base}, 10, tmp_path, progress=False)
    grid, where = calls[0]
    assert len(calls) == 2  # one cell re-run: the one where auto trailed
    assert grid.inits == ("lsuv", "auto") and grid.depths == (30,) and grid.optimizers == ("adam",)
    assert grid.seeds == tuple(range(10)) and grid.epochs == 20 and grid.target == 45.0
    assert where == tmp_path / "confirm" / "relu30-adam"
    assert sorted(calls[1]) == sorted(c.key for c in kept)  # seeds 0–2 of exactly these two inits
    assert len(out) == 1 and out[0]["auto_at_least_as_good"] and out[0]["gap"] == pytest.approx(1.2)
