"""Real models from transformers and timm (tests/zoo.py): every parameter planned from one forward pass, tied
tensors once, the residual streams found, apply reproducible, the model untouched by planning.

timm imports torchvision; where none can be imported, tests/zoo.py installs a stub of it (see its
docstring): timm's model code needs only torchvision's FrozenBatchNorm2d, which the stub copies.
"""

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import initlab
from tests import zoo

pytestmark = pytest.mark.usefixtures("one_thread")

#: Parameters a zoo model may leave as is, with the reason accepted for each. None is needed: every
#: parameter of the nine models is read from the op that uses it (ConvNeXt's layer-scale gammas included,
#: as branch scales). A new entry here must say why the parameter cannot be planned.
ACCEPTED_LEFT: dict[str, dict[str, str]] = {}

#: Per model: (number of parameter tensors, planned entries, tied tensors, [(stream, N, placement), ...]).
EXPECTED = {
    "gpt2": (28, 28, 1, [("transformer.h", 4, "pre")]),
    "bert": (42, 43, 2, [("bert.encoder.layer", 4, "post")]),  # + the padding row of the word embeddings
    "llama": (21, 22, 0, [("model.layers", 4, "pre")]),  # + the padding row
    "t5": (47, 47, 1, [("encoder.block", 4, "pre"), ("decoder.block", 6, "pre")]),
    "vit": (40, 40, 0, [("vit.layers", 4, "pre")]),
    "resnet18": (62, 62, 0, [("layer1", 2, "?"), ("layer2", 2, "?"), ("layer3", 2, "?"), ("layer4", 2, "?")]),
    "convnext_atto": (128, 128, 0, [(f"stages.{i}.blocks", n, "pre") for i, n in enumerate((2, 2, 6, 2))]),
    "mobilenetv3_small_050": (142, 142, 0, [("blocks.1.1", 1, "?"), ("blocks", 4, "pre"), ("blocks.4", 2, "pre")]),
    "vit_tiny": (32, 32, 0, [("blocks", 4, "pre")]),
}


def _build(name):
    pytest.importorskip(zoo.library(name))
    return zoo.build(name)


def _call(model, x):
    return model(**x) if isinstance(x, dict) else model(x)


def _logits(out):
    return out if isinstance(out, torch.Tensor) else out.logits


@pytest.mark.parametrize("name", zoo.NAMES)
def test_zoo_model_plans_every_parameter_and_applies_reproducibly(name):
    model, x = _build(name)
    n_params, n_entries, n_tied, streams = EXPECTED[name]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    plan = initlab.plan(model, "auto", example_input=x)
    # planning is a dry run: values, mode and the global RNG as they were
    assert torch.equal(torch.get_rng_state(), rng) and not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    left = {e.path: e.why for e in plan if e.initializer is None}
    assert {p: w for p, w in left.items() if p not in ACCEPTED_LEFT.get(name, {})} == {}
    assert (len(plan._params), len(plan.entries)) == (n_params, n_entries)
    assert len(plan._params) == len(list(model.parameters()))  # each tensor once (named_parameters dedups)
    assert sum(1 for e in plan if e.aliases and e.part is None) == n_tied
    assert [(s.name, s.n_branches, s.placement) for s in plan.residual] == streams
    assert not plan.trace.flow.errors

    plan.apply(seed=0)
    twin, _ = zoo.build(name, seed=1)  # other construction values: apply must overwrite every one
    initlab.plan(twin, "auto", example_input=x).apply(seed=0)
    for (k, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b), k
    with torch.no_grad():
        assert torch.isfinite(_logits(_call(model, x))).all()


def test_gpt2_conv1d_is_a_keras_layout_dense_kernel_under_every_preset():
    model, x = _build("gpt2")
    laws = {"auto": "VarianceScaling", "torch": "TorchDefault", "keras": "GlorotUniform", "flax": "LecunNormal"}
    for preset, law in laws.items():
        plan = initlab.plan(model, preset, example_input=x)
        e = plan["transformer.h.0.mlp.c_fc.weight"]
        assert (e.initializer.name, e.layout, e.fans.fan_in, e.fans.fan_out) == (law, "keras", 32, 128), preset
        assert e.why.startswith("used as addmm(b, x, W) by transformer.h.0.mlp.c_fc (Conv1D): a dense kernel in "
                                "Keras layout (in, out), fan_in 32; like nn.Linear's weight: ")
    auto = initlab.plan(model, "auto", example_input=x)
    assert "followed by gelu_tanh" in auto["transformer.h.0.mlp.c_fc.weight"].why  # HF's NewGELUActivation
    assert auto["transformer.h.0.attn.c_attn.weight"].fans == initlab.Fans(32, 96)
    tied = auto["lm_head.weight"]
    assert tied.path == "transformer.wte.weight"
    assert "tied: also lm_head.weight (used by linear[weight] in lm_head as the readout" in tied.why
    (s,) = auto.residual
    assert s.out_projs == tuple(f"transformer.h.{i}.{p}.c_proj.weight" for i in (0, 1) for p in ("attn", "mlp"))
    assert [a.out_proj_op for a in s.adds] == ["addmm"] * 4 and s.n_blocks == 2
    # the filled values follow the (in, out) fans: torch's U(±1/√32), not U(±1/√128)
    initlab.plan(model, "torch", example_input=x).apply(seed=0)
    w = model.transformer.h[0].mlp.c_fc.weight.detach()
    # sample std of n = 4096 uniform values: sd(s)/σ ≈ √((κ−1)/(4n)) = 0.0070 (κ = 1.8); 6 sd = 4.2 %,
    # while the wrong fan would be 50 % off
    assert float(w.std()) == pytest.approx(1 / math.sqrt(3 * 32), rel=6 * math.sqrt(0.8 / (4 * w.numel())))


def test_llama_and_t5_norms_and_ties():
    model, x = _build("llama")
    plan = initlab.plan(model, "auto", example_input=x)
    norms = [e for e in plan if e.module_type == "LlamaRMSNorm"]
    assert len(norms) == 5 and all(e.initializer.name == "Ones" for e in norms)
    assert "multiplies a normalized tensor in model.norm (LlamaRMSNorm)" in plan["model.norm.weight"].why
    assert [a.out_proj.rsplit(".", 2)[1] for a in plan.residual[0].adds] == ["o_proj", "down_proj"] * 2

    model, x = _build("t5")
    plan = initlab.plan(model, "auto", example_input=x)
    e = plan["lm_head.weight"]
    assert e.path == "shared.weight"
    assert e.aliases == ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight")
    assert sum(1 for f in plan if f.param_path == "shared.weight") == 1
    assert all(f.initializer.name == "Ones" for f in plan if f.module_type == "T5LayerNorm")
    enc, dec = plan.residual
    assert enc.blocks == ("encoder.block.0", "encoder.block.1") and dec.n_branches == 6
    assert dec.out_projs[1] == "decoder.block.0.layer.1.EncDecAttention.o.weight"


@pytest.mark.parametrize(("name", "cls", "pos"), [
    ("vit", "vit.embeddings.cls_token", "vit.embeddings.position_embeddings"),
    ("vit_tiny", "cls_token", "pos_embed"),
])
def test_vit_tokens_and_position_embeddings(name, cls, pos):
    model, x = _build(name)
    trace = initlab.plan(model, "auto", example_input=x).trace
    assert trace.reading(cls).role == "token" and trace.reading(pos).role == "position_embedding"
    d = model.state_dict()[pos].shape[-1]
    assert trace.reading(pos).fans == initlab.Fans(17, d)  # 16 patches + the CLS token
    flax = initlab.plan(model, "flax", example_input=x)
    assert flax[pos].std == pytest.approx(1 / math.sqrt(d))  # Flax's Embed law: N(0, 1/√features)


def test_resnet_projection_shortcuts_and_convnext_layer_scale():
    model, x = _build("resnet18")
    adds = [a for s in initlab.plan(model, "auto", example_input=x).residual for a in s.adds]
    assert len(adds) == 8
    assert [a.block for a in adds if a.shortcut_kernels] == ["layer2.0", "layer3.0", "layer4.0"]
    assert adds[2].shortcut_kernels == ("layer2.0.downsample.0.weight",)

    model, x = _build("convnext_atto")
    plan = initlab.plan(model, "auto", example_input=x)
    gammas = [e for e in plan if e.path.endswith(".gamma")]
    assert len(gammas) == 12
    # the model's own layer-scale value, which timm's constructor gave every gamma (ls_init_value)
    assert all(e.initializer.name == "Constant" and e.initializer.value == pytest.approx(1e-6, rel=1e-6)
               for e in gammas)  # (1e-6 as float32 holds it)
    assert "multiplies the output of a residual branch" in gammas[0].why
    assert [a.out_scales for a in plan.residual[0].adds] == [("stages.0.blocks.0.gamma",), ("stages.0.blocks.1.gamma",)]


def test_zoo_plans_on_the_meta_device_like_on_cpu():
    for name in ("gpt2", "llama", "resnet18"):
        cpu, x = _build(name)
        with torch.device("meta"):
            meta, _ = zoo.BUILDERS[name]()
        meta.eval()
        xm = {k: v.to("meta") for k, v in x.items()} if isinstance(x, dict) else x.to("meta")
        p_meta = initlab.plan(meta, "auto", example_input=xm)
        p_cpu = initlab.plan(cpu, "auto", example_input=x)
        assert [(e.path, e.initializer, e.fans) for e in p_meta] == [(e.path, e.initializer, e.fans) for e in p_cpu]
        assert [s.out_projs for s in p_meta.residual] == [s.out_projs for s in p_cpu.residual]
        p_meta.apply(seed=0, device="cpu")
        p_cpu.apply(seed=0)
        for (k, a), b in zip(meta.named_parameters(), cpu.parameters(), strict=True):
            assert torch.equal(a, b), (name, k)


def test_torchvision_stub_only_fills_in_for_what_timm_model_code_uses():
    # In a child process with the real torchvision import blocked, so the stub is checked whether or not a
    # working torchvision is installed here (sys.modules[name] = None makes `import name` raise ImportError).
    child = textwrap.dedent("""
        import math, sys
        sys.modules["torchvision"] = None
        import torch
        from tests import zoo
        assert zoo.TORCHVISION_STUBBED
        from torchvision.ops.misc import FrozenBatchNorm2d
        from torchvision.transforms import Resize
        x = torch.randn(2, 3, 4, 4)
        assert torch.allclose(FrozenBatchNorm2d(3)(x), x / math.sqrt(1 + 1e-5))
        try:
            Resize(32)
        except RuntimeError as e:
            assert "torchvision is not installed" in str(e) and "Resize" in str(e), e
        else:
            raise AssertionError("a placeholder class was usable")
        print("stub ok")
    """)
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", child], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "stub ok" in done.stdout, done.stderr[-2000:]
