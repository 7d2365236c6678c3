"""A zoo of small real models from the ecosystem, each with an example input, for the tests of issue 14.

Hugging Face transformers (built from small configs, never ``from_pretrained``; eager attention):
``gpt2`` (GPT2LMHeadModel, Conv1D layers, tied LM head), ``bert`` (BertForMaskedLM, post-LN, tied decoder),
``llama`` (LlamaForCausalLM, RMSNorm, grouped-query attention), ``t5`` (T5ForConditionalGeneration, two
residual streams, embeddings tied 4 ways, needs ``decoder_input_ids``), ``vit`` (ViTForImageClassification,
CLS token and position embeddings). timm (``pretrained=False``): ``resnet18`` (projection shortcuts),
``convnext_atto`` (layer scale), ``mobilenetv3_small_050`` (squeeze-excite, hard-swish),
``vit_tiny`` (vit_tiny_patch16_224 at 32 px, patch 8, depth 2). Widths 32-64 and 2 layers where the model
has a config; every model is returned in eval mode, built under ``torch.manual_seed(seed)``.

``build(name)`` returns ``(model, example_input)``; ``NAMES`` lists the zoo. Models of a library that is
not installed are skipped by the caller (``pytest.importorskip``).

**torchvision.** timm imports ``torchvision`` at import time (``FrozenBatchNorm2d`` from
``torchvision.ops.misc`` in its norm-layer factory, ``torchvision.transforms``/``datasets`` in its data
module). PyPI's torchvision wheels link CUDA torch and cannot load beside the CPU ``torch==2.13.0+cpu`` of
the lock (tools/lock-overrides.txt), so when ``import torchvision`` fails, importing this module installs an
import hook that provides the one class timm's model code really uses — a faithful copy of torchvision's
``FrozenBatchNorm2d`` — and inert placeholders for every other ``torchvision.*`` name. A placeholder
raises ``RuntimeError("torchvision is not installed: ...")`` when it is called or instantiated, so a test
that really needed torchvision (transforms, datasets, detection ops) fails loudly instead of passing on a
fake. With a working torchvision installed, the hook is never installed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

NAMES = ("gpt2", "bert", "llama", "t5", "vit", "resnet18", "convnext_atto", "mobilenetv3_small_050", "vit_tiny")
HF = NAMES[:5]
TIMM = NAMES[5:]
VOCAB = 101  # deliberately not a multiple of anything
SEQ = 8


# ---- torchvision, when it cannot be imported -------------------------------------------------------------

class FrozenBatchNorm2d(nn.Module):
    """torchvision.ops.misc.FrozenBatchNorm2d (torchvision 0.28): batch norm with fixed statistics and affine
    parameters, all buffers."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.reshape(1, -1, 1, 1)
        b = self.bias.reshape(1, -1, 1, 1)
        rv = self.running_var.reshape(1, -1, 1, 1)
        rm = self.running_mean.reshape(1, -1, 1, 1)
        scale = w * (rv + self.eps).rsqrt()
        return x * scale + (b - rm * scale)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.weight.shape[0]}, eps={self.eps})"


class _PlaceholderType(type):
    """The class of a placeholder: any attribute is another placeholder (``InterpolationMode.BILINEAR``)."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls.__qualname__}.{name}")

    def __hash__(cls) -> int:
        return id(cls)

    def __eq__(cls, other: object) -> bool:
        return cls is other


class _Placeholder(metaclass=_PlaceholderType):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            f"torchvision is not installed: {type(self).__qualname__} is an inert placeholder that tests/zoo.py "
            "provides only so that timm can be imported; install a torchvision built for this torch to use it."
        )


def _placeholder(qualname: str) -> type:
    return _PlaceholderType(qualname.rpartition(".")[2], (_Placeholder,), {"__qualname__": qualname})


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{self.__name__}.{name}")


class _TorchvisionStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        module.__version__ = "0.0.0+initlab-test-stub"
        if spec.name == "torchvision.ops.misc":
            module.FrozenBatchNorm2d = FrozenBatchNorm2d
        return module

    def exec_module(self, module):
        pass


def _torchvision_or_stub() -> bool:
    """Import torchvision; if that fails, install the stub (see the module docstring). True if stubbed."""
    if any(isinstance(f, _TorchvisionStub) for f in sys.meta_path):
        return True
    try:
        import torchvision  # noqa: F401

        return False
    except Exception:  # ImportError, or the RuntimeError of a CUDA-linked wheel beside CPU torch
        for key in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[key]
        sys.meta_path.insert(0, _TorchvisionStub())
        return True


TORCHVISION_STUBBED = _torchvision_or_stub()


# ---- the models ---------------------------------------------------------------------------------------

def _ids(seed: int = 0, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (batch, SEQ), generator=g)


def _image(size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, size, size, generator=g)


def gpt2(n_layer: int = 2, n_embd: int = 32, **kw: Any) -> tuple[nn.Module, Any]:
    import transformers as tf

    cfg = tf.GPT2Config(vocab_size=VOCAB, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1, n_positions=64,
                        n_embd=n_embd, n_layer=n_layer, n_head=4, attn_implementation="eager", **kw)
    return tf.GPT2LMHeadModel(cfg), {"input_ids": _ids()}


def bert(num_hidden_layers: int = 2, hidden_size: int = 32, **kw: Any) -> tuple[nn.Module, Any]:
    import transformers as tf

    cfg = tf.BertConfig(vocab_size=VOCAB, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
                        num_attention_heads=4, intermediate_size=4 * hidden_size, max_position_embeddings=64,
                        pad_token_id=0, attn_implementation="eager", **kw)
    return tf.BertForMaskedLM(cfg), {"input_ids": _ids(), "attention_mask": torch.ones(2, SEQ, dtype=torch.long)}


def llama(num_hidden_layers: int = 2, hidden_size: int = 32, **kw: Any) -> tuple[nn.Module, Any]:
    import transformers as tf

    cfg = tf.LlamaConfig(vocab_size=VOCAB, hidden_size=hidden_size, intermediate_size=88,
                         num_hidden_layers=num_hidden_layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, pad_token_id=0, attn_implementation="eager", **kw)
    return tf.LlamaForCausalLM(cfg), {"input_ids": _ids()}


def t5(num_layers: int = 2, d_model: int = 32, **kw: Any) -> tuple[nn.Module, Any]:
    import transformers as tf

    cfg = tf.T5Config(vocab_size=VOCAB, d_model=d_model, d_kv=8, d_ff=64, num_layers=num_layers, num_heads=4,
                      relative_attention_num_buckets=8, decoder_start_token_id=0, attn_implementation="eager",
                      **kw)
    return tf.T5ForConditionalGeneration(cfg), {"input_ids": _ids(), "decoder_input_ids": _ids(seed=1)}


def vit(num_hidden_layers: int = 2, hidden_size: int = 32, **kw: Any) -> tuple[nn.Module, Any]:
    import transformers as tf

    cfg = tf.ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=hidden_size,
                       num_hidden_layers=num_hidden_layers, num_attention_heads=4, intermediate_size=4 * hidden_size,
                       num_labels=5, attn_implementation="eager", **kw)
    return tf.ViTForImageClassification(cfg), {"pixel_values": _image(16)}


def _timm(name: str, size: int, **kw: Any) -> Callable[[], tuple[nn.Module, Any]]:
    def build() -> tuple[nn.Module, Any]:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10, **kw), _image(size)

    return build


BUILDERS: dict[str, Callable[[], tuple[nn.Module, Any]]] = {
    "gpt2": gpt2, "bert": bert, "llama": llama, "t5": t5, "vit": vit,
    "resnet18": _timm("resnet18", 32),
    "convnext_atto": _timm("convnext_atto", 32),
    "mobilenetv3_small_050": _timm("mobilenetv3_small_050", 32),
    "vit_tiny": _timm("vit_tiny_patch16_224", 32, img_size=32, patch_size=8, depth=2),
}


def library(name: str) -> str:
    """The package a zoo model comes from."""
    return "transformers" if name in HF else "timm"


def build(name: str, seed: int = 0) -> tuple[nn.Module, Any]:
    """``(model, example_input)`` of zoo model ``name``, built under ``torch.manual_seed(seed)``, in eval mode."""
    if name not in BUILDERS:
        raise KeyError(f"name: no zoo model {name!r}; the zoo has {', '.join(NAMES)}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, x = BUILDERS[name]()
    return model.eval(), x
