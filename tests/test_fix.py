"""initlab.fix: the plan diff as a dry run (model untouched), or applied and re-inspected."""

from __future__ import annotations

import pytest
import torch

import initlab
from test_inspect_models import KNOWN, batch, mlp


def _bytes(model: torch.nn.Module) -> dict[str, bytes]:
    return {k: v.detach().numpy().tobytes() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["relu_default_30", "tanh_n001_10", "relu_n1_10"])
def test_fix_turns_the_unhealthy_cases_healthy(name):
    depth, act, init, _ = KNOWN[name]
    model = mlp(depth, act, init)
    x = batch()
    before = _bytes(model)
    dry = initlab.fix(model, x)
    assert not dry.applied and _bytes(model) == before  # the dry run restores every byte
    assert not dry.before.healthy and dry.after.healthy and dry.fixed
    assert dry.plan.preset == "auto" and all(f.fix is dry.plan for f in dry.before.findings)
    w0 = dry.diff[0]
    assert w0.path == "0.weight" and w0.current_std == pytest.approx(float(model[0].weight.detach().std()))
    assert w0.planned_std is not None and w0.factor == pytest.approx(w0.planned_std / w0.current_std)
    text = str(dry)
    assert "Plan diff" in text and "dry run" in text and "fixed" in text

    done = initlab.fix(model, x, apply=True)
    assert done.applied and done.after.healthy and _bytes(model) != before
    # Applying gives the same numbers the dry run measured (same plan, same seed).
    assert done.after.trends.dz_ratio == pytest.approx(dry.after.trends.dz_ratio, rel=1e-6)
    assert initlab.inspect(model, x, recommend=False).healthy


def test_fix_removes_the_saturation_of_a_deep_sigmoid_net():
    # The auto preset gives sigmoid layers Glorot weights: no more saturation. A 20-layer sigmoid
    # net still loses its gradient (σ' ≤ ¼; experiments.md §2.4: every init but N(0,1) gives
    # ≤ 2e-12 at depth ≥ 30), and the after report says so rather than claiming a fix.
    depth, act, init, _ = KNOWN["sigmoid_n1_20"]
    model = mlp(depth, act, init)
    res = initlab.fix(model, batch())
    assert "saturation" in res.before.verdict and "saturation" not in res.after.verdict
    assert not res.fixed and "vanishing_gradients" in res.after.verdict
    assert "not fixed" in str(res)


def test_fix_checks_its_arguments():
    model = mlp(2, torch.nn.ReLU, "he")
    with pytest.raises(TypeError, match="apply"):
        initlab.fix(model, batch(), apply="yes")
