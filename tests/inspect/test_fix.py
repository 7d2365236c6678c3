"""initlab.fix: the plan diff as a dry run (model untouched), or applied and re-inspected."""

from __future__ import annotations

import pytest
import torch

import initlab
from initlab.inspect import findings
from tests.inspect.test_inspect_models import KNOWN, batch, mlp


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


def test_fix_makes_a_deep_sigmoid_net_healthy():
    # No variance scale fixes a 20-layer sigmoid net (auto's Glorot: ‖dL/dz₁‖/‖dL/dz_L‖ ≈ 1e-8, σ' ≤ ¼;
    # experiments.md §2.4): σ's mean ½ is the cause. The recommended plan is LSUV with per-unit mean
    # correction, b = −W·E[h] (Pennington et al. 2017), which makes it healthy on re-inspection.
    depth, act, init, _ = KNOWN["sigmoid_n1_20"]
    model = mlp(depth, act, init)
    x = batch()
    before = _bytes(model)
    res = initlab.fix(model, x)
    assert _bytes(model) == before
    assert "saturation" in res.before.verdict
    assert res.plan.preset == "lsuv" and res.plan.options == {"mean_correction": "per_unit"}
    assert res.fixed and res.after.healthy
    # Measured: ratio ≈ 1.37 (≈ ×1.016 per layer); the healthy verdict already bounds it within ×10.
    assert 0.1 < res.after.trends.dz_ratio < 10
    text = str(res)
    assert "mean_correction='per_unit'" in text and "then lsuv" in text and "not fixed" not in text
    assert "b = −W·E[h]" in res.plan.post_steps[0].why and "χ₁" in res.plan.post_steps[0].why
    # A named preset is used as given: auto alone removes the saturation but not the vanishing gradient.
    auto = initlab.fix(model, x, preset="auto")
    assert auto.plan.preset == "auto" and "saturation" not in auto.after.verdict
    assert not auto.fixed and "vanishing_gradients" in auto.after.verdict
    done = initlab.fix(model, x, apply=True)
    assert done.applied and initlab.inspect(model, x, recommend=False).healthy


def test_inspect_recommends_the_mean_corrected_plan_for_sigmoid_nets():
    depth, act, init, _ = KNOWN["sigmoid_n1_20"]
    rep = initlab.inspect(mlp(depth, act, init), batch())
    plan = rep.findings[0].fix
    assert plan is not None and plan.preset == "lsuv" and plan.options == {"mean_correction": "per_unit"}
    assert findings.recommended_preset(rep.calls, ["dead_units"]) == ("auto", {})


def test_fix_checks_its_arguments():
    model = mlp(2, torch.nn.ReLU, "he")
    with pytest.raises(TypeError, match="apply"):
        initlab.fix(model, batch(), apply="yes")
    with pytest.raises(TypeError, match="preset"):
        initlab.fix(model, batch(), preset=3)


def test_lsuv_per_unit_mean_correction_centres_every_unit():
    # What the sigmoid plan relies on: after lsuv(mean_correction="per_unit") each output unit (a
    # Linear's last axis, a Conv's channel axis) has batch mean 0 and the layer std is the target.
    # The bias absorbs the measured mean exactly, so only float32 rounding remains (≤ 1e-5 of std 1).
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.Sigmoid(), torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 16),
        torch.nn.Sigmoid(), torch.nn.Linear(16, 4),
    )
    x = torch.randn(32, 3, 8, 8) + 2.0
    res = initlab.lsuv(model, x, mean_correction="per_unit", seed=0)
    assert [c.status for c in res] == ["scaled"] * 3
    outs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outs.append(o.detach())) for m in (model[0], model[3], model[5])]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert outs[0].mean(dim=(0, 2, 3)).abs().max() < 1e-5 and outs[0].std() == pytest.approx(1.0, rel=1e-4)
    for o in outs[1:]:
        assert o.mean(0).abs().max() < 1e-5 and o.std() == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(ValueError, match="mean_correction"):
        initlab.lsuv(model, x, mean_correction="unit")
