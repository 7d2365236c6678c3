"""Preset ``keras`` against real Keras 3 draws (LSTM, MultiHeadAttention); Keras models on the torch
backend: the tutorial's snippet, Keras layouts, gate orders."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import initlab


def _rel_tol(n: int) -> float:
    """sd(sample std)/σ ≈ √((κ − 1)/(4n)) with κ = 1.8 for a uniform law; 6 standard errors."""
    return 6 * math.sqrt(0.8 / (4 * n))


def _values(v) -> torch.Tensor:
    return v.value.detach().double() if hasattr(v, "value") else torch.as_tensor(v).double()


def test_keras_preset_lstm_matches_keras(keras):
    keras.utils.set_random_seed(0)
    k = keras.layers.LSTM(32)
    k.build((None, 5, 16))
    kk, kr, kb = (_values(w) for w in (k.cell.kernel, k.cell.recurrent_kernel, k.cell.bias))

    t = nn.LSTM(16, 32)
    plan = initlab.plan(t, "keras")
    plan.apply(seed=0)
    # kernel: glorot_uniform on the whole (16, 128) block in both
    e = plan["weight_ih_l0"]
    bound = math.sqrt(6 / (16 + 128))
    assert e.high == pytest.approx(bound) and kk.abs().max().item() <= bound
    assert kk.abs().max().item() >= 0.95 * bound
    assert kk.std().item() == pytest.approx(e.std, rel=_rel_tol(kk.numel()))
    assert t.weight_ih_l0.detach().double().std().item() == pytest.approx(e.std, rel=_rel_tol(kk.numel()))
    # recurrent kernel: orthogonal on the whole (32, 128): E[x²] = 1/128 exactly, in Keras and here
    e = plan["weight_hh_l0"]
    assert e.std**2 == pytest.approx(1 / 128)
    assert kr.pow(2).mean().item() == pytest.approx(1 / 128, rel=1e-5)
    assert t.weight_hh_l0.detach().double().pow(2).mean().item() == pytest.approx(1 / 128, rel=1e-5)
    w = t.weight_hh_l0.detach().double()  # torch (4u, u) = Keras (u, 4u) transposed: orthonormal columns
    assert torch.allclose(w.t() @ w, torch.eye(32, dtype=torch.float64), atol=1e-5)
    # bias: the same gates (i, f, c, o == i, f, g, o) and values; torch's two biases sum to Keras's one
    total = (t.bias_ih_l0 + t.bias_hh_l0).detach().double()
    assert torch.equal(total, kb) and kb.view(4, 32)[1].eq(1).all()


def test_keras_preset_multihead_attention_matches_keras(keras):
    keras.utils.set_random_seed(0)
    k = keras.layers.MultiHeadAttention(num_heads=4, key_dim=16)
    k.build((None, 3, 64), (None, 3, 64))
    t = nn.MultiheadAttention(64, 4)
    plan = initlab.plan(t, "keras")
    plan.apply(seed=0)
    bound = math.sqrt(6 / (64 + 64))  # frameworks.md §2: L = 0.2165 in Keras 3.15
    assert bound == pytest.approx(0.2165, abs=1e-4)
    kernels = {"q": k._query_dense.kernel, "k": k._key_dense.kernel, "v": k._value_dense.kernel}
    for label, var in kernels.items():
        e = plan[f"in_proj_weight[{label}]"]
        kv = _values(var)
        assert e.fans.fan_in == 64 and e.fans.fan_out == 64 and e.high == pytest.approx(bound)
        assert 0.95 * bound <= kv.abs().max().item() <= bound
        assert kv.std().item() == pytest.approx(e.std, rel=_rel_tol(kv.numel()))
        part = t.in_proj_weight.detach().double()[e.index]
        assert part.std().item() == pytest.approx(e.std, rel=_rel_tol(part.numel()))
    ko = _values(k._output_dense.kernel)
    e = plan["out_proj.weight"]
    assert e.high == pytest.approx(bound) and ko.abs().max().item() <= bound
    assert ko.std().item() == pytest.approx(e.std, rel=_rel_tol(ko.numel()))
    for dense in (k._query_dense, k._output_dense):
        assert torch.all(_values(dense.bias) == 0)
    assert torch.all(t.in_proj_bias == 0) and torch.all(t.out_proj.bias == 0)


@pytest.mark.filterwarnings("ignore:Do not pass an `input_shape`")  # the tutorial's snippet, verbatim
def test_keras_snippet_plans_and_reinitializes(keras):
    from keras import Sequential
    from keras.layers import Dense

    model = Sequential([Dense(16, input_shape=(1, 5), activation='relu'),
                        Dense(32, activation='relu', kernel_initializer='glorot_uniform'),
                        Dense(2, activation='softmax')])
    x = torch.randn(4, 1, 5)
    plan = initlab.plan(model, preset="keras")
    kernel = plan.entries[0]
    # Keras numbers layer names globally (dense, dense_5, ...), so match the layer's own name.
    assert kernel.path.endswith(f"{model.layers[0].name}/kernel")
    assert kernel.shape == (5, 16) and kernel.layout == "keras"
    assert (kernel.fans.fan_in, kernel.fans.fan_out) == (5, 16)
    assert kernel.initializer.name == "GlorotUniform" and "layer's own" in kernel.why
    before = _values(model.layers[0].kernel).clone()
    plan.apply(seed=0)
    after = _values(model.layers[0].kernel)
    assert not torch.equal(before, after) and after.abs().max().item() <= kernel.high
    assert model(x).shape == (4, 1, 2)

    auto = initlab.plan(model, preset="auto")
    names = [e.initializer.name for e in auto.entries if e.path.endswith("kernel")]
    assert names == ["Orthogonal", "Orthogonal", "GlorotUniform"]
    assert "relu" in auto.entries[0].why and "softmax" in auto.entries[4].why
    auto.apply(seed=1)
    assert torch.isfinite(model(x)).all()
    # the same seed gives the same values
    first = _values(model.layers[1].kernel).clone()
    auto.apply(seed=1)
    assert torch.equal(first, _values(model.layers[1].kernel))


def test_keras_layouts_and_gate_orders(keras):
    inp = keras.Input((8, 8, 4))
    h = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    h = keras.layers.DepthwiseConv2D(3, activation="relu")(h)
    model = keras.Model(inp, h)
    plan = initlab.plan(model, "auto")
    conv, dw = plan.entries[0], plan.entries[2]
    assert conv.layout == "keras" and conv.shape == (3, 3, 4, 8) and (conv.fans.fan_in, conv.fans.fan_out) == (36, 72)
    assert dw.layout == "keras_depthwise" and dw.fans.fan_in == 9 and dw.initializer.name == "HeUniform"
    keras_plan = initlab.plan(model, "keras")
    assert keras_plan.entries[2].fans.fan_in == 72  # Keras's own heuristic: in·∏k for a depthwise kernel

    g = keras.layers.GRU(4)
    g.build((None, 3, 2))
    labels = [e.part for e in initlab.plan(g, "auto").entries if e.path.endswith("recurrent_kernel]")
              or "recurrent_kernel[" in e.path]
    assert labels == ["z", "r", "h"]  # Keras's gate order
    torch_labels = [e.part for e in initlab.plan(nn.GRU(2, 4), "auto").entries if e.param_path == "weight_hh_l0"]
    assert torch_labels == ["r", "z", "n"]  # torch's


def test_keras_activation_layers_are_followed(keras):
    L = keras.layers
    model = keras.Sequential([keras.Input((5,)), L.Dense(8), L.BatchNormalization(), L.LeakyReLU(negative_slope=0.3),
                              L.Dense(8, activation="leaky_relu"), L.Dense(6), L.Dropout(0.1), L.Activation("tanh"),
                              L.Dense(3)])
    plan = initlab.plan(model, "auto")
    kernels = [e for e in plan.entries if e.path.endswith("kernel")]
    assert kernels[0].initializer.gain == pytest.approx(math.sqrt(2 / (1 + 0.3**2)))
    assert "batch_normalization" in kernels[0].why
    assert kernels[1].initializer.gain == pytest.approx(math.sqrt(2 / (1 + 0.2**2)))  # Keras's leaky_relu slope
    assert kernels[2].initializer.name == "Orthogonal" and "tanh" in kernels[2].why and "dropout" in kernels[2].why
    variance = initlab.plan(model, "auto", options={"dense": "variance"})
    kernels = [e for e in variance.entries if e.path.endswith("kernel")]
    assert kernels[0].initializer.get_config()["a"] == pytest.approx(0.3)
    assert kernels[2].initializer.name == "GlorotUniform"
    assert "no nonlinearity follows" in kernels[3].why


def test_keras_preset_conv_depthwise_embedding_gru_match_keras(keras):
    keras.utils.set_random_seed(1)
    L = keras.layers
    pairs = []
    conv = L.Conv2D(32, 3, groups=4)
    conv.build((None, 8, 8, 16))
    pairs.append((conv.kernel, nn.Conv2d(16, 32, 3, groups=4), "weight"))
    dw = L.DepthwiseConv2D(3, depth_multiplier=2)
    dw.build((None, 8, 8, 16))
    pairs.append((dw.kernel, nn.Conv2d(16, 32, 3, groups=16), "weight"))
    emb = L.Embedding(500, 16)
    emb.build((None, 4))
    pairs.append((emb.embeddings, nn.Embedding(500, 16), "weight"))
    gru = L.GRU(16)
    gru.build((None, 3, 8))
    pairs.append((gru.cell.kernel, nn.GRU(8, 16), "weight_ih_l0"))
    pairs.append((gru.cell.recurrent_kernel, nn.GRU(8, 16), "weight_hh_l0"))
    for var, module, name in pairs:
        kv = _values(var)
        e = initlab.plan(module, "keras")[name]
        if e.initializer.name == "Orthogonal":
            assert kv.pow(2).mean().item() == pytest.approx(e.std**2, rel=1e-5), name
            continue
        assert kv.abs().max().item() <= e.high + 1e-7 and kv.abs().max().item() >= 0.95 * e.high, (type(module), name)
        assert kv.std().item() == pytest.approx(e.std, rel=_rel_tol(kv.numel())), (type(module), name)
    assert initlab.plan(nn.Conv2d(16, 32, 3, groups=16), "keras")["weight"].high == pytest.approx(0.1925, abs=1e-4)
