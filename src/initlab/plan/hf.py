"""What a Hugging Face transformers model's own ``_init_weights`` writes, as an ordered program: the law each
parameter ends with, and a replay that draws the very same values.

transformers 5.x initializes a model in ``PreTrainedModel.initialize_weights``: a post-order walk over
``children()`` (the children first, then the module; a child that is itself a ``PreTrainedModel`` switches to
its own ``_init_weights`` and config) that calls ``owner._init_weights(module)`` on every module. Each write
goes through ``transformers.initialization`` (``init.normal_``, ``init.zeros_``, …), whose wrappers call the
torch functions kept in ``TORCH_INIT_FUNCTIONS``. A tied tensor (GPT-2's ``wte`` = ``lm_head``) is reached
under every name, so it may be written more than once.

Two readers give the same :class:`Program` (an ordered list of :class:`Write` s):

- :func:`table_program` for the ``_init_weights`` initlab knows line by line: the base
  ``PreTrainedModel._init_weights`` (every model that does not override it: Llama, Mistral, Qwen2, …), and
  GPT-2's, BERT's, T5's and ViT's. Each write names its rule and the config attribute it reads.
- :func:`record_program` for any other model: its own ``initialize_weights()`` runs on a copy whose tensors
  are on the meta device (the user's model is never touched; the copy costs no memory), with the torch
  functions in ``TORCH_INIT_FUNCTIONS`` replaced by recorders and the tensor methods (``normal_``,
  ``fill_``, ``zero_``, …) caught by a ``TorchFunctionMode``; nothing is drawn.

:func:`final_laws` reads the law each tensor ends with. Two meanings exist, and they differ for tied tensors:
a freshly built ``Model(config)`` (construction: a tie target such as ``lm_head.weight`` was a separate tensor
when it was drawn, then discarded by ``tie_weights``) and ``model.init_weights()`` on a built, tied model
(the last write through any name wins: BERT's tied decoder redraws the word embeddings, padding row
included). :func:`replay` runs a program with a ``torch.Generator`` seeded with ``seed``, draw by draw in the
same order, which reproduces ``torch.manual_seed(seed); model.init_weights()`` (with the model's
``_is_hf_initialized`` marks cleared) bit for bit on CPU.

One idea: the ordered program of transformers' init writes — the two readers, the laws it ends with and its
replay share the :class:`Write` records and the walk order, and a replay is exact only if all agree.
"""

from __future__ import annotations

import copy
import inspect
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..initializers import (
    Constant,
    Dirac,
    Identity,
    Initializer,
    KaimingNormal,
    KaimingUniform,
    Ones,
    Orthogonal,
    RandomNormal,
    RandomUniform,
    Sparse,
    TruncNormal,
    XavierNormal,
    XavierUniform,
    Zeros,
)
from ..initializers.fans import Fans
from ..theory.dataflow import op_name

__all__ = ["Law", "Program", "Write", "final_laws", "init_program", "is_hf_model", "law_initializer",
           "record_program", "replay", "table_program"]

#: The torch.nn.init functions that draw random numbers (a replay must run them in order, always).
RANDOM_OPS = frozenset({"normal_", "trunc_normal_", "uniform_", "xavier_uniform_", "xavier_normal_",
                        "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_"})
_DETERMINISTIC_OPS = frozenset({"constant_", "zeros_", "ones_", "eye_", "dirac_", "copy_"})


@dataclass(frozen=True)
class Write:
    """One write of the model's init: ``op`` (a ``torch.nn.init`` function name, or ``"copy_"``) with
    ``kwargs`` into the tensor whose first name is ``target`` (``""``: not a parameter — a buffer, whose
    random draws a replay still makes, into scratch, to keep the order), through the name ``path``;
    ``rows``: ``(r0, r1)`` when only those rows were written (an embedding's padding row); ``rule``: which
    rule of which ``_init_weights`` wrote it, with the config attributes it read."""

    target: str
    path: str
    op: str
    kwargs: tuple[tuple[str, Any], ...]
    rule: str
    rows: tuple[int, int] | None = None
    shape: tuple[int, ...] = ()
    dtype: torch.dtype | None = None

    @property
    def random(self) -> bool:
        return self.op in RANDOM_OPS

    @property
    def args(self) -> dict[str, Any]:
        return dict(self.kwargs)

    def same_law(self, other: Write) -> bool:
        return self.op == other.op and self.kwargs == other.kwargs and self.rows == other.rows


@dataclass
class Program:
    """The ordered writes of a model's init. ``source``: how it was read (``"table"`` or ``"recorded"``) and
    whose ``_init_weights``; ``problems``: what a replay cannot reproduce (random numbers drawn outside the
    init functions, a write initlab cannot express) — the replay is exact only when there are none;
    ``tie_targets``: the names ``tie_weights`` points at another tensor (``all_tied_weights_keys``)."""

    writes: list[Write]
    source: str
    owners: tuple[str, ...]
    tie_targets: frozenset[str] = frozenset()
    problems: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """Whether :func:`replay` reproduces the model's own draws (no problems)."""
        return not self.problems


@dataclass(frozen=True)
class Law:
    """The law a tensor ends with: its last write of the whole tensor (``full``; ``None`` when only rows were
    written) and the row writes after it (``rows``), in order."""

    full: Write | None
    rows: tuple[Write, ...] = ()


def is_hf_model(model: Any) -> bool:
    """Whether ``model`` is a transformers ``PreTrainedModel`` (read from its class, importing nothing)."""
    return any(c.__name__ == "PreTrainedModel" and c.__module__ == "transformers.modeling_utils"
               for c in type(model).__mro__)


# ---- the table --------------------------------------------------------------------------------------------

class _NotInTable(Exception):
    """The model's init has a part the table does not know: read it by recording instead."""


def _defining_class(owner: nn.Module) -> type:
    for klass in type(owner).__mro__:
        if "_init_weights" in klass.__dict__:
            return klass
    raise _NotInTable(f"{type(owner).__name__} has no _init_weights")


def _base_std(config: Any) -> tuple[float, str]:
    """``PreTrainedModel._init_weights``'s std and the config attribute it comes from."""
    if hasattr(config, "initializer_range"):
        r = config.initializer_range
        return (r, f"initializer_range = {r:g}") if r else (0.02, "0.02 (initializer_range is unset)")
    if hasattr(config, "init_std"):
        return config.init_std, f"init_std = {config.init_std:g}"
    if hasattr(config, "initializer_factor"):
        return config.initializer_factor, f"initializer_factor = {config.initializer_factor:g}"
    r = getattr(config.get_text_config(), "initializer_range", 0.02)
    return r, f"the text config's initializer_range = {r:g}"


def _is_norm(module: nn.Module) -> bool:
    name = type(module).__name__
    return (isinstance(module, (nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))
            or "LayerNorm" in name or "RMSNorm" in name)


_Op = tuple[Any, str, dict[str, Any], str]  # (tensor or (tensor, rows)), op, kwargs, rule


def _base_rules(config: Any, module: nn.Module) -> Iterator[_Op]:
    std, src = _base_std(config)
    who = "PreTrainedModel._init_weights"
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)):
        kind = type(module).__name__
        if getattr(module, "weight", None) is not None:
            yield module.weight, "normal_", {"mean": 0.0, "std": std}, f"{who}: {kind} weight N(0, {src})"
        if module.bias is not None:
            yield module.bias, "zeros_", {}, f"{who}: {kind} bias zeros"
    elif isinstance(module, (nn.LSTM, nn.MultiheadAttention)):
        raise _NotInTable(f"{type(module).__name__} (the base rule delegates to torch's own init)")
    elif isinstance(module, nn.Embedding):
        yield module.weight, "normal_", {"mean": 0.0, "std": std}, f"{who}: nn.Embedding weight N(0, {src})"
        if module.padding_idx is not None:
            pad = module.padding_idx
            yield (module.weight, (pad, pad + 1)), "zeros_", {}, f"{who}: padding_idx row {pad} zeroed"
    elif _is_norm(module):
        kind = type(module).__name__
        if getattr(module, "weight", None) is not None:
            yield module.weight, "ones_", {}, f"{who}: {kind} weight ones (a norm: the class name says so)"
        if getattr(module, "bias", None) is not None:
            yield module.bias, "zeros_", {}, f"{who}: {kind} bias zeros"


def _family_module(owner: nn.Module) -> Any:
    return sys.modules[type(owner).__module__]


def _gpt2_rules(owner: nn.Module, config: Any, module: nn.Module) -> Iterator[_Op]:
    from transformers.pytorch_utils import Conv1D

    m = _family_module(owner)
    who = "GPT2PreTrainedModel._init_weights"
    r = config.initializer_range
    if isinstance(module, Conv1D):
        yield module.weight, "normal_", {"mean": 0.0, "std": r}, (f"{who}: Conv1D weight N(0, initializer_range "
                                                                  f"= {r:g})")
        if module.bias is not None:
            yield module.bias, "zeros_", {}, f"{who}: Conv1D bias zeros"
    if isinstance(module, (m.GPT2Attention, m.GPT2MLP)):
        n = config.n_layer
        std = r / math.sqrt(2 * n)
        yield module.c_proj.weight, "normal_", {"mean": 0.0, "std": std}, (
            f"{who}: c_proj of {type(module).__name__} redrawn N(0, initializer_range/√(2·n_layer) = "
            f"{r:g}/√{2 * n} = {std:.4g}), GPT-2's scaled residual init (Radford et al. 2019)")


def _bert_rules(owner: nn.Module, config: Any, module: nn.Module) -> Iterator[_Op]:
    m = _family_module(owner)
    if isinstance(module, m.BertLMPredictionHead):
        yield module.bias, "zeros_", {}, "BertPreTrainedModel._init_weights: BertLMPredictionHead bias zeros"


def _t5_rules(owner: nn.Module, config: Any, module: nn.Module) -> Iterator[_Op]:
    m = _family_module(owner)
    who = "T5PreTrainedModel._init_weights"
    f = config.initializer_factor
    d_model, d_kv, d_ff, heads = config.d_model, config.d_kv, config.d_ff, config.num_heads
    fac = f"initializer_factor = {f:g}"

    def normal(t: Any, std: float, what: str) -> _Op:
        return t, "normal_", {"mean": 0.0, "std": std}, f"{who}: {what} = {std:.4g}"

    def zero_bias(lin: nn.Module, name: str) -> Iterator[_Op]:
        if getattr(lin, "bias", None) is not None:
            yield lin.bias, "zeros_", {}, f"{who}: {name} bias zeros"

    if isinstance(module, m.T5LayerNorm):
        yield module.weight, "constant_", {"val": f * 1.0}, f"{who}: T5LayerNorm weight = {fac}"
    elif isinstance(module, (m.T5Model, m.T5ForConditionalGeneration, m.T5EncoderModel, m.T5ForQuestionAnswering)):
        yield normal(module.shared.weight, f * 1.0, f"shared embedding N(0, {fac})")
        if hasattr(module, "lm_head") and not config.tie_word_embeddings:
            yield normal(module.lm_head.weight, f * 1.0, f"untied lm_head N(0, {fac})")
        if hasattr(module, "qa_outputs"):
            yield normal(module.qa_outputs.weight, f * d_model ** -0.5,
                         f"qa_outputs N(0, initializer_factor·d_model^-1/2 = {f:g}·{d_model}^-1/2)")
            yield module.qa_outputs.bias, "zeros_", {}, f"{who}: qa_outputs bias zeros"
    elif isinstance(module, m.T5ForTokenClassification):
        if hasattr(module, "classifier"):
            yield normal(module.classifier.weight, f * 1.0, f"classifier N(0, {fac})")
            yield module.classifier.bias, "zeros_", {}, f"{who}: classifier bias zeros"
    elif isinstance(module, m.T5ClassificationHead):
        for name in ("dense", "out_proj"):
            lin = getattr(module, name)
            yield normal(lin.weight, f * d_model ** -0.5,
                         f"classification head {name} N(0, initializer_factor·d_model^-1/2 = {f:g}·{d_model}^-1/2)")
            yield from zero_bias(lin, name)
    elif isinstance(module, (m.T5DenseActDense, m.T5DenseGatedActDense)):
        for name in ("wi",) if isinstance(module, m.T5DenseActDense) else ("wi_0", "wi_1"):
            lin = getattr(module, name)
            yield normal(lin.weight, f * d_model ** -0.5,
                         f"{name} N(0, initializer_factor·d_model^-1/2 = {f:g}·{d_model}^-1/2)")
            yield from zero_bias(lin, name)
        yield normal(module.wo.weight, f * d_ff ** -0.5, f"wo N(0, initializer_factor·d_ff^-1/2 = {f:g}·{d_ff}^-1/2)")
        yield from zero_bias(module.wo, "wo")
    elif isinstance(module, m.T5Attention):
        yield normal(module.q.weight, f * (d_model * d_kv) ** -0.5,
                     f"q N(0, initializer_factor·(d_model·d_kv)^-1/2 = {f:g}·({d_model}·{d_kv})^-1/2; T5 folds "
                     "attention's 1/√d_kv into q")
        for name in ("k", "v"):
            yield normal(getattr(module, name).weight, f * d_model ** -0.5,
                         f"{name} N(0, initializer_factor·d_model^-1/2 = {f:g}·{d_model}^-1/2)")
        yield normal(module.o.weight, f * (heads * d_kv) ** -0.5,
                     f"o N(0, initializer_factor·(num_heads·d_kv)^-1/2 = {f:g}·({heads}·{d_kv})^-1/2)")
        if module.has_relative_attention_bias:
            yield normal(module.relative_attention_bias.weight, f * d_model ** -0.5,
                         f"relative_attention_bias N(0, initializer_factor·d_model^-1/2 = {f:g}·{d_model}^-1/2)")


def _vit_rules(owner: nn.Module, config: Any, module: nn.Module) -> Iterator[_Op]:
    m = _family_module(owner)
    who = "ViTPreTrainedModel._init_weights"
    if isinstance(module, m.ViTEmbeddings):
        r = config.initializer_range
        law = f"trunc_normal_(0, initializer_range = {r:g}, a=−2, b=2) — torch's bounds are absolute, ±{2 / r:g}σ"
        kw = {"mean": 0.0, "std": r, "a": -2.0, "b": 2.0}
        if module.position_embeddings is not None:
            yield module.position_embeddings, "trunc_normal_", kw, f"{who}: position_embeddings {law}"
        yield module.cls_token, "trunc_normal_", kw, f"{who}: cls_token {law}"
        if module.mask_token is not None:
            yield module.mask_token, "zeros_", {}, f"{who}: mask_token zeros"


#: ``_init_weights`` initlab knows line by line (by the class that defines it) -> its rules after the base's.
FAMILIES = {
    "transformers.modeling_utils.PreTrainedModel": None,
    "transformers.models.gpt2.modeling_gpt2.GPT2PreTrainedModel": _gpt2_rules,
    "transformers.models.bert.modeling_bert.BertPreTrainedModel": _bert_rules,
    "transformers.models.t5.modeling_t5.T5PreTrainedModel": _t5_rules,
    "transformers.models.vit.modeling_vit.ViTPreTrainedModel": _vit_rules,
}


def _walk(model: nn.Module) -> Iterator[tuple[str, nn.Module, nn.Module]]:
    """(path, module, owner) in ``smart_apply``'s order: children first, then the module; a child that is a
    ``PreTrainedModel`` owns its subtree."""
    def visit(mod: nn.Module, path: str, owner: nn.Module) -> Iterator[tuple[str, nn.Module, nn.Module]]:
        for name, child in mod.named_children():
            yield from visit(child, f"{path}.{name}" if path else name, child if is_hf_model(child) else owner)
        yield path, mod, owner

    yield from visit(model, "", model)


def _first_names(model: nn.Module) -> dict[int, str]:
    out: dict[int, str] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        out.setdefault(id(p), n)
    return out


def _through(names: list[str], target: str, ties: frozenset[str]) -> str:
    """The name a write went through, from the tensor's names under the module being initialized: one that is
    not a tie target when there is one (``BertLMPredictionHead`` writes ``self.bias``, not ``decoder.bias``)."""
    if not names:
        return target
    return next((n for n in names if n not in ties), names[0])


def _tie_targets(model: nn.Module) -> frozenset[str]:
    return frozenset(getattr(model, "all_tied_weights_keys", None) or {})


def table_program(model: nn.Module) -> Program:
    """The program of ``model.initialize_weights()`` from initlab's table (raises an internal error for a
    model whose ``_init_weights`` the table does not cover; :func:`init_program` then records it)."""
    first = _first_names(model)
    writes: list[Write] = []
    owners: dict[str, None] = {}
    for path, module, owner in _walk(model):
        klass = _defining_class(owner)
        key = f"{klass.__module__}.{klass.__qualname__}"
        if key not in FAMILIES:
            raise _NotInTable(f"{klass.__qualname__}._init_weights")
        owners[klass.__qualname__] = None
        family = FAMILIES[key]
        local: dict[int, list[str]] = {}
        for n, p in module.named_parameters(remove_duplicate=False):
            local.setdefault(id(p), []).append(f"{path}.{n}" if path else n)
        ties = _tie_targets(model)
        ops = list(_base_rules(owner.config, module))
        if family is not None:
            ops.extend(family(owner, owner.config, module))
        for t, op, kw, rule in ops:
            tensor, rows = (t, None) if isinstance(t, torch.Tensor) else t
            target = first.get(id(tensor))
            if target is None:  # a buffer: the base rule's writes to them draw nothing
                continue
            writes.append(Write(target, _through(local.get(id(tensor), []), target, ties), op, tuple(kw.items()),
                                rule, rows, tuple(tensor.shape), tensor.dtype))
    return Program(writes, "table", tuple(owners), _tie_targets(model))


# ---- the recorder ---------------------------------------------------------------------------------------

_TENSOR_WRITES = {"normal_": "normal_", "uniform_": "uniform_", "fill_": "constant_", "zero_": "zeros_",
                  "copy_": "copy_"}
_RANDOM_ELSEWHERE = frozenset({"bernoulli_", "exponential_", "geometric_", "cauchy_", "log_normal_", "random_",
                               "randn", "rand", "randint", "randperm", "normal", "rand_like", "randn_like",
                               "randint_like", "multinomial", "bernoulli", "poisson"})


_INIT_SIGS = {n: inspect.signature(getattr(torch.nn.init, n)) for n in (*RANDOM_OPS, *_DETERMINISTIC_OPS - {"copy_"})}


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def _meta_twin(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are fresh meta tensors (ties kept: the memo maps
    one tensor to one copy) and whose ``_is_hf_initialized`` marks are cleared."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    twin = copy.deepcopy(model, memo)
    for m in twin.modules():
        m.__dict__.pop("_is_hf_initialized", None)
    return twin


class _Recorder(TorchFunctionMode):
    """Records the writes of ``initialize_weights`` on a meta twin (see the module docstring)."""

    def __init__(self, twin: nn.Module, tie_targets: frozenset[str]) -> None:
        super().__init__()
        self.params: dict[int, tuple[str, torch.Tensor]] = {}
        for n, p in twin.named_parameters():
            self.params.setdefault(_storage_key(p), (n, p))
        self.buffers = {_storage_key(b): b for b in twin.buffers()}
        self.paths = {id(m): p for p, m in twin.named_modules(remove_duplicate=False)}
        self.locals: dict[int, dict[int, list[str]]] = {}
        self.tie_targets = tie_targets
        self.stack: list[tuple[nn.Module, str]] = []
        self.writes: list[Write] = []
        self.problems: list[str] = []

    def _where(self) -> tuple[nn.Module | None, str]:
        return self.stack[-1] if self.stack else (None, "")

    def _path(self, tensor: torch.Tensor, target: str) -> str:
        """The name the write went through: the tensor's name under the module being initialized (a name that
        is not a tie target when there is one), else its first name."""
        module = self._where()[0]
        if module is None:
            return target
        key = id(module)
        if key not in self.locals:
            loc: dict[int, list[str]] = {}
            for n, p in module.named_parameters(remove_duplicate=False):
                loc.setdefault(_storage_key(p), []).append(n)
            self.locals[key] = loc
        base = self.paths.get(key, "")
        names = [f"{base}.{n}" if base else n for n in self.locals[key].get(_storage_key(tensor), [])]
        return _through(names, target, self.tie_targets)

    def record(self, tensor: Any, op: str, kwargs: dict[str, Any]) -> None:
        if not isinstance(tensor, torch.Tensor):
            return
        module, owner = self._where()
        where = f"{owner}._init_weights" + (f" on {type(module).__name__}" if module is not None else "")
        key = _storage_key(tensor)
        if kwargs.pop("generator", None) is not None:
            self.problems.append(f"{where}: {op} with its own generator")
        if key in self.params:
            target, p = self.params[key]
            rows = _rows_of(tensor, p)
            if rows is False:
                self.problems.append(f"{where}: {op} on a part of {target} that is not a range of rows")
                return
            law = ", ".join(f"{k}={_fmt(v)}" for k, v in kwargs.items() if k != "src")
            rule = f"{where}: {op}({law})" + ("" if rows is None else f" on rows {rows[0]}:{rows[1]}")
            self.writes.append(Write(target, self._path(tensor, target), op, tuple(kwargs.items()), rule,
                                     None if rows is None else rows, tuple(p.shape), p.dtype))
        elif op in RANDOM_OPS:  # a random draw into a buffer or a temporary: replayed into scratch
            self.writes.append(Write("", "", op, tuple(kwargs.items()), f"{where}: {op} into a tensor that is not "
                                     "a parameter", None, tuple(tensor.shape), tensor.dtype))

    def init_function(self, name: str, original: Any) -> Any:
        sig = _INIT_SIGS.get(name) or inspect.signature(original)

        def fn(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            kw = dict(bound.arguments)
            tensor = kw.pop("tensor")
            self.record(tensor, name, kw)
            return tensor  # the twin is on meta: nothing to draw

        return fn

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = op_name(func)
        if getattr(func, "__module__", "") in ("torch.nn.init", "transformers.initialization") and name in _INIT_SIGS:
            # torch's own function reached by a name bound before transformers patched torch.nn.init
            bound = _INIT_SIGS[name].bind(*args, **kwargs)
            bound.apply_defaults()
            kw = dict(bound.arguments)
            tensor = kw.pop("tensor")
            self.record(tensor, name, kw)
            return tensor
        target = args[0] if args and isinstance(args[0], torch.Tensor) else None
        known = target is not None and (_storage_key(target) in self.params or _storage_key(target) in self.buffers)
        if name in ("normal_", "uniform_") and target is not None and not known:
            owner = self._where()[1]
            self.problems.append(f"{owner}._init_weights draws random numbers into a temporary tensor ({name})")
        if name in _TENSOR_WRITES and known:
            rest = list(args[1:])
            if name == "normal_":
                kw = {"mean": float(rest[0]) if rest else float(kwargs.get("mean", 0.0)),
                      "std": float(rest[1]) if len(rest) > 1 else float(kwargs.get("std", 1.0))}
            elif name == "uniform_":
                kw = {"a": float(rest[0]) if rest else float(kwargs.get("from", 0.0)),
                      "b": float(rest[1]) if len(rest) > 1 else float(kwargs.get("to", 1.0))}
            elif name == "fill_":
                kw = {"val": float(rest[0])}
            else:
                kw = {}
            if "generator" in kwargs:
                kw["generator"] = kwargs["generator"]
            self.record(target, _TENSOR_WRITES[name], kw)
            return target
        if name in _RANDOM_ELSEWHERE:
            owner = self._where()[1]
            self.problems.append(f"{owner}._init_weights draws random numbers with {name} outside the init "
                                 "functions")
        return func(*args, **kwargs)


def _rows_of(view: torch.Tensor, p: torch.Tensor) -> tuple[int, int] | bool | None:
    """``None`` when ``view`` is all of ``p``; ``(r0, r1)`` when it is rows r0..r1 of it; ``False`` otherwise."""
    if tuple(view.shape) == tuple(p.shape) and view.stride() == p.stride() and view.storage_offset() == p.storage_offset():
        return None
    if p.dim() == 0 or not p.is_contiguous():
        return False
    row = p.stride(0)
    off = view.storage_offset() - p.storage_offset()
    if row <= 0 or off % row:
        return False
    r0 = off // row
    if tuple(view.shape) == tuple(p.shape[1:]):
        return (r0, r0 + 1)
    if view.dim() == p.dim() and tuple(view.shape[1:]) == tuple(p.shape[1:]) and view.is_contiguous():
        return (r0, r0 + view.shape[0])
    return False


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else repr(v)


def record_program(model: nn.Module) -> Program:
    """The program of ``model.initialize_weights()``, recorded on a meta twin (see the module docstring)."""
    from transformers import initialization as hf_init

    twin = _meta_twin(model)
    rec = _Recorder(twin, _tie_targets(model))
    owners: dict[str, None] = {}
    for m in twin.modules():
        if is_hf_model(m):
            owners[_defining_class(m).__qualname__] = None
            original = m._init_weights
            label = f"{_defining_class(m).__qualname__}"

            def wrapped(module: nn.Module, _original: Any = original, _label: str = label) -> Any:
                rec.stack.append((module, _label))
                try:
                    return _original(module)
                finally:
                    rec.stack.pop()

            m._init_weights = wrapped  # an instance attribute: _initialize_weights looks it up on self
    saved = dict(hf_init.TORCH_INIT_FUNCTIONS)
    try:
        for name, fn in saved.items():
            hf_init.TORCH_INIT_FUNCTIONS[name] = rec.init_function(name, fn)
        with rec:
            twin.initialize_weights()
    except Exception as e:
        raise ValueError(f"model: preset 'hf' runs {type(model).__name__}'s own initialize_weights() on a meta-device "
                         f"copy to read its laws, and that failed ({type(e).__name__}: {e}).") from e
    finally:
        hf_init.TORCH_INIT_FUNCTIONS.update(saved)
    return Program(rec.writes, "recorded", tuple(owners), _tie_targets(model), rec.problems)


def init_program(model: nn.Module) -> Program:
    """:func:`table_program` where initlab's table covers the model, else :func:`record_program`."""
    try:
        return table_program(model)
    except _NotInTable:
        return record_program(model)


# ---- laws and replay ---------------------------------------------------------------------------------

def final_laws(program: Program, *, construction: bool = True) -> dict[str, Law]:
    """The law each parameter ends with (first name -> :class:`Law`; a parameter no write reaches is absent).
    ``construction=True``: what ``Model(config)`` gives — writes through a tie target's name are left out;
    ``False``: what ``init_weights()`` on the built model gives (every write)."""
    per: dict[str, list[Write]] = {}
    for w in program.writes:
        if not w.target or (construction and w.path in program.tie_targets):
            continue
        per.setdefault(w.target, []).append(w)
    out: dict[str, Law] = {}
    for target, ws in per.items():
        last = max((i for i, w in enumerate(ws) if w.rows is None), default=None)
        if last is None:
            out[target] = Law(None, tuple(ws))
        else:
            out[target] = Law(ws[last], tuple(ws[last + 1:]))
    return out


def _torch_fans(shape: tuple[int, ...]) -> Fans:
    """The fans torch's init functions read from a tensor (torch layout: dim 1 in, dim 0 out, the rest a
    receptive field), whatever the tensor's true layout."""
    rf = math.prod(shape[2:]) if len(shape) > 2 else 1
    return Fans(int(shape[1]) * rf if len(shape) > 1 else int(shape[0]), int(shape[0]) * rf, rf)


def law_initializer(w: Write) -> tuple[Initializer | None, Fans | None]:
    """The initlab initializer that draws ``w``'s law, with the fans it must read (torch's, from the shape,
    for the fan-based ones); ``(None, None)`` for a copy of computed values."""
    a = w.args
    fans = _torch_fans(w.shape) if len(w.shape) >= 1 else None
    if w.op == "normal_":
        std, mean = float(a.get("std", 1.0)), float(a.get("mean", 0.0))
        if std == 0:
            return _constant(mean), None
        return RandomNormal(mean, std), None
    if w.op == "trunc_normal_":
        return TruncNormal(float(a["mean"]), float(a["std"]), float(a["a"]), float(a["b"])), None
    if w.op == "uniform_":
        lo, hi = float(a.get("a", 0.0)), float(a.get("b", 1.0))
        return (_constant(lo), None) if lo == hi else (RandomUniform(lo, hi), None)
    if w.op == "constant_":
        return _constant(float(a["val"])), None
    if w.op == "zeros_":
        return Zeros(), None
    if w.op == "ones_":
        return Ones(), None
    if w.op in ("xavier_uniform_", "xavier_normal_"):
        cls = XavierUniform if w.op == "xavier_uniform_" else XavierNormal
        return cls(float(a.get("gain", 1.0))), fans
    if w.op in ("kaiming_uniform_", "kaiming_normal_"):
        cls = KaimingUniform if w.op == "kaiming_uniform_" else KaimingNormal
        return cls(float(a.get("a", 0.0)), a.get("mode", "fan_in"), a.get("nonlinearity", "leaky_relu")), fans
    if w.op == "orthogonal_":
        return Orthogonal(float(a.get("gain", 1.0))), fans
    if w.op == "eye_":
        return Identity(), None
    if w.op == "dirac_":
        return Dirac(int(a.get("groups", 1))), None
    if w.op == "sparse_":
        return Sparse(float(a["sparsity"]), float(a.get("std", 0.01))), None
    return None, None


def _constant(v: float) -> Initializer:
    return Zeros() if v == 0 else Ones() if v == 1 else Constant(v)


def _run(w: Write, t: torch.Tensor, gen: torch.Generator | None) -> None:
    kw = {k: v for k, v in w.kwargs if k != "src"}
    fn = getattr(torch.nn.init, w.op)
    if w.random:
        fn(t, **kw, generator=gen)
    else:
        fn(t, **kw)


def replay(model: nn.Module, program: Program, seed: int, *, into: set[str] | None = None) -> None:
    """Run ``program``'s writes on ``model`` in order, every draw from one ``torch.Generator`` per device seeded
    with ``seed`` — what ``torch.manual_seed(seed); model.init_weights()`` draws (on CPU bit for bit, when
    :attr:`Program.exact`). ``into``: the parameters (first names) to write; the random writes of the others
    are drawn into scratch tensors of the same shape, so every later draw stays where it was. ``copy_``
    writes are not replayed (their source is gone)."""
    params = {n: p for n, p in model.named_parameters()}
    gens: dict[torch.device, torch.Generator] = {}
    cpu = torch.device("cpu")
    with torch.no_grad():
        for w in program.writes:
            p = params.get(w.target) if w.target else None
            dev = p.device if p is not None else next((q.device for q in params.values()), cpu)
            gen = gens.get(dev)
            if gen is None:
                gen = gens[dev] = torch.Generator(device=dev).manual_seed(seed)
            if w.op == "copy_":
                continue
            write_here = p is not None and (into is None or w.target in into)
            if write_here:
                t = p.data if w.rows is None else p.data[w.rows[0]:w.rows[1]]
                _run(w, t, gen)
            elif w.random:
                shape = w.shape if w.rows is None else (w.rows[1] - w.rows[0], *w.shape[1:])
                _run(w, torch.empty(shape, dtype=w.dtype or torch.float32, device=dev), gen)
