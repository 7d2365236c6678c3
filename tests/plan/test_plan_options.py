"""Preset options: ``initlab.plan(model, preset="auto", options={...})`` — critical (edge-of-chaos)
layers through ``saturating`` / ``smooth``, explained fallbacks, and errors that name the option."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import initlab
from initlab import theory
from initlab.plan.presets import AUTO_OPTIONS, PresetOption, preset_options, register_preset
from initlab.theory.critical_init import Critical

CRIT = {"saturating": "critical"}


def _mlp(width: int = 32) -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, width), nn.Tanh(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, width), nn.Sigmoid(), nn.Linear(width, 4))


def _x(n: int = 8) -> torch.Tensor:
    return torch.randn(4, n, generator=torch.Generator().manual_seed(0))


def _labels(p: initlab.Plan) -> dict[str, str]:
    return {e.path: e.initializer_label for e in p.entries}


# -- discovery and defaults --------------------------------------------------------------------------


def test_options_are_discoverable_and_defaults_keep_auto_unchanged():
    opts = preset_options("auto")
    assert list(opts) == [o.name for o in AUTO_OPTIONS] == [
        "saturating", "smooth", "sigma_b2", "dense", "orthogonal", "residual", "deepnet_alpha"]
    assert opts["saturating"].choices == ("glorot", "critical") and opts["saturating"].default == "glorot"
    assert opts["smooth"].choices == ("gain", "critical") and opts["smooth"].default == "gain"
    assert opts["sigma_b2"].default == 0.05 and opts["orthogonal"].default is False
    assert opts["dense"].choices == ("orthogonal", "variance") and opts["dense"].default == "orthogonal"
    assert opts["residual"].default == "auto"
    assert opts["residual"].choices == ("auto", "gpt2", "deepnet", "tfixup", "measured", "none")
    assert opts["deepnet_alpha"].choices == ("fold", "none") and opts["deepnet_alpha"].default == "fold"
    assert all(o.doc for o in opts.values())
    assert preset_options("torch") == {}

    m, x = _mlp(), _x()
    base = initlab.plan(m, "auto", example_input=x)
    for given in (None, {}, {"saturating": "glorot", "smooth": "gain", "dense": "orthogonal"}):
        p = initlab.plan(m, "auto", example_input=x, options=given)
        assert _labels(p) == _labels(base)
        assert [e.why for e in p.entries] == [e.why for e in base.entries]
    assert base.options == {} and "options" not in repr(base)


# -- what saturating='critical' does -----------------------------------------------------------------


def test_saturating_critical_gives_tanh_and_sigmoid_layers_critical_and_says_so():
    m, x = _mlp(), _x()
    base = initlab.plan(m, "auto", example_input=x)
    p = initlab.plan(m, "auto", example_input=x, options=CRIT)
    assert p.options == CRIT
    for path, act, fan_in in (("0.weight", "tanh", 8), ("4.weight", "sigmoid", 32)):
        e = p[path]
        sw = theory.critical(act, 0.05)
        assert isinstance(e.initializer, Critical)
        assert e.initializer.sigma_w2 == pytest.approx(sw, rel=1e-12)
        assert e.initializer.sigma_b2 == 0.05 and e.initializer.orthogonal is False
        assert abs(e.initializer.chi1 - 1.0) < 1e-3  # on the edge of chaos
        assert e.std == pytest.approx(math.sqrt(sw / fan_in), rel=1e-12)
        assert e.why.startswith(f"saturating='critical': followed by {act}")
        assert "χ₁ = 1" in e.why
        # what auto gives the layer without the option: orthogonal (dense before tanh), Glorot (sigmoid)
        assert f"without the option auto would choose {base[path].initializer_label}" in e.why
        assert base[path].initializer_label == {"tanh": "Orthogonal(gain=1.327)", "sigmoid": "GlorotUniform"}[act]
        bias = p[path.replace("weight", "bias")]
        assert bias.initializer is e.initializer and bias.std == pytest.approx(math.sqrt(0.05))
        assert "N(0, σ_b² = 0.05)" in bias.why and path in bias.why
    # ReLU layer and the linear output layer: not covered by the option, exactly auto's choice and why
    for path in ("2.weight", "2.bias", "6.weight", "6.bias"):
        assert p[path].initializer_label == base[path].initializer_label and p[path].why == base[path].why
    assert "saturating='critical'" in str(p).splitlines()[0]
    d = json.loads(json.dumps(p.as_dict()))
    assert d["options"] == CRIT
    assert d["entries"][0]["initializer"]["class_name"] == "Critical"


def test_critical_values_after_apply_have_the_planned_law():
    width = 256
    m = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1))
    p = initlab.plan(m, "auto", example_input=torch.zeros(2, width), options=CRIT)
    p.apply(seed=0)
    w, b = m[0].weight.detach().double(), m[0].bias.detach().double()
    # Sample std of n i.i.d. normals: relative standard error 1/√(2n); n = 65536 → 0.28 %, 6 SE = 1.7 %.
    assert w.std().item() == pytest.approx(p["0.weight"].std, rel=6 / math.sqrt(2 * w.numel()))
    assert abs(w.mean().item()) < 6 * p["0.weight"].std / math.sqrt(w.numel())
    # The 256 biases: N(0, 0.05), relative SE 1/√512 = 4.4 %, 6 SE = 27 %.
    assert b.std().item() == pytest.approx(math.sqrt(0.05), rel=6 / math.sqrt(2 * b.numel()))


def test_orthogonal_and_sigma_b2_options():
    m = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Conv2d(8, 16, 3), nn.Tanh())

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = m

        def forward(self, x):
            h = self.m[1](self.m[0](x))
            return self.m[3](self.m[2](h.reshape(-1, 8, 4, 2).repeat(1, 1, 1, 2)))

    net = Net()
    opts = {"saturating": "critical", "orthogonal": True, "sigma_b2": 0}
    p = initlab.plan(net, "auto", example_input=torch.randn(2, 64), options=opts)
    assert p.options == {"saturating": "critical", "orthogonal": True, "sigma_b2": 0.0}
    e = p["m.0.weight"]
    assert e.initializer.orthogonal is True and e.initializer.sigma_w2 == pytest.approx(1.0, abs=1e-6)
    assert "dynamical isometry" in e.why and "σ_b² = 0" in e.why
    assert "bias zero (σ_b² = 0)" in p["m.0.bias"].why
    p.apply(seed=0)
    w = m[0].weight.detach().double()
    # A square scaled orthogonal matrix: W Wᵀ = σ_w² I exactly (σ_w² = 1 for tanh at σ_b² = 0).
    torch.testing.assert_close(w @ w.T, e.initializer.sigma_w2 * torch.eye(64, dtype=torch.float64),
                               atol=1e-5, rtol=0)
    assert torch.count_nonzero(m[0].bias) == 0
    # Delta-orthogonal conv kernel (out 16 >= in 8): E[w²] = σ_w²/fan_in exactly, not just in expectation.
    k = m[2].weight.detach().double()
    assert (k ** 2).mean().item() == pytest.approx(p["m.2.weight"].initializer.sigma_w2 / (8 * 9), rel=1e-5)
    assert "DeltaOrthogonal" in p["m.2.weight"].description.formula


# -- smooth='critical' and the explained fallbacks -----------------------------------------------------


def test_smooth_critical_and_explained_fallbacks():
    m = nn.Sequential(nn.Linear(8, 16), nn.ELU(), nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 16), nn.Softplus(),
                      nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))
    x = _x()
    base = initlab.plan(m, "auto", example_input=x)
    p = initlab.plan(m, "auto", example_input=x, options={"smooth": "critical"})
    elu = p["0.weight"]
    assert isinstance(elu.initializer, Critical)
    assert elu.initializer.sigma_w2 == pytest.approx(theory.critical("elu", 0.05), rel=1e-12)
    assert elu.why.startswith("smooth='critical': followed by elu")
    # GELU at σ_b² = 0.05 reaches χ₁ = 1 only at a repelling fixed point (q* ≈ 0.68); softplus never.
    gelu, softplus = p["2.weight"], p["4.weight"]
    assert "smooth='critical' not applied: no usable edge of chaos" in gelu.why
    assert "unstable fixed point" in gelu.why
    assert "smooth='critical' not applied: no usable edge of chaos" in softplus.why
    for path, e in (("2.weight", gelu), ("4.weight", softplus)):
        assert e.initializer_label == base[path].initializer_label  # auto's usual choice ...
        assert e.why.endswith(base[path].why)  # ... with auto's usual reason after the option's
        assert p[path.replace("weight", "bias")].why == base[path.replace("weight", "bias")].why
    # tanh is governed by 'saturating', which stays at its default (auto's dense rule: orthogonal)
    assert p["6.weight"].initializer_label == base["6.weight"].initializer_label == "Orthogonal(gain=1.327)"
    assert p["6.weight"].why == base["6.weight"].why


def test_layers_outside_the_theory_keep_auto_with_the_reason():
    class Bi(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bi = nn.Bilinear(4, 4, 8)

        def forward(self, x):
            return torch.tanh(self.bi(x, x))

    p = initlab.plan(Bi(), "auto", example_input=torch.randn(2, 4), options=CRIT)
    e = p["bi.weight"]
    assert e.initializer_label == "GlorotUniform"
    assert "saturating='critical' not applied" in e.why and "not a bilinear layer" in e.why


def test_rules_still_win_over_options():
    m, x = _mlp(), _x()
    p = initlab.plan(m, "auto", example_input=x, options=CRIT, rules={"0.weight": "zeros", "4.bias": "ones"})
    assert p["0.weight"].rule == "'0.weight'" and p["0.weight"].initializer_label == "Zeros"
    assert p["0.bias"].initializer_label == "Zeros"  # its kernel is ruled, so no critical σ_b² to match
    assert p["4.bias"].initializer_label == "Ones" and "Critical" in p["4.bias"].why  # the rule names what it beat
    assert isinstance(p["4.weight"].initializer, Critical)


# -- errors name the option and what is valid --------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"saturation": "critical"}, ValueError, ["'saturation'", "'saturating'", "'glorot', 'critical'"]),
        ({"saturating": "crit"}, ValueError, ["options['saturating']", "'crit'", "one of 'glorot', 'critical'"]),
        ({"smooth": True}, ValueError, ["options['smooth']", "True", "one of 'gain', 'critical'"]),
        ({"saturating": "critical", "sigma_b2": -0.1}, ValueError, ["options['sigma_b2']", "-0.1", "number >= 0"]),
        ({"saturating": "critical", "sigma_b2": math.nan}, ValueError, ["options['sigma_b2']", "nan"]),
        ({"saturating": "critical", "sigma_b2": True}, ValueError, ["options['sigma_b2']", "True"]),
        ({"saturating": "critical", "orthogonal": 1}, ValueError, ["options['orthogonal']", "True or False"]),
        ({"orthogonal": True}, ValueError, ["options['orthogonal']", "saturating='critical'"]),
        ({"sigma_b2": 0.1}, ValueError, ["options['sigma_b2']", "smooth='critical'"]),
        ([("saturating", "critical")], TypeError, ["options: expected a dict", "list"]),
    ],
)
def test_bad_options_raise_naming_the_option(options, error, words):
    with pytest.raises(error) as info:
        initlab.plan(_mlp(), "auto", example_input=_x(), options=options)
    for w in words:
        assert w in str(info.value)


def test_presets_without_options_reject_them():
    with pytest.raises(ValueError, match=r"preset 'torch' takes no options, got 'saturating'.*'auto'"):
        initlab.plan(_mlp(), "torch", options=CRIT)
    assert initlab.plan(_mlp(), "torch", options={}).options == {}


def test_preset_option_declarations_are_checked():
    with pytest.raises(ValueError, match="exactly one of choices"):
        PresetOption("x", 1, "doc", choices=(1,), kind="bool")
    with pytest.raises(ValueError, match="valid kinds"):
        PresetOption("x", 1, "doc", kind="int")
    with pytest.raises(ValueError, match=r"options\['x'\]"):
        PresetOption("x", "c", "doc", choices=("a", "b"))
    opt = PresetOption("x", False, "doc", kind="bool")
    with pytest.raises(ValueError, match="more than once"):
        register_preset("_test_dup_opts", lambda ctx: None, options=(opt, opt), replace=True)


# -- composing presets -------------------------------------------------------------------------------


def test_custom_presets_declare_options_and_pass_them_to_auto():
    seen = []

    def mine(ctx):
        seen.append(dict(ctx.options))
        ctx.apply_preset("auto", options={"saturating": "critical"} if ctx.options["edge"] else None)
        seen.append(dict(ctx.options))  # the caller's options are back after apply_preset

    register_preset("_test_opts", mine, options=(PresetOption("edge", False, "critical tanh layers", kind="bool"),),
                    needs_example_input=True, replace=True)
    m, x = _mlp(), _x()
    p = initlab.plan(m, "_test_opts", example_input=x, options={"edge": True})
    assert isinstance(p["0.weight"].initializer, Critical) and p.options == {"edge": True}
    assert seen == [{"edge": True}, {"edge": True}]
    assert initlab.plan(m, "_test_opts", example_input=x)["0.weight"].initializer_label == "Orthogonal(gain=1.327)"
    with pytest.raises(ValueError, match=r"preset 'auto' has no option 'edge'"):
        register_preset("_test_opts_bad", lambda ctx: ctx.apply_preset("auto", options={"edge": 1}), replace=True)
        initlab.plan(m, "_test_opts_bad", example_input=x)
    # A preset that starts from auto without options gets auto's defaults, whatever its own options are.
    register_preset("_test_opts_plain", lambda ctx: ctx.apply_preset("auto"), needs_example_input=True,
                    options=(PresetOption("saturating", "x", "same name, another preset", choices=("x",)),),
                    replace=True)
    plain = initlab.plan(m, "_test_opts_plain", example_input=x)
    assert _labels(plain) == _labels(initlab.plan(m, "auto", example_input=x))


def test_keras_dense_with_tanh_gets_critical(keras):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="tanh"),
                              keras.layers.Dense(2)])
    p = initlab.plan(model, "auto", options=CRIT)
    kernel = next(e for e in p.entries if e.path.endswith("kernel") and e.shape == (6, 16))
    assert kernel.layout == "keras" and isinstance(kernel.initializer, Critical)
    assert kernel.std == pytest.approx(math.sqrt(theory.critical("tanh", 0.05) / 6), rel=1e-12)
    bias = next(e for e in p.entries if e.path.endswith("bias") and e.shape == (16,))
    assert bias.initializer is kernel.initializer
    p.apply(seed=0)
