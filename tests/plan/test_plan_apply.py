"""Plan.apply: reproducible by name, all or nothing, the meta path, rules and their errors, post steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import initlab
from initlab.initializers import Initializer
from initlab.plan.presets import PRESETS, register_preset


class _Block(nn.Module):
    def __init__(self, order: str) -> None:
        super().__init__()
        mods = {"attn": nn.MultiheadAttention(16, 2), "fc": nn.Linear(16, 32), "norm": nn.LayerNorm(16),
                "rnn": nn.GRU(16, 8)}
        for k in order.split(","):
            setattr(self, k, mods[k])


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("preset", ["torch", "keras", "auto"])
def test_values_depend_only_on_seed_and_path(preset):
    torch.manual_seed(0)
    a = _Block("attn,fc,norm,rnn")
    torch.manual_seed(1)
    b = _Block("rnn,norm,fc,attn")  # the same paths, registered (and constructed) in another order
    assert [n for n, _ in a.named_parameters()] != [n for n, _ in b.named_parameters()]
    rules = {"fc.weight": "he_uniform"} if preset == "auto" else None  # fc is never called: no activation
    initlab.plan(a, preset, rules=rules).apply(seed=7)
    initlab.plan(b, preset, rules=rules).apply(seed=7)
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    # ... nor on which other parameters are initialized: leave two of them as they are.
    c = _Block("fc,attn,rnn,norm")
    rules2 = {**(rules or {}), "attn.in_proj_weight": None, "*.bias_hh_l0": None}
    initlab.plan(c, preset, rules=rules2).apply(seed=7)
    sc = _state(c)
    for k in sa:
        if k not in ("attn.in_proj_weight", "rnn.bias_hh_l0"):
            assert torch.equal(sa[k], sc[k]), k
    # a different seed changes the values
    initlab.plan(b, preset, rules=rules).apply(seed=8)
    assert not torch.equal(_state(b)["rnn.weight_ih_l0"], sa["rnn.weight_ih_l0"])


class _Boom(Initializer):
    """Fills nothing: it fails, like an initializer hitting a bad device or dtype would."""

    name = "Boom"

    def _describe(self, shape, layout, fans):
        return self._desc(shape, layout, fans, "constant", 0.0, 0.0, 0.0, 0.0, "fails on fill")

    def _fill(self, work, desc, gen):
        raise RuntimeError("no values today")


def test_all_or_nothing_when_an_initializer_fails():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.LSTM(8, 4))
    before = _state(model)
    plan = initlab.plan(model, "keras", rules={"2.bias": _Boom()})
    with pytest.raises(RuntimeError, match=r"'2\.bias'.*Nothing was changed"):
        plan.apply(seed=0)
    after = _state(model)
    for k in before:
        assert torch.equal(before[k], after[k]), k


def test_all_or_nothing_when_a_post_step_fails():
    def failing(ctx):
        ctx.apply_preset("torch")
        ctx.add_post_step("explode", lambda model: (_ for _ in ()).throw(ValueError("bad data")), "test step")

    register_preset("_test_failing_post", failing, replace=True)
    try:
        model = nn.Sequential(nn.Linear(8, 8))
        before = _state(model)
        plan = initlab.plan(model, "_test_failing_post")
        assert "after apply: explode" in str(plan)
        with pytest.raises(RuntimeError, match="restored"):
            plan.apply(seed=0)
        for k, v in _state(model).items():
            assert torch.equal(before[k], v), k
    finally:
        PRESETS.pop("_test_failing_post", None)


def test_registered_preset_with_post_step_runs_after_filling():
    seen = {}

    def halve(model):
        with torch.no_grad():
            seen["max_before"] = model[0].weight.abs().max().item()
            model[0].weight.mul_(0.5)

    def half_torch(ctx):
        ctx.apply_preset("torch")
        for site in ctx.known_sites:
            if site.info.role == "bias":
                ctx.set(site, initlab.Constant(0.125), "test: constant bias")
        ctx.add_post_step("halve", halve, "halves the first weight after all values are filled")

    register_preset("_test_half", half_torch, description="test", replace=True)
    try:
        model = nn.Sequential(nn.Linear(100, 10))
        plan = initlab.plan(model, "_test_half")
        assert plan.post_steps[0].name == "halve" and plan.as_dict()["post_steps"][0]["preset"] == "_test_half"
        plan.apply(seed=0)
        assert seen["max_before"] <= 0.1 and model[0].weight.abs().max().item() <= 0.05 + 1e-7
        assert torch.all(model[0].bias == 0.125)
        with pytest.raises(ValueError, match="already registered"):
            register_preset("_test_half", half_torch)
    finally:
        PRESETS.pop("_test_half", None)


def test_meta_device_materializes_parameter_by_parameter():
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(),
                              nn.Linear(16 * 6 * 6, 10))
    with pytest.raises(ValueError, match="meta"):
        initlab.plan(model, "torch").apply(seed=0)
    plan = initlab.plan(model, "auto")  # activations by torch.fx: nothing runs on meta
    params = {id(p) for p in model.parameters()}
    out = plan.apply(seed=0, device="cpu")
    assert out is model and {id(p) for p in model.parameters()} == params  # same Parameter objects
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(b.device.type == "cpu" for b in model.buffers())
    assert torch.all(model[1].running_var == 1) and torch.all(model[1].running_mean == 0)
    assert int(model[1].num_batches_tracked) == 0
    w = model[0].weight
    assert w.abs().max().item() <= plan["0.weight"].high
    y = model(torch.randn(2, 3, 8, 8))
    assert torch.isfinite(y).all()
    # the same seed on a CPU copy gives the same values
    cpu = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 6 * 6, 10))
    initlab.plan(cpu, "auto", example_input=torch.randn(2, 3, 8, 8)).apply(seed=0)
    assert torch.equal(cpu[0].weight, model[0].weight)


def test_meta_parameter_left_as_is_is_an_error():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(3))

    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(3, 3), Scale())
    plan = initlab.plan(model, "torch")
    assert plan["1.s"].initializer is None and "does not know Scale" in plan["1.s"].why
    with pytest.raises(ValueError, match=r"'1\.s'.*meta.*rule"):
        plan.apply(seed=0, device="cpu")
    assert model[0].weight.is_meta  # nothing happened
    initlab.plan(model, "torch", rules={Scale: "ones"}).apply(seed=0, device="cpu")
    assert torch.all(model[1].s == 1)


def test_rules_override_by_type_glob_and_name_first_match_wins():
    model = nn.ModuleDict({"emb": nn.Embedding(10, 8), "mha": nn.MultiheadAttention(8, 2),
                           "fc": nn.Linear(8, 8)})
    rules = {nn.Embedding: "random_normal", "*.out_proj.weight": "zeros", "bias": initlab.get("ones"),
             "*.bias": "zeros"}
    with pytest.raises(ValueError, match=r"'\*\.bias' matched no parameter"):
        initlab.plan(model, "keras", rules=rules)  # "bias" (by name) already took every bias
    del rules["*.bias"]
    plan = initlab.plan(model, "keras", rules=rules)
    assert plan["emb.weight"].rule == "Embedding (type)" and plan["emb.weight"].initializer.name == "RandomNormal"
    assert plan["mha.out_proj.weight"].rule == "'*.out_proj.weight'"
    assert plan["fc.bias"].rule == "'bias'" and plan["mha.out_proj.bias"].initializer.name == "Ones"
    assert plan["mha.in_proj_bias"].rule is None  # its name is in_proj_bias, not bias
    assert "rule 'bias'" in str(plan) and "the preset chose Zeros" in plan["fc.bias"].why
    plan.apply(seed=0)
    assert torch.all(model["mha"].out_proj.weight == 0) and torch.all(model["fc"].bias == 1)


def test_bad_rules_and_missing_example_input_give_clear_errors():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"'\*\.nothing' matched no parameter"):
        initlab.plan(model, "torch", rules={"*.nothing": "zeros"})
    with pytest.raises(ValueError, match=r"rules\['\*\.weight'\].*unknown initializer 'glorot_unifrom'"):
        initlab.plan(model, "torch", rules={"*.weight": "glorot_unifrom"})
    with pytest.raises(ValueError, match=r"Orthogonal.*cannot initialize '0\.bias'.*rank"):
        initlab.plan(model, "torch", rules={"*.bias": "orthogonal"})
    with pytest.raises(TypeError, match="rules: a key must be"):
        initlab.plan(model, "torch", rules={3: "zeros"})
    with pytest.raises(ValueError, match="unknown preset 'pytorch'"):
        initlab.plan(model, "pytorch")

    class Branchy(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.relu(self.fc(x)) if x.sum() > 0 else torch.tanh(self.fc(x))

    with pytest.raises(ValueError, match=r"example_input.*torch\.fx could not trace Branchy"):
        initlab.plan(Branchy(), "auto")
    plan = initlab.plan(Branchy(), "auto", example_input=torch.ones(1, 4))
    assert plan["fc.weight"].initializer.name == "Orthogonal" and "relu" in plan["fc.weight"].why
    with pytest.raises(ValueError, match="example_input: running the model on it failed"):
        initlab.plan(Branchy(), "auto", example_input=torch.ones(1, 5))


def test_in_place_apply_gives_the_same_values():
    a = nn.Sequential(nn.Linear(6, 5), nn.GRU(5, 3))
    b = nn.Sequential(nn.Linear(6, 5), nn.GRU(5, 3))
    ptr_a, ptr_b = a[0].weight.data_ptr(), b[0].weight.data_ptr()
    initlab.plan(a, "flax").apply(seed=4)
    initlab.plan(b, "flax").apply(seed=4, atomic=False, workers=3)
    assert b[0].weight.data_ptr() == ptr_b  # filled in place
    assert a[0].weight.data_ptr() != ptr_a  # fresh tensor swapped in
    for (k, va), vb in zip(_state(a).items(), _state(b).values(), strict=True):
        assert torch.equal(va, vb), k
    with pytest.raises(TypeError, match="seed: expected an int"):
        initlab.plan(a, "flax").apply(seed=None)


class _BoomUniform(initlab.RandomUniform):
    """A user subclass of a trusted catalogue class: its own ``_fill`` fails, so it must not fill in place."""

    def _fill(self, work, desc, gen):
        raise RuntimeError("subclass fill failed")


def _keras_mix() -> nn.Sequential:
    # preset keras: the Linear kernels (GlorotUniform) and biases (Zeros) and the LSTM's bias slices
    # (Zeros/Ones) are trusted fills; the LSTM's orthogonal recurrent kernel is not.
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.LSTM(8, 4))


def test_atomic_apply_fills_trusted_entries_in_place_and_others_fresh():
    a, b = _keras_mix(), _keras_mix()
    ptrs = {k: v.data_ptr() for k, v in a.named_parameters()}
    initlab.plan(a, "keras").apply(seed=1)
    initlab.plan(b, "keras").apply(seed=1, atomic=False)
    for k in ("0.weight", "0.bias", "2.weight", "2.bias", "3.bias_ih_l0"):
        assert dict(a.named_parameters())[k].data_ptr() == ptrs[k], k  # trusted: filled in place
    assert a[3].weight_hh_l0.data_ptr() != ptrs["3.weight_hh_l0"]  # orthogonal: fresh tensor swapped in
    for (k, va), vb in zip(_state(a).items(), _state(b).values(), strict=True):
        assert torch.equal(va, vb), k


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("bad", [_Boom(), _BoomUniform()], ids=["user-class", "trusted-subclass"])
def test_untrusted_failure_after_trusted_entries_changes_nothing(bad, workers):
    # By size the failing entry comes after the Linear kernels and the LSTM's input kernel, all trusted;
    # it must still fail before any of them is written in place.
    model = _keras_mix()
    before = _state(model)
    plan = initlab.plan(model, "keras", rules={"3.bias_hh_l0": bad})
    with pytest.raises(RuntimeError, match=r"'3\.bias_hh_l0'.*Nothing was changed"):
        plan.apply(seed=0, workers=workers)
    for k, v in _state(model).items():
        assert torch.equal(before[k], v), k


def test_trusted_entry_failing_validation_changes_nothing():
    model = _keras_mix()
    before = _state(model)
    plan = initlab.plan(model, "keras")
    plan["2.bias"].fans = (0, 0)  # describe rejects these fans: caught before any in-place write
    with pytest.raises(RuntimeError, match=r"'2\.bias'.*fans: expected.*Nothing was changed"):
        plan.apply(seed=0)
    for k, v in _state(model).items():
        assert torch.equal(before[k], v), k
