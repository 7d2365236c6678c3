"""The zoo (tests/zoo.py: five transformers models, four timm ones) through plan, apply, inspect and fix with
no error, and inspection leaving each model exactly as it was: parameters and buffers byte for byte, .grad
(values and identity), train/eval mode of every module, the user's hooks, the global RNG state — also when
inspection or fix fails midway on a transformer.

timm imports torchvision; where none can be imported, tests/zoo.py installs a stand-in (see its docstring).
"""

from __future__ import annotations

import sys

import pytest
import torch

import initlab
from tests import zoo
from tests.inspect.test_inspect_state import _state

pytestmark = pytest.mark.usefixtures("one_thread")


def _call(model, x):
    return model(**x) if isinstance(x, dict) else model(x)


def _logits(out):
    return out if isinstance(out, torch.Tensor) else out.logits


def _prepared(name):
    """A zoo model in the state a user might hand over mid-training: train mode with one submodule in eval
    (so BatchNorm statistics and dropout are live), .grad on every parameter but one, a forward hook of
    the user's, the global RNG at a seed of its own."""
    pytest.importorskip(zoo.library(name))
    model, x = zoo.build(name)
    model.train()
    first, last = None, None
    for _, m in model.named_modules():
        if m is not model and len(list(m.parameters(recurse=False))) > 0:
            first = first or m
            last = m
    last.eval()
    _logits(_call(model, x)).float().pow(2).mean().backward()
    next(model.parameters()).grad = None
    first.register_forward_hook(lambda m, i, o: None)
    torch.manual_seed(1234)
    return model, x


def _no_leftovers():
    """Nothing of initlab's left in torch's global state."""
    assert torch.is_grad_enabled()
    assert not torch.overrides._get_current_function_mode_stack()
    assert not torch.nn.modules.module._global_forward_hooks
    assert not torch.nn.modules.module._global_forward_pre_hooks


@pytest.mark.parametrize("name", zoo.NAMES)
def test_zoo_model_plans_applies_inspects_and_fixes_and_is_restored(name):
    model, x = _prepared(name)
    before = _state(model)
    r = initlab.inspect(model, x)
    assert _state(model) == before
    _no_leftovers()
    assert r.meta["training_mode"] is True and r.findings
    assert r.residual, r.meta["residual_streams"]  # every zoo model has residual streams the run measured

    res = initlab.fix(model, x)  # a dry run: plan applied, re-inspected, restored
    assert _state(model) == before
    _no_leftovers()
    assert res.after.findings and not res.applied and res.diff

    p = initlab.plan(model, "auto", example_input=x)
    assert not [e.path for e in p if e.initializer is None]
    assert _state(model) == before  # planning is a dry run too
    p.apply(seed=0)
    assert any(not torch.equal(a, model.state_dict()[k]) for k, a in _params(before, model))
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(_logits(_call(model, x))).all()


def _params(state, model):
    """(name, the parameter's bytes before as a tensor) for each parameter."""
    for k, _ in model.named_parameters():
        raw, dtype, shape, _ = state[k]
        yield k, torch.frombuffer(bytearray(raw), dtype=dtype).reshape(shape)


def test_fix_apply_on_a_zoo_transformer_keeps_the_plan_and_reports_after():
    model, x = zoo.build("gpt2")
    res = initlab.fix(model, x, apply=True, preset="auto")
    assert res.applied and res.plan.preset == "auto"
    twin, _ = zoo.build("gpt2", seed=1)
    initlab.plan(twin, "auto", example_input=x).apply(seed=0)  # what apply=True must have written
    for (k, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b), k


def test_inspect_failing_midway_in_a_transformer_leaves_it_as_it_was(monkeypatch):
    """The failure strikes inside inspection's own measurement of a residual add, with its function mode
    on, some adds measured, the autograd graph half built: everything is undone."""
    tr = sys.modules["initlab.inspect.transformer"]  # initlab.inspect is also the function's name

    model, x = _prepared("gpt2")
    before = _state(model)
    real, calls = tr.token_cosine, []

    def boom(t):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("boom inside the measurement")
        return real(t)

    monkeypatch.setattr(tr, "token_cosine", boom)
    tr.forget(model)
    with pytest.raises(RuntimeError, match="boom inside the measurement"):
        initlab.inspect(model, x)
    assert len(calls) == 4
    assert _state(model) == before
    _no_leftovers()


def test_inspect_failing_in_the_users_forward_leaves_a_transformer_as_it_was():
    model, x = _prepared("t5")
    block = model.decoder.block[1]

    def raising(_m, _args):
        raise RuntimeError("boom in the user's forward")

    h = block.register_forward_pre_hook(raising)
    before = _state(model)
    with pytest.raises(RuntimeError, match="boom in the user's forward"):
        initlab.inspect(model, x)
    assert _state(model) == before
    _no_leftovers()
    h.remove()


def test_fix_failing_after_the_plan_was_applied_restores_the_model(monkeypatch):
    """fix applies the plan, then re-inspects: a failure there (apply=True too) must not leave the model
    half-way — it is put back as it was before fix."""
    fix_module = sys.modules["initlab.inspect.fix"]
    real = fix_module.inspect
    model, x = _prepared("llama")
    before = _state(model)
    for apply in (False, True):
        n: list[int] = []

        def second_fails(*a, n=n, **k):
            n.append(1)
            if len(n) == 2:
                raise RuntimeError("boom in the re-inspection")
            return real(*a, **k)

        monkeypatch.setattr(fix_module, "inspect", second_fails)
        with pytest.raises(RuntimeError, match="boom in the re-inspection"):
            initlab.fix(model, x, apply=apply)
        assert _state(model) == before, apply
        _no_leftovers()
