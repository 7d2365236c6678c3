"""Reading parameters from the ops that use them (initlab.plan.trace) and planning modules initlab does not know.

The oracle for the laws is initlab's own plan of the same architecture written with torch modules: a layer
that only the trace understands (an HF-Conv1D-like ``addmm(b, x, W)``, a manual RMSNorm) must get exactly
what each preset gives ``nn.Linear`` / ``nn.LayerNorm`` of the same shape.
"""

import math
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initlab
from initlab.plan.apply import entry_seed
from initlab.plan.trace import trace_model

pytestmark = pytest.mark.usefixtures("one_thread")

PRESETS = ("auto", "torch", "keras", "flax")


class Conv1D(nn.Module):
    """HF transformers' Conv1D: a dense layer whose weight is stored (in, out) and applied with addmm."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        size_out = (*x.size()[:-1], self.weight.shape[1])
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(size_out)


class RMSNorm(nn.Module):
    """Llama's RMSNorm, written out: the weight multiplies h·rsqrt(mean(h²) + ε)."""

    def __init__(self, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.full((d,), 0.5))

    def forward(self, h):
        var = h.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (h * torch.rsqrt(var + 1e-6)).to(h.dtype)


class Mlp(nn.Module):
    def __init__(self, d: int, hidden: int, dense: type = Conv1D):
        super().__init__()
        make = (lambda i, o: Conv1D(o, i)) if dense is Conv1D else (lambda i, o: nn.Linear(i, o))
        self.norm = RMSNorm(d) if dense is Conv1D else nn.LayerNorm(d, elementwise_affine=True, bias=False)
        self.fc = make(d, hidden)
        self.proj = make(hidden, d)

    def forward(self, x):
        return x + self.proj(F.relu(self.fc(self.norm(x))))


def _pair(dense: type) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(Mlp(16, 48, dense), Mlp(16, 48, dense))


@pytest.mark.parametrize("preset", PRESETS)
def test_conv1d_and_rmsnorm_get_what_each_preset_gives_linear_and_layernorm(preset):
    x = torch.randn(4, 16)
    ours = initlab.plan(_pair(Conv1D), preset, example_input=x)
    ref = initlab.plan(_pair(nn.Linear), preset, example_input=x)
    assert not [e.path for e in ours if e.initializer is None]
    pairs = {"0.fc.weight": "0.fc.weight", "0.fc.bias": "0.fc.bias", "0.proj.weight": "0.proj.weight",
             "1.norm.weight": "1.norm.weight"}
    for p, q in pairs.items():
        a, b = ours[p], ref[q]
        assert a.initializer == b.initializer, (p, a.initializer, b.initializer)
        assert a.fans == b.fans and a.std == pytest.approx(b.std), p
    w = ours["0.fc.weight"]
    assert w.layout == "keras" and w.shape == (16, 48) and (w.fans.fan_in, w.fans.fan_out) == (16, 48)
    assert "used as addmm(b, x, W) by 0.fc (Conv1D): a dense kernel in Keras layout (in, out), fan_in 16" in w.why
    assert "like nn.Linear's weight" in w.why
    assert "multiplies a normalized tensor in 0.norm (RMSNorm)" in ours["0.norm.weight"].why
    assert ours["0.norm.weight"].initializer.name == "Ones"


def test_keras_layout_kernel_is_filled_with_its_true_fans():
    # torch preset: U(±1/√fan_in) with fan_in = 16 (the rows of the (in, out) weight), not 48.
    model = _pair(Conv1D)
    plan = initlab.plan(model, "torch", example_input=torch.randn(4, 16))
    plan.apply(seed=0)
    w = model[0].fc.weight.detach()
    bound = 1 / math.sqrt(16)
    assert plan["0.fc.weight"].high == pytest.approx(bound)
    # Sample std of n = 768 i.i.d. U(±b) values: sd(s)/σ ≈ √((κ−1)/(4n)) with kurtosis κ = 1.8 for the
    # uniform law, 0.0161 here; 6 sd = 9.7 %. The wrong fan (48) would give a std 42 % smaller.
    n = w.numel()
    tol = 6 * math.sqrt(0.8 / (4 * n))
    assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=tol)
    assert float(w.abs().max()) <= bound


class Toy(nn.Module):
    """Every reading the trace makes, in one forward (after proto14/check_optrace.py)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Parameter(torch.randn(50, 16))          # embedding, then tied readout x @ emb.T
        self.w_t = nn.Parameter(torch.randn(24, 16))          # torch layout used as x @ W.T
        self.w_k = nn.Parameter(torch.randn(24, 16))          # keras layout (in 24, out 16) used as x @ W
        self.w_addmm_t = nn.Parameter(torch.randn(16, 24))    # torch layout used through addmm(b, x, W.t())
        self.b_addmm = nn.Parameter(torch.zeros(16))
        self.w_ein = nn.Parameter(torch.randn(4, 16, 8))      # einsum 'bsd,hdk->bshk': fan_in 16, fan_out 32
        self.ln_w = nn.Parameter(torch.ones(16))              # manual LayerNorm
        self.ln_b = nn.Parameter(torch.zeros(16))
        self.gemma_w = nn.Parameter(torch.zeros(16))          # (1 + w) * rms(x)
        self.fln_w = nn.Parameter(torch.ones(16))             # F.layer_norm without weight, then w * z + b
        self.fln_b = nn.Parameter(torch.zeros(16))
        self.frms_w = nn.Parameter(torch.ones(16))            # F.rms_norm(x, (16,), w)
        self.shift = nn.Parameter(torch.zeros(16))            # added after a nonlinearity: no kernel before it
        self.cls = nn.Parameter(torch.zeros(1, 1, 16))        # concatenated token
        self.pos = nn.Parameter(torch.zeros(1, 6, 16))        # additive position embedding
        self.dw = nn.Parameter(torch.randn(8, 1, 3, 3))       # depthwise conv: true fan_in 9
        self.up = nn.Parameter(torch.randn(8, 4, 2, 2))       # conv_transpose2d (in 8, out 4): fans (32, 16)
        self.mystery = nn.Parameter(torch.randn(16))          # multiplies a plain activation: unknown
        self.unused = nn.Parameter(torch.randn(3))

    def forward(self, ids, img):
        x = F.embedding(ids, self.emb)                                    # (B, S, 16)
        h = F.gelu(x @ self.w_t.T)                                        # (B, S, 24)
        h2 = torch.matmul(h, self.w_k)                                    # (B, S, 16)
        h3 = torch.addmm(self.b_addmm, h.reshape(-1, 24), self.w_addmm_t.t()).view_as(h2)
        e = torch.einsum("bsd,hdk->bshk", h3, self.w_ein)
        mu = h2.mean(-1, keepdim=True)
        var = h2.var(-1, keepdim=True, unbiased=False)
        ln = (h2 - mu) / torch.sqrt(var + 1e-5) * self.ln_w + self.ln_b
        g = (1.0 + self.gemma_w) * (ln * torch.rsqrt(ln.pow(2).mean(-1, keepdim=True) + 1e-6))
        z = self.fln_w * F.layer_norm(g, (16,)) + self.fln_b
        z = F.rms_norm(z, (16,), self.frms_w)
        z = F.relu(z) + self.shift
        z = z * self.mystery
        z = torch.cat([self.cls.expand(z.shape[0], -1, -1), z], 1) + self.pos
        out = F.conv_transpose2d(F.conv2d(img, self.dw, padding=1, groups=8), self.up, stride=2)
        return z @ self.emb.T, e, out


def _toy_input():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 50, (2, 5), generator=g), torch.randn(2, 8, 4, 4, generator=g)


def test_every_reading_role_layout_and_fans():
    t = trace_model(Toy(), _toy_input())
    r = t.readings
    expect = {
        "emb": ("embedding", (50, 16)), "w_t": ("kernel", (16, 24)), "w_k": ("kernel", (24, 16)),
        "w_addmm_t": ("kernel", (24, 16)), "b_addmm": ("bias", None), "w_ein": ("kernel", (16, 32)),
        "ln_w": ("norm_scale", None), "ln_b": ("norm_shift", None), "gemma_w": ("norm_offset_scale", None),
        "fln_w": ("norm_scale", None), "fln_b": ("norm_shift", None), "frms_w": ("norm_scale", None),
        "shift": ("shift", None), "cls": ("token", (1, 16)), "pos": ("position_embedding", (6, 16)),
        "dw": ("kernel", (9, 9)), "up": ("kernel", (32, 16)), "mystery": ("unknown", None),
        "unused": ("unused", None),
    }
    got = {n: (x.role, None if x.fans is None or e[1] is None else (x.fans.fan_in, x.fans.fan_out))
           for n, x in r.items() for e in [expect[n]]}
    assert got == expect
    assert (r["w_t"].layout, r["w_k"].layout, r["w_addmm_t"].layout) == ("torch", "keras", "torch")
    assert r["b_addmm"].kernel == "w_addmm_t" and r["gemma_w"].identity == 0.0
    assert r["up"].layout == "torch_transposed" and r["dw"].groups == 8
    assert r["mystery"].how == "first used by mul[1] with a plain activation (a layer scale?) in the model"
    assert "no op read it" in r["unused"].how
    assert [u.position for u in r["emb"].uses] == ["embedding[weight]", "matmul[1]"]


def test_plan_reads_unknown_modules_and_explains_what_it_cannot():
    class Holder(nn.Module):  # a module initlab does not know, owning every Toy parameter
        def __init__(self):
            super().__init__()
            self.toy = Toy()

        def forward(self, ids, img):
            return self.toy(ids, img)

    x = _toy_input()
    plan = initlab.plan(Holder(), "auto", example_input=x)
    left = {e.path: e.why for e in plan if e.initializer is None}
    assert set(left) == {"toy.mystery", "toy.unused"}
    assert left["toy.mystery"].startswith("first used by mul[1] with a plain activation (a layer scale?) in toy; "
                                          "initlab does not know Toy")
    assert plan["toy.gemma_w"].initializer.name == "Zeros" and "identity" in plan["toy.gemma_w"].why
    assert plan["toy.shift"].initializer.name == "Zeros"
    assert plan["toy.pos"].initializer == initlab.RandomNormal(0.0, 1.0)  # auto's embedding law
    assert plan["toy.w_ein"].fans == initlab.Fans(16, 32)
    # without example_input nothing runs, and the plan says what one would bring
    bare = initlab.plan(Holder(), "auto")
    assert all(e.initializer is None for e in bare) and bare.trace is None and bare.residual is None
    assert any("with example_input=<a batch> initlab runs the model once" in n for n in bare.notes)


@pytest.mark.parametrize(("preset", "init"), [
    ("torch", initlab.RandomNormal(0.0, 1.0)), ("keras", initlab.RandomUniform(-0.05, 0.05)),
    ("flax", initlab.VarianceScaling(1.0, "fan_in", "untruncated_normal")), ("auto", initlab.RandomNormal(0.0, 1.0)),
])
def test_tokens_and_position_embeddings_get_each_presets_embedding_law(preset, init):
    plan = initlab.plan(Toy(), preset, example_input=_toy_input())
    for p in ("cls", "pos"):
        assert plan[p].initializer == init, (p, plan[p].initializer)
    if preset == "flax":  # Flax's Embed: N(0, 1/√features), features = 16
        assert plan["pos"].std == pytest.approx(1 / math.sqrt(16))


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(40, 16)
        self.body = nn.Linear(16, 16)
        self.head = nn.Linear(16, 40, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, ids):
        return self.head(torch.tanh(self.body(self.wte(ids))))


def test_tied_parameter_is_one_entry_initialized_once():
    model = TiedLM()
    ids = torch.randint(0, 40, (2, 7))
    plan = initlab.plan(model, "auto", example_input=ids)
    assert [e.path for e in plan if "wte" in e.path or "head" in e.path] == ["wte.weight"]
    e = plan["head.weight"]  # the alias finds the one entry
    assert e.path == "wte.weight" and e.aliases == ("head.weight",)
    assert "tied: also head.weight (used by linear[weight] in head as the readout" in e.why
    assert "initialized once" in e.why
    plan.apply(seed=3)
    assert model.head.weight is model.wte.weight
    expect = e.initializer.sample(e.shape, layout=e.layout, seed=entry_seed(3, "wte.weight"), fans=e.fans)
    assert torch.equal(model.wte.weight.detach(), expect)
    # a rule naming the alias applies to the tensor, under its first name
    ruled = initlab.plan(model, "auto", example_input=ids, rules={"head.weight": "zeros"})
    assert ruled["wte.weight"].initializer.name == "Zeros" and ruled["wte.weight"].rule == "'head.weight'"
    # without example_input the plan still has one entry and names the alias
    bare = initlab.plan(model, "torch")
    assert "tied: also head.weight" in bare["wte.weight"].why


def test_tied_parameter_stays_tied_when_a_meta_model_is_materialized():
    with torch.device("meta"):
        model = TiedLM()
    ids = torch.randint(0, 40, (2, 7))
    plan = initlab.plan(model, "auto", example_input=ids.to("meta"))
    plan.apply(seed=0, device="cpu")
    assert model.head.weight is model.wte.weight and model.wte.weight.device.type == "cpu"
    cpu = TiedLM()
    initlab.plan(cpu, "auto", example_input=ids).apply(seed=0)
    assert all(torch.equal(a, b) for a, b in zip(cpu.state_dict().values(), model.state_dict().values(), strict=True))


def test_meta_model_with_unknown_modules_plans_like_its_cpu_twin():
    x = torch.randn(4, 16)
    with torch.device("meta"):
        meta = _pair(Conv1D)
    cpu = _pair(Conv1D)
    p_meta = initlab.plan(meta, "auto", example_input=x.to("meta"))
    p_cpu = initlab.plan(cpu, "auto", example_input=x)
    assert [(e.path, e.initializer, e.fans) for e in p_meta] == [(e.path, e.initializer, e.fans) for e in p_cpu]
    assert [a.out_proj for s in p_meta.residual for a in s.adds] == ["0.proj.weight", "1.proj.weight"]
    assert all(a.ms_skip is None for s in p_meta.residual for a in s.adds)  # no values on meta
    p_meta.apply(seed=0, device="cpu")
    p_cpu.apply(seed=0)
    for (n, a), b in zip(meta.named_parameters(), cpu.parameters(), strict=True):
        assert torch.equal(a, b), n


class Noisy(nn.Module):
    """Draws from the global RNG in every forward (noise injection), in train and eval mode alike."""

    def __init__(self):
        super().__init__()
        self.fc = Conv1D(8, 8)
        self.drop = nn.Dropout(0.5)
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        if x.shape[-1] != 8:
            raise RuntimeError("expected 8 features")
        return self.norm(self.drop(self.fc(x)) + 0.01 * torch.randn_like(x))


def test_trace_leaves_the_model_exactly_as_it_was():
    model = Noisy().train()
    model.norm.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, bad = torch.randn(3, 8), torch.randn(3, 5)
    rng = torch.get_rng_state()
    plan = initlab.plan(model, "torch", example_input=x)
    assert plan["fc.weight"].initializer.name == "TorchDefault"
    assert torch.equal(torch.get_rng_state(), rng)  # the forward's randn_like drew from a forked RNG
    assert model.training and model.fc.training and not model.norm.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert not any(weakref.getweakrefs(p) for p in model.parameters())
    # a forward that fails: an error naming example_input, and the model as before
    with pytest.raises(ValueError, match="example_input: running the model on it failed"):
        initlab.plan(model, "torch", example_input=bad)
    assert model.training and not model.norm.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert torch.equal(torch.get_rng_state(), rng)


def test_traced_kernel_is_followed_to_its_activation():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Parameter(torch.randn(16, 32))
            self.w2 = nn.Parameter(torch.randn(32, 16))
            self.b1 = nn.Parameter(torch.zeros(32))

        def forward(self, x):
            return torch.tanh(F.leaky_relu(x @ self.w1 + self.b1, 0.2) @ self.w2)

    plan = initlab.plan(Block(), "auto", example_input=torch.randn(4, 16), options={"dense": "variance"})
    assert plan["w1"].initializer == initlab.KaimingUniform(a=0.2, nonlinearity="leaky_relu")
    assert "followed by leaky_relu" in plan["w1"].why and "its bias" in plan["w1"].why
    assert plan["w2"].initializer.name == "GlorotUniform" and "followed by tanh" in plan["w2"].why
    assert plan["b1"].initializer.name == "Zeros" and "its bias" in plan["b1"].why
