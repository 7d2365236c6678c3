"""initlab.Critical: edge-of-chaos weights and biases, orthogonal option, registry, plans."""

import math

import pytest
import torch
from torch import nn

import initlab
from initlab import theory

pytestmark = pytest.mark.usefixtures("one_thread")


def test_critical_variance_and_bias():
    init = initlab.Critical("tanh", sigma_b2=0.05)
    assert abs(init.sigma_w2 - 1.76) < 0.01 and init.chi1 == pytest.approx(1.0, abs=1e-8)
    w = init.sample((512, 256), seed=0)
    # 131,072 iid N(0, σ_w²/256) entries: the sample variance has relative sd √(2/n) = 0.0039; 5σ = 0.02.
    assert float(w.var()) * 256 == pytest.approx(init.sigma_w2, rel=0.02)
    b = init.sample((4096,), seed=1)
    # 4096 entries of N(0, 0.05): relative sd of the variance √(2/4096) = 0.022; 5σ = 0.11.
    assert float(b.var()) == pytest.approx(0.05, rel=0.11)
    d = init.describe((256, 128))
    assert d.variance == pytest.approx(init.sigma_w2 / 128) and "χ₁ = 1" in d.formula
    assert init.describe((16,)).variance == pytest.approx(0.05)
    assert torch.equal(initlab.Critical("relu", 0.0).sample((8,), seed=0), torch.zeros(8))
    assert initlab.Critical("relu", 0.0).sigma_w2 == pytest.approx(2.0)  # = He


def test_orthogonal_dynamical_isometry_option():
    init = initlab.Critical("tanh", sigma_b2=0.05, orthogonal=True, seed=3)
    w = init.sample((128, 128))
    # Square orthogonal × gain: every singular value equals √σ_w² (the mean-field second moment is kept).
    sv = torch.linalg.svdvals(w)
    assert sv == pytest.approx(torch.full((128,), math.sqrt(init.sigma_w2)), rel=1e-5)
    wide = init.sample((64, 256))
    assert float(wide.pow(2).mean()) * 256 == pytest.approx(init.sigma_w2, rel=1e-5)
    conv = init.sample((32, 16, 3, 3))  # delta-orthogonal: zero off-centre, E[w²]·fan_in = σ_w²
    assert float(conv.pow(2).mean()) * 16 * 9 == pytest.approx(init.sigma_w2, rel=1e-5)
    assert torch.count_nonzero(conv[:, :, 0, 0]) == 0


def _jacobian_spread(orthogonal, depth=32, n=128, seed=0):
    """max/median singular value of the input-output Jacobian of a deep tanh net drawn by Critical."""
    init = initlab.Critical("tanh", sigma_b2=1e-3, orthogonal=orthogonal)
    x = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    jac = torch.eye(n, dtype=torch.float64)
    for layer in range(depth):
        w = init.sample((n, n), seed=seed * 1000 + layer, dtype=torch.float64)
        b = init.sample((n,), seed=seed * 1000 + 500 + layer, dtype=torch.float64)
        h = w @ x + b
        jac = (1 - torch.tanh(h) ** 2)[:, None] * (w @ jac)
        x = torch.tanh(h)
    sv = torch.linalg.svdvals(jac)
    return float(sv.max() / sv.median())


def test_orthogonal_gives_dynamical_isometry():
    # Pennington et al. 2017: at criticality with small q* (σ_b² = 1e-3), orthogonal weights keep the
    # Jacobian's singular values together; Gaussian ones spread them over orders of magnitude.
    # Measured over seeds 0–2 (depth 32, width 128): max/median 6.2–7.0 against 1.0e6–1.6e6, so the
    # thresholds below sit an order of magnitude or more from either side.
    assert _jacobian_spread(True) < 50
    assert _jacobian_spread(False) > 1e4


def test_registry_config_round_trip_and_module_activation():
    init = initlab.Critical(nn.Tanh(), sigma_b2=0.05, seed=7)
    assert init.get_config()["activation"] == "tanh"
    again = initlab.get({"class_name": "Critical", "config": init.get_config()})
    assert again == init and torch.equal(again.sample((4, 4)), init.sample((4, 4)))
    assert isinstance(initlab.get("critical"), initlab.Critical)
    assert initlab.serialize(init)["registered_name"] == "Critical"
    leaky = initlab.Critical(nn.LeakyReLU(0.2), sigma_b2=0.0)
    assert leaky.sigma_w2 == pytest.approx(2 / 1.04)


def test_signal_keeps_predicted_std_through_depth():
    # A 40-layer tanh MLP (width 512) drawn by Critical: measured per-layer pre-activation std against
    # predict_std. One network: per-layer relative sd of q̂ ≈ √(2/512)/√(1 − V'²) ≈ 0.07 (V' ≈ 0.5),
    # 0.035 in std, and 64 inputs that stay decorrelated (χ₁ = 1) average it to ≲ 0.01 (the inputs share
    # W, so not all the way to 0.035/8). Tolerance 0.05 relative on the mean over the last 20 layers.
    torch.manual_seed(0)
    depth = 40
    model = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(512, 512), nn.Tanh())])
    initlab.plan(model, rules={nn.Linear: initlab.Critical("tanh", sigma_b2=0.05)}).apply(seed=0)
    x = torch.randn(64, 512)
    stds, h = [], x
    with torch.no_grad():
        for lin, act in zip(model[0::2], model[1::2], strict=True):
            h = lin(h)
            stds.append(float(h.pow(2).mean().sqrt()))
            h = act(h)
    pred = theory.predict_std("tanh", initlab.Critical("tanh", 0.05).sigma_w2, 0.05, depth, q0=float(x.pow(2).mean()))
    assert sum(stds[20:]) / 20 == pytest.approx(float(pred[20:].mean()), rel=0.05)


def test_critical_preset_in_a_plan():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    p = initlab.plan(model, "critical", example_input=torch.randn(8, 16))
    by = {e.path: e for e in p.entries}
    assert isinstance(by["0.weight"].initializer, initlab.Critical)
    assert by["0.weight"].initializer.sigma_w2 == pytest.approx(theory.critical("tanh", 0.05))
    assert by["0.bias"].std == pytest.approx(math.sqrt(0.05))
    assert by["2.weight"].initializer.sigma_w2 == pytest.approx(2.0)  # ReLU: σ_b² = 0 → He
    assert "edge of chaos" in by["0.weight"].why
    p.apply(seed=0)
    orth = initlab.plan(model, "critical_orthogonal", example_input=torch.randn(8, 16))
    assert {e.path: e for e in orth.entries}["0.weight"].initializer.orthogonal


def test_no_critical_point_and_bad_arguments():
    with pytest.raises(ValueError, match="no critical point"):
        initlab.Critical("relu", sigma_b2=0.05)
    with pytest.raises(ValueError, match="sigma_b2: must be a finite number >= 0"):
        initlab.Critical("tanh", sigma_b2=-0.1)
    with pytest.raises(ValueError, match="sigma_w2: must be a finite number > 0"):
        initlab.Critical("tanh", sigma_w2=0.0)
    with pytest.raises(TypeError, match="orthogonal: expected True or False"):
        initlab.Critical("tanh", orthogonal="yes")
