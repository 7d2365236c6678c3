"""Plan.apply's rng choice, binding by path and planning on a twin, on one process. The oracles are the
catalogue's own fills: ``rng="torch"`` must stay the initializers' values (the Keras/torch.nn.init
bit-identity the catalogue tests pin), ``rng="counter"`` must be fill_counter with the entry seed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import initlab
from initlab.experiments.gpt import GPT, GPTConfig
from initlab.initializers import Initializer
from initlab.initializers.counter import entry_seed
from initlab.initializers.counter_fill import fill_counter
from tests._sharding import CASES, WHOLE, holder_plan

CFG = GPTConfig(vocab=50, dim=16, n_layers=2, n_heads=2, bias=True)


def _gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(CFG)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_default_rng_is_torch_and_keeps_the_initializers_values():
    m = _gpt()
    p = initlab.plan(m, "keras")
    p.apply(seed=3)
    for e in p.entries:
        want = e.initializer.sample(e.shape, layout=e.layout, fans=e.fans, seed=entry_seed(3, e.path))
        assert torch.equal(m.get_parameter(e.param_path).detach(), want), e.path
        assert e.rng == "torch"
    assert p.applied == {"seed": 3, "rng": "torch", "ranks": 1, "entries": {"torch": len(p.entries)}}


def test_counter_rng_is_the_counter_fill_of_each_entry_and_says_so():
    shapes_inits = [(shape, init) for _, init, shape, _ in CASES]
    p = holder_plan(shapes_inits)
    p.apply(seed=5, rng="counter", device="cpu")
    for (name, init, shape, layout), e in zip(CASES, p.entries, strict=True):
        got = p.model.get_parameter(e.param_path).detach()
        if name in WHOLE:  # drawn whole by the initializer itself, QR on one thread
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                want = init(torch.empty(shape), seed=entry_seed(5, e.path), layout=layout)
            finally:
                torch.set_num_threads(threads)
            assert e.rng == "torch"
        else:
            want = fill_counter(init, torch.empty(shape), seed=entry_seed(5, e.path), layout=layout)
            assert e.rng == "counter"
        assert torch.equal(got, want), name
    assert p.applied["entries"] == {"counter": len(CASES) - len(WHOLE), "torch": len(WHOLE)}
    assert "applied: seed 5, rng='counter'" in str(p) and p.as_dict()["entries"][0]["rng"] == "counter"


def test_counter_slices_count_within_their_block():
    """Packed parameters (MultiheadAttention's q/k/v, LSTM gates, an embedding's padding row): each entry's
    values are its own block's counter fill, keyed by the entry's path."""
    m = nn.ModuleDict({"attn": nn.MultiheadAttention(8, 2), "lstm": nn.LSTM(4, 6), "emb": nn.Embedding(9, 4, padding_idx=2)})
    p = initlab.plan(m, "keras")
    p.apply(seed=1, rng="counter")
    sliced = [e for e in p.entries if e.index is not None]
    assert len(sliced) >= 4
    for e in sliced:
        block = m.get_parameter(e.param_path).detach()[e.index]
        want = fill_counter(e.initializer, torch.empty(e.shape), seed=entry_seed(1, e.path), layout=e.layout,
                            fans=e.fans) if e.rng == "counter" else None
        if want is not None:
            assert torch.equal(block, want), e.path


def test_counter_apply_is_all_or_nothing():
    class Fails(Initializer):
        name = "Fails"

        def _describe(self, shape, layout, fans):
            return self._desc(shape, layout, fans, "constant", 0.0, 0.0, 0.0, 0.0, "fails")

        def _fill(self, work, desc, gen):
            raise RuntimeError("no values today")

    m = _gpt()
    before = _state(m)
    p = initlab.plan(m, "torch", rules={"output.weight": Fails()})
    with pytest.raises(RuntimeError, match=r"Fails failed on 'output\.weight'.*Nothing was changed"):
        p.apply(seed=0, rng="counter")
    after = _state(m)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_plan_on_a_meta_twin_applies_by_path():
    with torch.device("meta"):
        twin = GPT(CFG)
    p = initlab.plan(twin, "auto", example_input=torch.zeros(2, 5, dtype=torch.long, device="meta"))
    real = GPT(CFG)
    p.apply(seed=2, rng="counter", model=real)
    ref = initlab.plan(GPT(CFG), "auto", example_input=torch.zeros(2, 5, dtype=torch.long))
    assert [(e.path, e.initializer) for e in ref.entries] == [(e.path, e.initializer) for e in p.entries]
    ref_model = ref.apply(seed=2, rng="counter")
    for k, v in _state(real).items():
        assert torch.equal(v, ref_model.get_parameter(k).detach()), k
    assert all(t.is_meta for t in twin.parameters())  # the twin itself is untouched


def test_meta_model_in_counter_mode_materializes_the_same_values():
    with torch.device("meta"):
        meta = GPT(CFG)
    initlab.plan(meta, "torch").apply(seed=4, rng="counter", device="cpu")
    real = _gpt()
    initlab.plan(real, "torch").apply(seed=4, rng="counter")
    for k, v in _state(real).items():
        assert torch.equal(v, meta.get_parameter(k).detach()), k


def test_binding_errors_name_the_argument():
    p = initlab.plan(_gpt(), "torch")
    other = GPT(GPTConfig(vocab=50, dim=16, n_layers=1, n_heads=2, bias=True))
    with pytest.raises(ValueError, match=r"model: \d+ planned parameter\(s\) are not in this model, e.g. 'layers.1"):
        p.apply(model=other)
    wider = GPT(GPTConfig(vocab=60, dim=16, n_layers=2, n_heads=2, bias=True))
    with pytest.raises(ValueError, match=r"model: parameter 'tok_embeddings.weight' has shape \(60, 16\) but the plan"):
        p.apply(model=wider)
    with pytest.raises(TypeError, match=r"model: expected the torch\.nn\.Module"):
        p.apply(model="gpt")
    with pytest.raises(ValueError, match="rng: expected 'torch', 'counter' or None"):
        p.apply(rng="philox")
    with pytest.raises(ValueError, match="matrix_threads: expected an int >= 1 or None"):
        p.apply(rng="counter", matrix_threads=0)


def test_twin_plans_bind_to_the_model_and_check_it():
    with torch.device("meta"):
        twin = GPT(CFG)
    model = _gpt()
    p = initlab.plan(model, "auto", example_input=torch.zeros(2, 5, dtype=torch.long, device="meta"), twin=twin)
    assert p.model is model and p._params["output.weight"] is model.output.weight
    p.apply(seed=0)
    assert not torch.equal(_state(model)["output.weight"], _state(_gpt())["output.weight"])
    with pytest.raises(ValueError, match="twin: it does not match model"):
        initlab.plan(nn.Linear(3, 4), twin=nn.Linear(3, 5))
