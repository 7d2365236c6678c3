"""Preset 'hf' against its oracle, transformers' own ``model.init_weights()`` (transformers 5.x), on the zoo's
GPT-2, BERT, Llama and ViT configs (tests/zoo.py): the same parameters touched, each parameter's law within
sampling error of what ``init_weights`` draws, and with the model's seed the very same values.

The oracle runs ``init_weights()`` on a second copy of the model whose ``_is_hf_initialized`` marks are cleared
(transformers skips a marked module: a built model is marked, so a plain ``init_weights()`` writes nothing).
"""

import math

import pytest
import torch
from torch import nn

import initlab
from tests import zoo

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("transformers")

NAMES = ("gpt2", "bert", "llama", "vit")
SEED = 3

#: How far (in standard errors) a sample statistic may sit from its target. With ~40 parameters × 4 models
#: × 2 statistics, 5 SE keeps a false alarm below 10⁻⁴ for the whole file (a normal tail beyond 5σ is 6·10⁻⁷),
#: while the test below shows the bound still tells GPT-2's scaled c_proj (0.02/√(2L)) from 0.02.
K_SE = 5.0


def _clear_marks(model: nn.Module) -> None:
    for obj in (*model.modules(), *model.parameters()):
        obj.__dict__.pop("_is_hf_initialized", None)


def _oracle(name: str, seed: int = SEED, fill: float | None = None) -> nn.Module:
    """The zoo model after ``torch.manual_seed(seed); model.init_weights()`` (its global RNG restored after);
    ``fill``: every parameter filled with this value first, so what init_weights does not write shows."""
    model, _ = zoo.build(name)
    if fill is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(fill)
    _clear_marks(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.init_weights()
    return model


def _names(model: nn.Module) -> dict[int, str]:
    """Tensor id -> its first name (a tied tensor has several names; the sets below compare tensors)."""
    out: dict[int, str] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        out.setdefault(id(p), n)
    return out


@pytest.fixture(scope="module", params=NAMES)
def case(request):
    name = request.param
    model, _ = zoo.build(name)
    plan = initlab.plan(model, "hf")
    return name, model, plan


# ---- (a) the same set of parameters ------------------------------------------------------------------

def test_hf_touches_exactly_the_parameters_init_weights_writes(case):
    name, model, plan = case
    # NaN everywhere, then init_weights(): a tensor it writes in full has no NaN left; one it writes in part
    # (never, on these four) would show as partly NaN.
    ref = _oracle(name, fill=float("nan"))
    names = _names(ref)
    written = {names[id(p)] for p in ref.parameters() if not p.isnan().any()}
    partly = {names[id(p)] for p in ref.parameters() if p.isnan().any() and not p.isnan().all()}
    assert partly == set()
    assert len(written) > 15  # the oracle saw the model's own init run (not an all-marked no-op)

    own = _names(model)
    entry_of = {}
    for e in plan.entries:
        if e.index is None:  # a whole tensor (row entries, the padding rows, are checked below)
            entry_of[own[id(model.get_parameter(e.param_path))]] = e
    assert set(entry_of) == set(names.values())  # every tensor has one entry, a tied one once
    planned = {n for n, e in entry_of.items() if e.initializer is not None}
    left = {n: e.why for n, e in entry_of.items() if e.initializer is None}
    assert planned == written, (sorted(planned ^ written), left)


# ---- (b) the laws: within sampling error of init_weights' draws -------------------------------------

def _rows_out(model: nn.Module, plan: initlab.Plan, path: str) -> list[int]:
    """The rows of ``path`` that a row entry (a padding row) sets apart from the tensor's law."""
    rows: list[int] = []
    for e in plan.entries:
        if e.index is not None and e.param_path == path:
            sl = e.index[0]
            rows.extend(range(sl.start, sl.stop))
    return rows


def _body(t: torch.Tensor, rows: list[int]) -> torch.Tensor:
    keep = torch.ones(t.shape[0], dtype=torch.bool)
    keep[rows] = False
    return t.detach()[keep].double().flatten()


def test_hf_laws_match_init_weights_within_sampling_error(case):
    name, model, plan = case
    ref = _oracle(name)
    mine, _ = zoo.build(name)
    initlab.plan(mine, "hf", options={"seeding": "by_name"}).apply(seed=SEED + 1)  # independent draws
    checked = 0
    for e in plan.entries:
        if e.initializer is None or e.index is not None:
            continue
        rows = _rows_out(model, plan, e.param_path)
        r, m = _body(ref.get_parameter(e.param_path), rows), _body(mine.get_parameter(e.param_path), rows)
        n = r.numel()
        if e.std == 0:  # a constant (ones, zeros): the same values exactly
            assert torch.equal(r, m) and float(r.std()) == 0, e.path
            continue
        # The sample standard deviation s of n i.i.d. values with std σ and kurtosis κ has
        # Var(s²) ≈ σ⁴(κ − 1)/n, so SE(s) ≈ σ·√((κ − 1)/(4n)) = σ/√(2n) for a normal (κ = 3); the laws here are
        # normal, truncated normal or uniform (κ ≤ 3), so σ/√(2n) bounds their SE. One sample against the law
        # the plan states (catches a wrong table entry): |s_ref − σ| ≤ K·σ/√(2n). Two independent samples
        # (init_weights' and hf's own draws): SE(s_ref − s_hf) = σ·√(2/(2n)) = σ/√n, and for the means
        # SE(m_ref − m_hf) = σ·√(2/n).
        sigma = e.std
        s_ref, s_mine = float(r.std()), float(m.std())
        assert abs(s_ref - sigma) <= K_SE * sigma / math.sqrt(2 * n), (e.path, s_ref, sigma, n)
        assert abs(s_ref - s_mine) <= K_SE * sigma / math.sqrt(n), (e.path, s_ref, s_mine, n)
        assert abs(float(r.mean()) - float(m.mean())) <= K_SE * sigma * math.sqrt(2 / n), e.path
        checked += 1
    assert checked >= 8, checked


def test_the_bound_tells_gpt2_scaled_projections_from_unscaled():
    # The check above can fail: GPT-2's c_proj is drawn with 0.02/√(2·n_layer) = 0.01 (2 layers); its
    # 32·32 = 1024 values put the 5-SE band at 0.01 ± 5·0.01/√2048 = ±0.0011, far from 0.02.
    model, _ = zoo.build("gpt2")
    e = initlab.plan(model, "hf")["transformer.h.1.attn.c_proj.weight"]
    assert e.std == pytest.approx(0.02 / math.sqrt(4), rel=1e-12)
    assert "n_layer" in e.why
    s = float(_oracle("gpt2").get_parameter("transformer.h.1.attn.c_proj.weight").detach().std())
    n = 32 * 32
    assert abs(s - e.std) <= K_SE * e.std / math.sqrt(2 * n) < abs(s - 0.02)


# ---- (c) the model's seed: the same values ---------------------------------------------------------

def test_hf_apply_with_seed_reproduces_init_weights_bit_for_bit(case):
    name, _, _ = case
    model, _ = zoo.build(name)
    plan = initlab.plan(model, "hf")
    rng = torch.get_rng_state()
    plan.apply(seed=SEED)
    assert torch.equal(torch.get_rng_state(), rng)  # the user's global generator is not used
    ref = _oracle(name)
    ref_p = dict(ref.named_parameters())
    (step,) = [s for s in plan.post_steps if s.name == "hf_replay"]
    for path, p in model.named_parameters():
        if name == "bert" and path == "bert.embeddings.word_embeddings.weight":
            # The one exception the plan states: init_weights() on the built model redraws the word
            # embeddings' padding row through the tied decoder; Model(config) and hf keep it zero.
            assert "rows 0:1 are set again as at construction" in step.why
            assert torch.equal(p[1:], ref_p[path][1:]) and torch.equal(p[0], torch.zeros_like(p[0]))
            assert not torch.equal(ref_p[path][0], p[0])
            continue
        assert torch.equal(p, ref_p[path]), path
    # another seed, other values: the replay reads apply's seed
    other, _ = zoo.build(name)
    initlab.plan(other, "hf").apply(seed=SEED + 1)
    assert not torch.equal(next(other.parameters()), next(model.parameters()))


@pytest.mark.parametrize("name", ["llama", "bert"])
def test_hf_on_the_meta_device_gives_init_weights_values_and_buffers(name):
    # A model built on meta: apply(device="cpu") materializes it; the buffers its own _init_weights computes
    # (Llama's RoPE inv_freq, BERT's position_ids) would otherwise be uninitialized memory.
    with torch.device("meta"):
        model, _ = zoo.BUILDERS[name]()
    plan = initlab.plan(model, "hf")
    assert [s.name for s in plan.post_steps] == ["hf_buffers", "hf_replay"]
    out = plan.apply(seed=SEED, device="cpu")
    ref = _oracle(name)
    for (path, b), (_, r) in zip(out.named_buffers(), ref.named_buffers(), strict=True):
        assert torch.equal(b, r), path
    for (path, p), (_, r) in zip(out.named_parameters(), ref.named_parameters(), strict=True):
        if path == "bert.embeddings.word_embeddings.weight":  # the stated padding-row exception
            p, r = p[1:], r[1:]
        assert torch.equal(p, r), path
    # a model that is not on meta needs no such step
    assert "hf_buffers" not in [s.name for s in initlab.plan(zoo.build(name)[0], "hf").post_steps]


def test_hf_by_name_keeps_the_laws_but_not_the_values():
    model, _ = zoo.build("llama")
    plan = initlab.plan(model, "hf", options={"seeding": "by_name"})
    assert plan.post_steps == [] or all(s.name != "hf_replay" for s in plan.post_steps)
    assert any("seeding='by_name'" in n for n in plan.notes)
    plan.apply(seed=SEED)
    ref = _oracle("llama")
    w, r = model.model.layers[0].mlp.up_proj.weight, ref.model.layers[0].mlp.up_proj.weight
    assert not torch.equal(w, r)


def test_hf_plan_says_what_it_reproduces():
    model, _ = zoo.build("gpt2")
    plan = initlab.plan(model, "hf")
    assert any("GPT2PreTrainedModel._init_weights" in n for n in plan.notes)
    e = plan["lm_head.weight"]  # the tied head is the embedding's entry, initialized once
    assert e.path == "transformer.wte.weight" and e.aliases == ("lm_head.weight",)
    assert "initializer_range" in e.why


# ---- errors --------------------------------------------------------------------------------------------

def test_hf_on_a_model_that_is_not_from_transformers_is_a_clear_error():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"model: preset 'hf' .* Sequential is not a transformers PreTrainedModel"
                       r".*'torch', 'keras', 'flax' or 'auto'"):
        initlab.plan(model, "hf")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_hf_bad_seeding_option_names_it():
    model, _ = zoo.build("llama")
    with pytest.raises(ValueError, match=r"seeding"):
        initlab.plan(model, "hf", options={"seeding": "global"})
