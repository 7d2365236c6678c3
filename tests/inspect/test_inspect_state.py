"""initlab.inspect leaves the model exactly as it was — also when the forward or the loss raises."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import initlab
from initlab.inspect import flush_denormal_state


class Net(nn.Module):
    """BatchNorm (running stats), Dropout (RNG), in-place ReLU, a frozen parameter, a user hook."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(12, 32)
        self.bn = nn.BatchNorm1d(32)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(32, 32)
        self.head = nn.Linear(32, 3)
        self.head.bias.requires_grad_(False)
        self.boom = False
        self.calls = 0

    def forward(self, x):
        x = self.drop(self.act(self.bn(self.fc1(x))))
        x = torch.tanh(self.fc2(x))
        if self.boom:
            raise RuntimeError("boom in forward")
        return self.head(x)


def _state(model: nn.Module) -> dict:
    """Everything that must survive, as bytes."""
    out = {}
    for name, t in model.state_dict(keep_vars=True).items():
        out[name] = (t.detach().cpu().numpy().tobytes(), t.dtype, tuple(t.shape), t.requires_grad)
    for name, p in model.named_parameters():
        out[name + ".grad"] = None if p.grad is None else (p.grad.numpy().tobytes(), id(p.grad))
        out[name + ".id"] = id(p)
    out["modes"] = [(n, m.training) for n, m in model.named_modules()]
    out["hooks"] = [
        (n, list(m._forward_hooks), list(m._forward_pre_hooks), list(m._backward_hooks))
        for n, m in model.named_modules()
    ]
    out["rng"] = torch.get_rng_state().numpy().tobytes()
    out["flush"] = flush_denormal_state()
    return out


def _prepared() -> Net:
    torch.manual_seed(0)
    net = Net()
    net.train()
    net.fc2.eval()  # a mixed mode that must come back as it was
    x = torch.randn(16, 12)
    net(x).sum().backward()  # .grad present on some parameters
    net.fc1.weight.grad = None  # ... and absent on another
    net.fc2.register_forward_hook(lambda m, i, o: None)
    torch.manual_seed(123)
    return net


def test_state_is_restored_byte_for_byte():
    net = _prepared()
    x = torch.randn(16, 12)
    before = _state(net)
    r = initlab.inspect(net, x, recommend=False)
    assert r.meta["training_mode"] is True
    assert any(c.kind == "norm" for c in r.calls)
    assert _state(net) == before
    # The frozen bias has no gradient norm, but the call's ‖dL/dz‖ is there.
    head_bias = next(p for p in r.params if p.name == "head.bias")
    assert head_bias.grad_norm is None and not head_bias.requires_grad
    assert r.layers[-1].grad_norm > 0


def test_state_is_restored_when_the_forward_raises():
    net = _prepared()
    net.boom = True
    x = torch.randn(16, 12)
    before = _state(net)
    with pytest.raises(RuntimeError, match="boom in forward"):
        initlab.inspect(net, x)
    assert _state(net) == before


def test_state_is_restored_when_the_loss_raises():
    net = _prepared()
    x = torch.randn(16, 12)
    before = _state(net)

    def bad_loss(out, target):
        raise ValueError("bad loss")

    with pytest.raises(ValueError, match="bad loss"):
        initlab.inspect(net, x, loss_fn=bad_loss, target=None)
    assert _state(net) == before
    with pytest.raises(ValueError, match="scalar"):
        initlab.inspect(net, x, loss_fn=lambda o, t: o, target=None)
    assert _state(net) == before


def test_flush_denormal_is_on_during_the_run_and_restored_after():
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            seen.append(flush_denormal_state())
            return self.lin(x)

    torch.set_flush_denormal(False)
    r = initlab.inspect(Probe(), torch.randn(8, 4), recommend=False)
    if r.meta["flush_denormal"]:
        assert seen == [True]
        assert "flushed" in r.meta["flush_denormal_note"]
    assert flush_denormal_state() is False


def test_keras_state_is_restored(keras):
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(2),
        ]
    )
    before = [v.value.detach().clone() for v in model.variables]
    act = model.layers[0].activation
    x = torch.randn(32, 8)
    rng = torch.get_rng_state()
    r = initlab.inspect(model, x, recommend=False)
    assert torch.equal(torch.get_rng_state(), rng)
    assert r.trends.depth == 2
    assert all(torch.equal(a, v.value) for a, v in zip(before, model.variables, strict=True))
    assert model.layers[0].activation is act


def _pure() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def test_parameters_are_copied_only_when_user_code_could_write_them():
    from initlab.inspect.snapshot import _params_untouchable

    m = _pure()
    params = list(m.named_parameters())
    assert _params_untouchable(m, None, params)  # torch's own modules only: nothing can write them
    assert _params_untouchable(m, nn.MSELoss(), params)
    assert not _params_untouchable(m, lambda out, t: out.sum(), params)  # a user loss is user code
    assert not _params_untouchable(Net(), None, list(Net().named_parameters()))  # a custom forward
    h = m[0].register_forward_hook(lambda mod, a, o: None)
    assert not _params_untouchable(m, None, params)
    h.remove()
    h = m[3].weight.register_hook(lambda g: g)
    assert not _params_untouchable(m, None, params)
    h.remove()
    h = nn.modules.module.register_module_forward_hook(lambda mod, a, o: None)
    try:
        assert not _params_untouchable(m, None, params)
    finally:
        h.remove()


@pytest.mark.parametrize("route", ["hook", "loss"])
def test_writes_through_data_by_user_code_are_undone(route):
    # Writes through .data bump no version counter: only a copy can undo them, and user code gets one.
    m = _pure()
    x = torch.randn(16, 6)
    before = _state(m)
    loss_fn = None
    if route == "hook":
        def hook(mod, args, out):
            mod.weight.data.mul_(3.0)

        handle = m[0].register_forward_hook(hook)
    else:
        def loss_fn(out, target):
            m[3].bias.data.add_(1.0)
            return out.pow(2).sum()
    initlab.inspect(m, x, loss_fn=loss_fn, recommend=False)
    if route == "hook":
        handle.remove()
    after = _state(m)
    assert after == before


def test_thread_count_and_grad_mode_are_the_users_inside_the_forward_and_after():
    # inspect runs its own statistics without autograd, switching back before any of the model's code
    # runs — also when the model raises; the thread count is never touched.
    seen: list[tuple[int, bool]] = []

    class Probe(nn.Module):
        def __init__(self, boom: bool = False):
            super().__init__()
            self.a = nn.Linear(8, 16)
            self.act = nn.ReLU()
            self.b = nn.Linear(16, 2)
            self.boom = boom

        def forward(self, x):
            h = self.act(self.a(x))
            seen.append((torch.get_num_threads(), torch.is_grad_enabled()))
            if self.boom:
                raise RuntimeError("boom")
            return self.b(h)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        initlab.inspect(Probe(), torch.randn(4, 8), recommend=False)
        assert seen == [(2, True)]
        assert torch.get_num_threads() == 2 and torch.is_grad_enabled()
        with pytest.raises(RuntimeError, match="boom"):
            initlab.inspect(Probe(boom=True), torch.randn(4, 8), recommend=False)
        assert seen[-1] == (2, True)
        assert torch.get_num_threads() == 2 and torch.is_grad_enabled()
    finally:
        torch.set_num_threads(before)
