"""Experiments: the plain MLP, initialization by name, the training loop, resumable compare."""

import json
import math

import pytest
import torch
from torch import nn

pytest.importorskip("sklearn", reason="scikit-learn is a test dependency: pip install -e '.[dev]'")

from initlab.experiments import (
    Grid,
    compare,
    flush_denormal,
    init_model,
    make_mlp,
    summarize,
    train,
)
from initlab.experiments import training as experiments
from initlab.inspect import flush_denormal_state

WIDTH = 256


def _weights(model):
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]


def test_plain_mlp_structure_and_errors():
    m = make_mlp(40, 10, 3, 16, "tanh")
    kinds = [type(x).__name__ for x in m]
    assert kinds == ["Linear", "Tanh", "Linear", "Tanh", "Linear", "Tanh", "Linear"]
    assert make_mlp(40, 10, 0, 16, "relu")[0].in_features == 40  # depth 0: logistic regression
    with pytest.raises(ValueError, match=r"activation: unknown value 'rleu'.*relu"):
        make_mlp(40, 10, 3, 16, "rleu")
    with pytest.raises(ValueError, match="depth"):
        make_mlp(40, 10, -1, 16, "relu")


# Each hidden weight has WIDTH·WIDTH = 65,536 entries. The sample variance of N entries of a law with
# kurtosis κ has relative sd √((κ − 1)/N): 0.0055 for a normal (κ = 3), 0.0035 for a uniform (κ = 1.8).
# A tolerance of 5 % is > 9 sd for either, so these checks do not flake yet catch a wrong formula
# (the nearest wrong candidates, e.g. 1/n against 2/n or 1/(3n) against 1/n, differ by ≥ 50 %).
@pytest.mark.parametrize(
    ("init", "variance"),
    [
        ("normal1", lambda n_in, n_out: 1.0),
        ("normal001", lambda n_in, n_out: 1e-4),
        ("standard", lambda n_in, n_out: 1 / (3 * n_in)),
        ("default", lambda n_in, n_out: 1 / (3 * n_in)),
        ("glorot_uniform", lambda n_in, n_out: 2 / (n_in + n_out)),
        ("he_normal", lambda n_in, n_out: 2 / n_in),
        ("lecun_normal", lambda n_in, n_out: 1 / n_in),
    ],
)
def test_named_inits_have_their_variance(init, variance):
    model = make_mlp(WIDTH, 10, 2, WIDTH, "relu")
    init_model(model, init, seed=3)
    w = model[2].weight
    expected = variance(WIDTH, WIDTH)
    assert abs(w.var().item() / expected - 1) < 0.05
    bias = model[2].bias
    if init == "default":
        assert bias.abs().max() > 0  # PyTorch's own reset_parameters draws biases too
    else:
        assert torch.count_nonzero(bias) == 0


def test_orthogonal_uses_torch_gain_and_seeds_fix_everything():
    model = make_mlp(64, 10, 2, 64, "tanh")
    init_model(model, "orthogonal", seed=1)
    w = model[2].weight
    assert torch.allclose(w @ w.T, (5 / 3) ** 2 * torch.eye(64), atol=1e-4)
    again = init_model(make_mlp(64, 10, 2, 64, "tanh"), "orthogonal", seed=1)
    other = init_model(make_mlp(64, 10, 2, 64, "tanh"), "orthogonal", seed=2)
    assert all(torch.equal(a, b) for a, b in zip(_weights(model), _weights(again), strict=True))
    assert not torch.equal(model[2].weight, other[2].weight)
    with pytest.raises(ValueError, match="unknown initializer 'he_nromal'"):
        init_model(model, "he_nromal")
    with pytest.raises(ValueError, match="needs a batch"):
        init_model(model, "lsuv")


@pytest.fixture(scope="module")
def digits():
    from initlab.experiments.data import load_dataset

    return load_dataset("digits")


def test_training_is_reproducible_and_learns(digits):
    def run():
        torch.manual_seed(0)
        m = init_model(make_mlp(64, 10, 1, 32, "relu"), "he_normal", seed=0)
        return train(m, digits, optimizer="adam", lr=1e-2, epochs=3, seed=0, target=80.0)

    a, b = run(), run()
    assert a.test_acc == b.test_acc and a.train_loss == b.train_loss
    assert len(a.test_acc) == 4 and a.final_acc > 80 and a.epochs_to_target is not None
    assert not a.diverged


def test_divergence_stops_the_run(digits):
    m = init_model(make_mlp(64, 10, 4, 32, "relu"), "normal1", seed=0)
    r = train(m, digits, optimizer="sgd", lr=1e3, epochs=5, seed=0)
    assert r.diverged and len(r.test_acc) < 6 and r.epochs_to_target is None


def test_flush_denormal_restores_the_setting():
    torch.set_flush_denormal(False)
    with flush_denormal() as supported:
        assert flush_denormal_state() == supported
    assert flush_denormal_state() is False


def test_summary_counts_reach_and_divergence():
    base = {"init": "he_normal", "depth": 3, "activation": "relu", "width": 8, "optimizer": "sgd", "lr": 0.01,
            "epochs": 3, "batch_size": 100, "data": "digits", "target": 50.0}
    recs = [
        {"config": {**base, "seed": s}, "final_acc": f, "best_acc": f, "epochs_to_target": e, "diverged": d,
         "wall_s": 1.0}
        for s, f, e, d in [(0, 60.0, 2, False), (1, 70.0, 3, False), (2, 10.0, None, True)]
    ]
    (row,) = summarize(recs)
    assert row["seeds"] == 3 and row["reached"] == 2 and row["epochs_to_target"] == 2.5
    assert row["diverged"] == 1 and math.isclose(row["final_acc"], 140 / 3)


def test_compare_writes_results_and_resumes(tmp_path, monkeypatch):
    grid = Grid(inits=("default", "he_normal"), depths=(1, 2), activations=("relu",), widths=(8,),
                seeds=(0,), epochs=1)
    first = compare(grid, "digits", tmp_path, progress=False)
    assert (first.ran, first.skipped) == (4, 0)
    for name in ("runs.jsonl", "results.csv", "results.json", "learning_curves.png", "accuracy_vs_depth.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = json.loads((tmp_path / "results.json").read_text())
    assert {(r["init"], r["depth"]) for r in rows} == {("default", 1), ("default", 2), ("he_normal", 1),
                                                       ("he_normal", 2)}
    assert (tmp_path / "results.csv").read_text().splitlines()[0].startswith("data,activation,depth")

    calls = []
    real = experiments.run_cell
    monkeypatch.setattr(experiments, "run_cell", lambda cell, data, on_epoch=None: calls.append(cell) or real(
        cell, data, on_epoch))
    # A line cut short by an interrupted run is ignored: that cell alone is run again.
    with (tmp_path / "runs.jsonl").open("a") as fh:
        fh.write('{"key": "trunc')
    again = compare(grid, "digits", tmp_path, progress=False)
    assert (again.ran, again.skipped, calls) == (0, 4, [])
    assert [r["final_acc"] for r in again.records] == [r["final_acc"] for r in first.records]
    more = compare(Grid(**{**grid.__dict__, "seeds": (0, 1)}), "digits", tmp_path, progress=False, plots=False)
    assert (more.ran, more.skipped) == (4, 4) and {c.seed for c in calls} == {1}


def test_grid_rejects_bad_values():
    with pytest.raises(ValueError, match="optimizers: unknown value 'rmsprop'"):
        Grid(optimizers=("rmsprop",))
    with pytest.raises(ValueError, match="unknown initializer 'glorot'"):
        Grid(inits=("glorot",))
    with pytest.raises(ValueError, match="target"):
        Grid(target=150.0)


def test_data_driven_and_theory_inits():
    x = torch.randn(500, 64, generator=torch.Generator().manual_seed(0))
    model = init_model(make_mlp(64, 10, 3, WIDTH, "tanh"), "lsuv", seed=0, x=x)
    h = x
    for layer in model:
        h = layer(h)
        if isinstance(layer, nn.Linear):
            # LSUV's tolerance here is 0.05 on the output std of each layer on this very batch.
            assert abs(h.std().item() - 1) < 0.05 + 1e-3
    crit = init_model(make_mlp(64, 10, 2, WIDTH, "tanh"), "critical", seed=0)
    # Schoenholz et al. (2017): σ_w² = 1.76 at σ_b² = 0.05 for tanh. 65,536 weights: relative sd of the
    # sample variance √(2/N) = 0.55 %, so 3 % is > 5 sd; 256 biases: relative sd √(2/256) = 8.8 %, 35 % is 4 sd.
    assert abs(crit[2].weight.var().item() * WIDTH / 1.76 - 1) < 0.03
    assert abs(crit[2].bias.var().item() / 0.05 - 1) < 0.35
    relu = init_model(make_mlp(64, 10, 2, WIDTH, "relu"), "critical", seed=0)
    assert abs(relu[2].weight.var().item() * WIDTH / 2 - 1) < 0.03 and torch.count_nonzero(relu[2].bias) == 0
    auto = init_model(make_mlp(64, 10, 2, WIDTH, "relu"), "auto", seed=0, x=x)
    again = init_model(make_mlp(64, 10, 2, WIDTH, "relu"), "auto", seed=0, x=x)
    assert torch.equal(auto[2].weight, again[2].weight)


def test_compare_on_a_user_file_keys_runs_by_content(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.arange(80) % 3
    x = rng.normal(size=(80, 5)) + y[:, None]
    np.savez(tmp_path / "u.npz", x=x, y=y)
    grid = Grid(inits=("he_normal",), depths=(1,), widths=(8,), epochs=2)
    first = compare(grid, str(tmp_path / "u.npz"), tmp_path / "out", progress=False, plots=False)
    (row,) = first.rows
    assert row["data"].startswith("u.npz@") and row["target"] == 50.0 and first.ran == 1
    np.savez(tmp_path / "u.npz", x=x + 1, y=y)  # new content, same name: nothing is resumed
    assert compare(grid, str(tmp_path / "u.npz"), tmp_path / "out", progress=False, plots=False).ran == 1
