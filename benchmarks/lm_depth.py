"""The language-model depth benchmark (issue 14, item 5): does an init scheme let a small GPT train, pre-LN and
post-LN, at depth 6/12/24/48, with a fixed learning rate and no warmup?

**Corpus** (offline, every machine has it): 46 ``.py`` files of the Python standard library, read from
``sysconfig.get_paths()["stdlib"]`` (or ``--stdlib DIR``), each checked against the SHA-256 in
:data:`CORPUS_FILES` before anything runs — the files are the ones byte-identical in CPython 3.10.13, 3.11.2,
3.11.7, 3.12.1 and 3.12.10 (467 KB; 33 of them also in 3.13.0). A file that differs is an error naming it.
Bytes are the tokens (vocabulary 256). Split: the first 90 % of every file trains, its last 10 % validates.
**Model**: GPT, width 128, 4 heads, context 64, learned positions, separate q/k/v/o, GELU MLP ×4, biases,
``nn.LayerNorm``, ``F.scaled_dot_product_attention``; **untied** head (GPT-2 ties; untied lets the readout
have its own law, as μP and T-Fixup need). Pre-LN: ``x + f(LN x)`` and a final LN; post-LN: ``LN(x + f(x))``.
**Training**: AdamW, lr 1e-3 fixed from step 1 (no warmup, no decay), betas (0.9, 0.99), eps 1e-8, weight
decay 0, no gradient clipping (clipping and warmup are the cures for what this measures); batch 16 × 64 bytes;
the seed draws the init and the batch order. μP uses its own per-layer lr multipliers.
**Metrics** per run: validation loss (nats/byte, every validation window) after the step budget; steps to
``--target`` (first step whose 10-step mean training loss is ≤ target); divergence (:func:`divergence`: a
non-finite loss, or a 10-step mean above 1.5× the lowest earlier one from step 20 on); stalled (a finite
validation loss above :func:`unigram_loss` − 0.1: the model learned little beyond byte frequencies — how a
deep post-LN model fails without warmup here, rather than by a NaN).

**Schemes** (:data:`SCHEMES`): ``torch`` (each module's ``reset_parameters``, the anchor), ``hf``, ``auto``,
``auto+gpt2``, ``auto+deepnet``, ``auto+deepnet-a``, ``auto+tfixup``, ``auto+measured``, ``mup``. Each calls the
library preset when initlab has it, and otherwise a **reference** implementation of the same formulas written
here (:func:`reference_formulas` lists them; output rows say ``ref``). ``--impl reference`` forces those.

    python benchmarks/lm_depth.py               # default: post-LN depth 48, 3 schemes, 50 steps, ≈ 5 min
    python benchmarks/lm_depth.py --full --jobs 2 --out benchmarks/results/lm_depth_full.json  # 204 runs, 5–10 h
    python benchmarks/lm_depth.py --norms post --depths 48 --schemes torch,auto --seeds 0,1,2 --steps 300

Results are checkpointed per run in the ``--out`` JSON; a rerun resumes (a changed setting is an error).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------------------------- corpus

#: (path under the stdlib, SHA-256): byte-identical in CPython 3.10.13, 3.11.2, 3.11.7, 3.12.1, 3.12.10;
#: every such file of >= 2 kB outside encodings/ (code-page tables), test/, idlelib/, tkinter/, lib2to3/.
CORPUS_FILES: tuple[tuple[str, str], ...] = (
    ("_compression.py", "3ad5d60627477a60939ee44fc1bb3a05dbe8fb52f0f75039b8f5d8f1a278b981"),
    ("_markupbase.py", "cb14dd6f2e2439eb70b806cd49d19911363d424c2b6b9f4b73c9c08022d47030"),
    ("_py_abc.py", "f9c6fe3dd9b51bd7d93f867356e9d362600c924febfd903ee1c6e298860dca92"),
    ("_sitebuiltins.py", "b9388bc1d6d12ed6be12da420ab1feca40f99c0e33ec315d92b1e01cb69b25bc"),
    ("_threading_local.py", "e1bf3dae66d0bfa63c8bb8a1d10c611203c35c636f7f5191fd56105788ef29cb"),
    ("asyncio/format_helpers.py", "6377b672b3f4ba8b6f0f7a5f0ea00cde24c8cddc0ca764e3329f302763477f59"),
    ("asyncio/protocols.py", "1d1b49988c338b4ef06e30f9e92d9db2e00080c341f0a3f573bb8312deb8aff6"),
    ("asyncio/windows_utils.py", "e6fcffefa2521666bc2aed0f5caf8e862c1c1014ad12d2ab5fbce09c2df9c6f0"),
    ("bz2.py", "76ab3252924e71e859d7d90e8d3db13b6554975cfcac0fdadced4de7f8779330"),
    ("curses/__init__.py", "d8730e360dd00ec046bdd85cae41fe83c907c6ae3716a964158fce8f31ab28b0"),
    ("curses/has_key.py", "15a052812d9ae80124bb25b3f5b9ffae38e2b03073774e163abf3d773140cfb3"),
    ("email/_encoded_words.py", "4178321600c0a19ca04cfe8542ce44487f339d15d89a473b58cea63c0b230217"),
    ("email/_parseaddr.py", "4308932872acbf4a674312a45a49b870e48026e3dfedc878ee2f512ddf2f30ba"),
    ("getpass.py", "e74fd445337ff503223dd8aa4bdd7d04917067d00c796a10bedb7a1381a4960a"),
    ("importlib/metadata/_functools.py", "3ec636fb8aeb297e1155e442d681a9d65075a660bd78a37cf3f7fe6c3f6e3a80"),
    ("json/__init__.py", "d5d41e2c29049515d295d81a6d40b4890fbec8d8482cfb401630f8ef2f77e4d5"),
    ("json/tool.py", "d5174b728b376a12cff3f17472d6b9b609c1d3926f7ee02d74d60c80afd60c77"),
    ("lzma.py", "58fb9d2fdc8a8af7b25e218f17ea3b51bdfa53bdf40f440ab33c605974ca5c2e"),
    ("multiprocessing/dummy/__init__.py", "9127a40ea0ff342cb414383b5e7c594a05be2dd835fe246bd3bb0dc036a32a90"),
    ("multiprocessing/heap.py", "f6bb79bb99b9ae484935f0d68822e9603a1622dd0b6c4966c79db232a93ba614"),
    ("multiprocessing/popen_fork.py", "0a09db57e7fab7061c01a61778feea6e2b6bb02ccbc150332f2960b05258ef95"),
    ("multiprocessing/popen_forkserver.py", "0588ad0e5a36718b4377dc2a2a97864a10986c25a33dc3bfed12595711b0cdab"),
    ("multiprocessing/popen_spawn_posix.py", "97b5d25aa479516894489877e6a7921252ee35f51e118c2f1f91f32919e7caa8"),
    ("multiprocessing/reduction.py", "4999f8b9ae7b3e8a7f5de302612b4131498dc2e238a2c47f894905c1c63294fe"),
    ("multiprocessing/shared_memory.py", "51301e70710220e1c494ff5383ac94442a38a4a6622f2eb94e40128c45de1aeb"),
    ("multiprocessing/sharedctypes.py", "77ef522912474652490b7df523112858e51721e63dcf109b8567a35ce9b31b0d"),
    ("optparse.py", "07d224301cba312fa0697bff9cd5a4bb4f778a90629632091b3f4ae874d89af5"),
    ("pyclbr.py", "e8ca09333701ba41244e20b8c2c37b7ed0499b88c4b2ca82cac51ef89ca9e647"),
    ("queue.py", "f6c37fc37cd7440979f7d22d40ee818fa3b714c573610c08fa52911d541193f0"),
    ("shelve.py", "b978c6f0ffa901b041d6518afed03f2938a62168066013ee7d23baac31c356c0"),
    ("stat.py", "052af0327eae6941b69b05c088b3e748f79995635f80ac4cc7125eb333eb4c77"),
    ("stringprep.py", "60b6c83581093029312efb6670b11c540090b3f78bcf72264467b494f02f21a5"),
    ("tracemalloc.py", "c2cc84a05b824df79840c98729a0e94ef8909b11c528a1b2c5a00aa436b97b25"),
    ("unittest/_log.py", "905672317ab26c656c600defce25d477728068f597f00a7f94e22e8128c323b9"),
    ("unittest/signals.py", "f8286e818ca56e10e03745bc056cdfd31147678f9a1dc8cb6b0fe96ef9a4362a"),
    ("unittest/suite.py", "ed2da92bc9f97c53403ee2d3d12cc53b16a96e85d596ebc887b5a93458f3f6bc"),
    ("unittest/util.py", "fdcc640c3505d16deab9c32eae7c3f5f67c3b5e81c563dc6698fa7fcf403854d"),
    ("urllib/response.py", "7e6c3b6d7a95f0d74f5968f51a87adae8a51bf42390cdfec98c7a99203e7bb76"),
    ("wsgiref/headers.py", "0fbf95a47d8e4c0d831fd52312ec43076cbf503c190269876f170a5cf5585fb9"),
    ("wsgiref/simple_server.py", "d435cad48b5f63c0356e1ac70755e6e35eb94b02f9844b813e5762199110bc2b"),
    ("xml/dom/__init__.py", "b415a6f3d3663c3ac332ee4a0f4213eadad9281508dc97410e258a03633b063a"),
    ("xml/dom/domreg.py", "826b02a803930834b96b1086cbee7db1d21c684f65dd3073706dc7bb5ba1a3e8"),
    ("xml/dom/minicompat.py", "42974c4c67803dfe80b016ff8aeea0d1e5c751703ab3aec5be765f4e534367be"),
    ("xml/dom/minidom.py", "af4ee09b06efc54e7fe58032d8338c4bc8578094946d03a200740deab25d97cb"),
    ("xml/sax/handler.py", "64c7aae49f1dd382a7b9012610307bfa1d43a14a5dc09a5c8da30903f6805c3d"),
    ("xml/sax/saxutils.py", "3fe2cdb6386e0c4d42d37c657bbecb78b69c57aedb1610dbd8bf4043944130ab"),
)
VAL_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class Corpus:
    train: torch.Tensor  # uint8 bytes
    val: torch.Tensor
    sha256: str  # of every file's bytes, in CORPUS_FILES order
    root: str


def load_corpus(root: str | os.PathLike | None = None,
                files: Sequence[tuple[str, str]] = CORPUS_FILES) -> Corpus:
    """Read ``files`` under ``root`` (default: this Python's stdlib), check each SHA-256, and split each file
    90/10 into training and validation bytes. Raises naming the first missing or different file."""
    root = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    train, val, whole = bytearray(), bytearray(), hashlib.sha256()
    for rel, want in files:
        path = root / rel
        if not path.is_file():
            raise FileNotFoundError(f"corpus: {path} does not exist; --stdlib must name a CPython 3.10–3.12 Lib "
                                    f"directory holding the {len(files)} files of CORPUS_FILES.")
        data = path.read_bytes()
        got = hashlib.sha256(data).hexdigest()
        if got != want:
            raise ValueError(f"corpus: {path} has SHA-256 {got}, expected {want}: this Python's copy differs from "
                             "the one the benchmark was built on (CPython 3.10.13–3.12.10); pass --stdlib with "
                             "the Lib directory of such a Python.")
        whole.update(data)
        cut = len(data) - max(1, int(len(data) * VAL_FRACTION))
        train += data[:cut]
        val += data[cut:]
    as_tensor = lambda b: torch.frombuffer(bytearray(b), dtype=torch.uint8).clone()  # noqa: E731
    return Corpus(as_tensor(train), as_tensor(val), whole.hexdigest(), str(root))


def unigram_loss(corpus: Corpus) -> float:
    """Validation loss (nats/byte) of the byte-frequency model of the training bytes (add-one smoothed): what a
    model that learned nothing but byte frequencies scores, the line under which a run has learned context."""
    counts = torch.bincount(corpus.train.long(), minlength=256).double() + 1.0
    return float(-(counts / counts.sum()).log()[corpus.val.long()].mean())


def train_batch(data: torch.Tensor, batch: int, context: int, gen: torch.Generator) -> torch.Tensor:
    """``batch`` random windows of ``context + 1`` bytes (inputs and next-byte targets), as int64."""
    starts = torch.randint(0, len(data) - context - 1, (batch,), generator=gen)
    return torch.stack([data[s:s + context + 1] for s in starts.tolist()]).long()


def val_windows(data: torch.Tensor, context: int) -> torch.Tensor:
    """Every non-overlapping window of the validation bytes (the fixed validation set)."""
    n = (len(data) - 1) // context
    return torch.stack([data[i * context:i * context + context + 1] for i in range(n)]).long()


# ------------------------------------------------------------------------------------------------ model

@dataclasses.dataclass(frozen=True)
class GPTConfig:
    depth: int = 6
    width: int = 128
    heads: int = 4
    context: int = 64
    vocab: int = 256
    norm: str = "pre"  # "pre" | "post"

    def __post_init__(self) -> None:
        if self.norm not in ("pre", "post"):
            raise ValueError(f"norm: expected 'pre' or 'post', got {self.norm!r}.")
        if self.width % self.heads:
            raise ValueError(f"width: {self.width} is not divisible by heads={self.heads}.")


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        d = cfg.width
        self.heads, self.post = cfg.heads, cfg.norm == "post"
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.attn_scale: float | None = None  # None: 1/√d_head (μP sets its 1/d_head law here)

    def attn_branch(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        split = lambda y: y.view(b, t, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        y = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), is_causal=True,
                                           scale=self.attn_scale)
        return self.o(y.transpose(1, 2).reshape(b, t, d))

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.post:
            x = self.ln1(x + self.attn_branch(x))
            return self.ln2(x + self.mlp_branch(x))
        x = x + self.attn_branch(self.ln1(x))
        return x + self.mlp_branch(self.ln2(x))

    def branches(self) -> tuple[tuple[Callable, nn.Linear, nn.LayerNorm], ...]:
        """(branch, its output projection, its LayerNorm) in execution order."""
        return (self.attn_branch, self.o, self.ln1), (self.mlp_branch, self.fc2, self.ln2)


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.tok = nn.Embedding(cfg.vocab, cfg.width)
        self.pos = nn.Embedding(cfg.context, cfg.width)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.lnf = nn.LayerNorm(cfg.width) if cfg.norm == "pre" else None  # post-LN ends normalized already
        self.head = nn.Linear(cfg.width, cfg.vocab)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.lnf(h) if self.lnf is not None else h)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.embed(idx)
        for block in self.blocks:
            h = block(h)
        return self.readout(h)


def lm_loss(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    logits = model(windows[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))


# ---------------------------------------------------------------------------------------------- schemes
# A scheme is ``fn(model, example_batch, seed) -> optimizer param groups or None``. The initlab ones call the
# library when it has the preset/option, else the reference formulas below (Scheme.impl says which).

LR = 1e-3
BETAS = (0.9, 0.99)
MUP_BASE_WIDTH = 32  # μP's base model (width_mult 4 at width 128); its shape delta model has width 64


def _n_branches(model: GPT) -> int:
    return 2 * len(model.blocks)


def _normal(t: torch.Tensor, std: float, gen: torch.Generator) -> None:
    with torch.no_grad():
        t.copy_(torch.randn(t.shape, generator=gen) * std)


def _linears(model: GPT):
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def init_torch(model: GPT, batch: torch.Tensor, seed: int) -> None:
    """The anchor: every module's own ``reset_parameters`` (U(±1/√fan_in) Linear, N(0, 1) Embedding)."""
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


def _auto(model: GPT, batch: torch.Tensor, seed: int, **options: Any) -> None:
    import initlab

    initlab.plan(model, "auto", example_input=batch[:, :-1], options=options or None).apply(seed)


def _auto_unscaled(model: GPT, batch: torch.Tensor, seed: int) -> None:
    """The starting point of every residual reference: ``auto`` without its own residual scaling (the library's
    default ``residual='auto'`` would scale the branches first, and the reference would scale them twice)."""
    _auto(model, batch, seed, **({"residual": "none"} if _has_residual_option("none") else {}))


def _hf_reference(model: GPT, batch: torch.Tensor, seed: int) -> None:
    """GPT-2's ``_init_weights`` (transformers ``GPT2PreTrainedModel``): N(0, 0.02) for every Linear and
    Embedding, zero biases, LayerNorm 1/0, and the residual output projections N(0, 0.02/√(2L))."""
    gen = torch.Generator().manual_seed(seed)
    r, n = 0.02, _n_branches(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                _normal(m.weight, r, gen)
            if isinstance(m, (nn.Linear, nn.LayerNorm)) and m.bias is not None:
                m.bias.zero_()
            if isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
        for b in model.blocks:
            for _, proj, _ in b.branches():
                _normal(proj.weight, r / math.sqrt(n), gen)


def _scale(mod: nn.Module, c: float) -> None:
    with torch.no_grad():
        for p in mod.parameters(recurse=False):
            p.mul_(c)


def _gpt2_reference(model: GPT, batch: torch.Tensor, seed: int) -> None:
    """auto, then every residual branch's output projection × 1/√N, N = 2L branches (Radford et al. 2019)."""
    _auto_unscaled(model, batch, seed)
    for b in model.blocks:
        for _, proj, _ in b.branches():
            _scale(proj, _n_branches(model) ** -0.5)


def _deepnet_reference(model: GPT, batch: torch.Tensor, seed: int, fold_alpha: bool = False) -> None:
    """auto, then DeepNorm's decoder-only β = (8L)^(-1/4) on fc1, fc2, v and o (Wang et al. 2022). DeepNorm's
    α = (2L)^(1/4) multiplies the skip in ``LN(α·x + f(x))``, a forward change; ``fold_alpha`` (post-LN only)
    reproduces it at init: every LayerNorm whose output is a skip gets γ = α (the embeddings × α for the
    first), and the branch's input kernels (q, k, v, fc1) ÷ α, so the forward equals DeepNorm's exactly."""
    _auto_unscaled(model, batch, seed)
    depth = len(model.blocks)
    beta, alpha = (8 * depth) ** -0.25, (2 * depth) ** 0.25
    for b in model.blocks:
        for lin in (b.fc1, b.fc2, b.v, b.o):
            _scale(lin, beta)
    if not fold_alpha:
        return
    if model.config.norm != "post":
        raise ValueError("fold_alpha: DeepNorm's α folds into post-LN only (the skip is a LayerNorm output there).")
    with torch.no_grad():
        model.tok.weight.mul_(alpha)
        model.pos.weight.mul_(alpha)
        for i, b in enumerate(model.blocks):
            for lin in (b.q, b.k, b.v, b.fc1):
                lin.weight.div_(alpha)  # biases are zero and are not multiplied by the skip
            b.ln1.weight.fill_(alpha)
            b.ln1.bias.mul_(alpha)
            if i < depth - 1:  # the last LayerNorm feeds the head, not a skip
                b.ln2.weight.fill_(alpha)
                b.ln2.bias.mul_(alpha)


def _tfixup_reference(model: GPT, batch: torch.Tensor, seed: int) -> None:
    """T-Fixup's decoder rule with M = L (Huang et al. 2020; layer6ai-labs/T-Fixup): auto (Xavier-like
    matrices), then fc1, fc2, v and o × (9L)^(-1/4), and the embeddings N(0, d^(-1/2)) × (9L)^(-1/4).
    LayerNorm is kept (the paper removes it)."""
    _auto_unscaled(model, batch, seed)
    factor = (9 * len(model.blocks)) ** -0.25
    for b in model.blocks:
        for lin in (b.fc1, b.fc2, b.v, b.o):
            _scale(lin, factor)
    gen = torch.Generator().manual_seed(seed + 7919)  # the embedding draws are new; any fixed offset will do
    for emb in (model.tok, model.pos):
        _normal(emb.weight, model.config.width ** -0.5 * factor, gen)


def _rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def _measured_reference(model: GPT, batch: torch.Tensor, seed: int, rho: float | None = None) -> None:
    """auto, then one forward pass on the example batch: at each residual add in order, the branch's output
    projection × c = ρ·RMS(skip)/RMS(branch), ρ = 1/√N, and the corrected sum goes on to the next block, so
    the stream's RMS grows at most by ∏(1 + 1/N)^(1/2) ≤ √e at any depth (notes §5, "measured")."""
    _auto_unscaled(model, batch, seed)
    rho = _n_branches(model) ** -0.5 if rho is None else rho
    post = model.config.norm == "post"
    with torch.no_grad():
        h = model.embed(batch[:, :-1])
        for b in model.blocks:
            for branch, proj, ln in b.branches():
                out = branch(h if post else ln(h))
                c = rho * _rms(h) / _rms(out)
                _scale(proj, c)
                h = ln(h + c * out) if post else h + c * out


def _mup_reference(model: GPT, batch: torch.Tensor, seed: int) -> list[dict]:
    """μP (Yang et al. 2022) with the ``mup`` package: head → ``MuReadout`` (output × 1/width_mult), attention
    1/d_head (= 1/√d_head at the base width), ``set_base_shapes`` against width 32 (delta 64), then the
    paper's init — hidden matrices ``mup.init.normal_`` of var 1/fan_in at the base (so 1/fan_in here),
    embeddings N(0, 1), readout and query zero, biases 0, LayerNorm 1/0 — and ``MuAdamW``'s groups
    (hidden matrices lr/width_mult). Changes the model's head and attention scale in place."""
    import mup
    import mup.init

    cfg = model.config

    def with_readout(m: GPT) -> GPT:
        m.head = mup.MuReadout(cfg.width if m is model else m.config.width, cfg.vocab, readout_zero_init=True)
        return m

    d_head_base = MUP_BASE_WIDTH // cfg.heads
    with_readout(model)
    for b in model.blocks:
        b.attn_scale = math.sqrt(d_head_base) / (cfg.width // cfg.heads)
    with torch.device("meta"):
        base = with_readout(GPT(dataclasses.replace(cfg, width=MUP_BASE_WIDTH)))
        delta = with_readout(GPT(dataclasses.replace(cfg, width=2 * MUP_BASE_WIDTH)))
    mup.set_base_shapes(model, base, delta=delta)
    torch.manual_seed(seed)  # mup.init draws from the global generator
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # LayerNorm weights 1; every bias and LayerNorm bias 0
                is_ln = name.split(".")[-2].startswith("ln")
                p.fill_(1.0 if is_ln and name.endswith(".weight") else 0.0)
            elif name.startswith(("tok.", "pos.")):
                p.normal_(0.0, 1.0)
            elif name.startswith("head.") or name.endswith(".q.weight"):
                p.zero_()
            else:
                fan_in_base = p.infshape[1].base_dim
                mup.init.normal_(p, std=fan_in_base ** -0.5)
    opt = mup.MuAdamW(model.parameters(), lr=LR)
    return [{"params": g["params"], "lr": g["lr"]} for g in opt.param_groups]


@dataclasses.dataclass(frozen=True)
class Scheme:
    name: str
    library: Callable[[], bool]  # does initlab have what the library form needs?
    run_library: Callable | None
    run_reference: Callable | None

    def impl(self, force_reference: bool) -> str:
        if self.run_library is None or (self.run_reference is not None and (force_reference or not self.library())):
            return "reference"
        return "library"

    def __call__(self, model: GPT, batch: torch.Tensor, seed: int, impl: str) -> list[dict] | None:
        fn = self.run_library if impl == "library" else self.run_reference
        return fn(model, batch, seed)


def _has_preset(name: str) -> bool:
    from initlab.plan.presets import preset_names

    return name in preset_names()


def _has_residual_option(value: str) -> bool:
    from initlab.plan.presets import preset_options

    opt = preset_options("auto").get("residual")
    return opt is not None and (opt.choices is None or value in opt.choices)


def _library_residual(value: str) -> Callable:
    return lambda model, batch, seed: _auto(model, batch, seed, residual=value)


def _library_preset(preset: str) -> Callable:
    def run(model: GPT, batch: torch.Tensor, seed: int) -> None:
        import initlab

        initlab.plan(model, preset, example_input=batch[:, :-1]).apply(seed)
    return run


def _library_mup(model: GPT, batch: torch.Tensor, seed: int) -> list[dict]:
    """initlab's preset ``mup`` with the reference's choices: base model width 32 (built on meta), delta width 64,
    zero readout; the attention's 1/d_head law is set on the model, as the plan's note on q/k asks."""
    import initlab

    cfg = model.config
    for b in model.blocks:
        b.attn_scale = math.sqrt(MUP_BASE_WIDTH // cfg.heads) / (cfg.width // cfg.heads)
    with torch.device("meta"):
        base = GPT(dataclasses.replace(cfg, width=MUP_BASE_WIDTH))
        delta = GPT(dataclasses.replace(cfg, width=2 * MUP_BASE_WIDTH))
    plan = initlab.plan(model, "mup", example_input=batch[:, :-1],
                        options={"base": base, "delta": delta, "readout": "zero"})
    plan.apply(seed)
    return plan.param_groups(LR)


SCHEMES: dict[str, Scheme] = {
    "torch": Scheme("torch", lambda: True, None, init_torch),
    "hf": Scheme("hf", lambda: _has_preset("hf"), _library_preset("hf"), _hf_reference),
    "auto": Scheme("auto", lambda: True, lambda m, b, s: _auto(m, b, s), None),
    "auto+gpt2": Scheme("auto+gpt2", lambda: _has_residual_option("gpt2"), _library_residual("gpt2"),
                        _gpt2_reference),
    "auto+deepnet": Scheme("auto+deepnet", lambda: _has_residual_option("deepnet"), _library_residual("deepnet"),
                           _deepnet_reference),
    # DeepNorm with its α folded into the init (post-LN only): measured to tell whether the library's
    # β-only deepnet misses something; no library form yet.
    "auto+deepnet-a": Scheme("auto+deepnet-a", lambda: False, None,
                             lambda m, b, s: _deepnet_reference(m, b, s, fold_alpha=True)),
    "auto+tfixup": Scheme("auto+tfixup", lambda: _has_residual_option("tfixup"), _library_residual("tfixup"),
                          _tfixup_reference),
    "auto+measured": Scheme("auto+measured", lambda: _has_residual_option("measured"),
                            _library_residual("measured"), _measured_reference),
    "mup": Scheme("mup", lambda: _has_preset("mup"), _library_mup, _mup_reference),
}
POST_ONLY = {"auto+deepnet-a"}


def reference_formulas() -> dict[str, str]:
    """Each reference scheme's formula (its docstring's first paragraph)."""
    fns = {"torch": init_torch, "hf": _hf_reference, "auto+gpt2": _gpt2_reference, "auto+deepnet": _deepnet_reference,
           "auto+tfixup": _tfixup_reference, "auto+measured": _measured_reference, "mup": _mup_reference}
    return {k: " ".join(f.__doc__.split()) for k, f in fns.items()}


# ---------------------------------------------------------------------------------------------- metrics

WINDOW = 10
SPIKE_FACTOR = 1.5
SPIKE_AFTER = 20


def running_mean(losses: Sequence[float], window: int = WINDOW) -> list[float]:
    """Mean of the last ``window`` losses at each step (fewer at the start)."""
    out, acc = [], 0.0
    for i, x in enumerate(losses):
        acc += x
        if i >= window:
            acc -= losses[i - window]
        out.append(acc / min(i + 1, window))
    return out


def steps_to_target(losses: Sequence[float], target: float, window: int = WINDOW) -> int | None:
    """The first step (1-based) whose ``window``-step mean training loss is <= ``target``; None if none."""
    for i, m in enumerate(running_mean(losses, window)):
        if m <= target:
            return i + 1
    return None


def divergence(losses: Sequence[float], window: int = WINDOW, factor: float = SPIKE_FACTOR,
               after: int = SPIKE_AFTER) -> tuple[str, int] | None:
    """``("nan", step)`` at the first non-finite loss, or ``("spike", step)`` at the first step >= ``after``
    (1-based, and >= ``window``) whose ``window``-step mean exceeds ``factor`` × the lowest full-window mean
    before it; None if neither happens."""
    for i, x in enumerate(losses):
        if not math.isfinite(x):
            return "nan", i + 1
    means = running_mean(losses, window)
    low = math.inf
    for i in range(window - 1, len(means)):
        if i + 1 >= after and means[i] > factor * low:
            return "spike", i + 1
        low = min(low, means[i])
    return None


# --------------------------------------------------------------------------------------------- training

@dataclasses.dataclass(frozen=True)
class RunSpec:
    norm: str
    depth: int
    scheme: str
    seed: int
    impl: str  # "library" | "reference"

    @property
    def key(self) -> str:
        return f"{self.norm}/{self.depth}/{self.scheme}/{self.seed}/{self.impl}"


@dataclasses.dataclass(frozen=True)
class Settings:
    steps: int = 150
    batch: int = 16
    context: int = 64
    width: int = 128
    heads: int = 4
    lr: float = LR
    target: float = 2.5
    corpus_sha256: str = ""


def run_one(spec: RunSpec, settings: Settings, corpus: Corpus, log_every: int = 0) -> dict:
    """Build, initialize and train one model; the record of the run (see the module docstring). ``log_every``:
    print the 10-step mean loss to stderr every that many steps (0: never)."""
    cfg = GPTConfig(depth=spec.depth, width=settings.width, heads=settings.heads, context=settings.context,
                    norm=spec.norm)
    torch.manual_seed(spec.seed)
    model = GPT(cfg)
    data_gen = torch.Generator().manual_seed(10_000 + spec.seed)
    example = train_batch(corpus.train, settings.batch, settings.context, torch.Generator().manual_seed(spec.seed))
    t0 = time.perf_counter()
    groups = SCHEMES[spec.scheme](model, example, spec.seed, spec.impl)
    init_s = time.perf_counter() - t0
    params = groups if groups is not None else model.parameters()
    opt = torch.optim.AdamW(params, lr=settings.lr, betas=BETAS, eps=1e-8, weight_decay=0.0)
    with torch.no_grad():
        init_loss = float(lm_loss(model, example))
    losses: list[float] = []
    t0 = time.perf_counter()
    for _ in range(settings.steps):
        loss = lm_loss(model, train_batch(corpus.train, settings.batch, settings.context, data_gen))
        losses.append(float(loss.detach()))
        if log_every and len(losses) % log_every == 0:
            print(f"    {spec.key} step {len(losses)}: loss {running_mean(losses)[-1]:.3f}", file=sys.stderr, flush=True)
        if not math.isfinite(losses[-1]):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - t0
    div = divergence(losses)
    val = math.nan
    if div is None or div[0] != "nan":
        with torch.no_grad():
            windows = val_windows(corpus.val, settings.context)
            val = sum(float(lm_loss(model, w)) * len(w) for w in windows.split(64)) / len(windows)
    return {**dataclasses.asdict(spec), "key": spec.key, "val_loss": val, "init_loss": init_loss,
            "final_train": running_mean(losses)[-1] if losses else math.nan,
            "steps_to_target": steps_to_target(losses, settings.target), "divergence": div,
            "steps_run": len(losses), "losses": [round(x, 3) for x in losses], "init_s": round(init_s, 2),
            "step_s": round(train_s / max(len(losses), 1), 4)}


# ---------------------------------------------------------------------------------------------- results

def load_results(path: Path, meta: dict) -> dict[str, dict]:
    """Runs already recorded in ``path`` (empty if none); an error if it was made with other settings."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    if data.get("meta") != meta:
        diff = sorted(k for k in set(meta) | set(data.get("meta", {})) if meta.get(k) != data.get("meta", {}).get(k))
        raise ValueError(f"--out: {path} holds runs made with other settings (differ: {', '.join(diff)}); "
                         "pass another --out, or delete the file to start over.")
    return data["runs"]


def save_results(path: Path, meta: dict, runs: dict[str, dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"meta": meta, "runs": runs}, indent=0))
    os.replace(tmp, path)  # atomic: an interrupted run never leaves a half-written file


#: a run whose validation loss is above (unigram loss − STALL_MARGIN) learned (almost) nothing beyond byte
#: frequencies: it stalled. 0.1 nats is 5× the seed-to-seed sd of the runs that train (0.02).
STALL_MARGIN = 0.1


def summarize(runs: Sequence[dict], unigram: float = math.nan) -> list[dict]:
    """One row per (norm, depth, scheme, impl): val loss mean ± sd over the finite runs, NaN count,
    divergences, stalled runs (finite val loss above ``unigram`` − :data:`STALL_MARGIN`), steps to target
    (median over the runs that reached it, and k/n)."""
    cells: dict[tuple, list[dict]] = {}
    for r in runs:
        cells.setdefault((r["norm"], r["depth"], r["scheme"], r["impl"]), []).append(r)
    rows = []
    for (norm, depth, scheme, impl), rs in sorted(cells.items(), key=lambda kv: _order(kv[0])):
        vals = [r["val_loss"] for r in rs if math.isfinite(r["val_loss"])]
        reached = sorted(r["steps_to_target"] for r in rs if r["steps_to_target"] is not None)
        rows.append({
            "norm": norm, "depth": depth, "scheme": scheme, "impl": impl, "seeds": len(rs),
            "val_mean": statistics.fmean(vals) if vals else math.nan,
            "val_sd": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "nan": sum(1 for r in rs if r["divergence"] and r["divergence"][0] == "nan"),
            "diverged": sum(1 for r in rs if r["divergence"]),
            "stalled": sum(1 for v in vals if v > unigram - STALL_MARGIN),
            "reached": len(reached), "steps_to_target": statistics.median(reached) if reached else None,
        })
    return rows


def _order(key: tuple) -> tuple:
    norm, depth, scheme, impl = key
    names = list(SCHEMES)
    return (norm != "pre", depth, names.index(scheme) if scheme in names else len(names), impl)


def _rank(row: dict) -> tuple:
    """Better first: fewer NaN runs, fewer divergences, lower mean validation loss."""
    return (row["nan"], row["diverged"], row["val_mean"] if math.isfinite(row["val_mean"]) else math.inf)


def auto_check(rows: Sequence[dict], tolerance: float = 0.02) -> list[dict]:
    """Per (norm, depth): the best scheme other than ``auto`` (by :func:`_rank`), and whether ``auto`` is at
    least as good: no more NaN runs or divergences, and a mean validation loss within the noise —
    the standard error of the difference, or ``tolerance`` nats when that is smaller (with one seed it is
    the only allowance; 0.02 ≈ the seed-to-seed sd measured in the pilots)."""
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["norm"], r["depth"]), []).append(r)
    out = []
    for (norm, depth), rs in cells.items():
        auto = next((r for r in rs if r["scheme"] == "auto"), None)
        others = [r for r in rs if r["scheme"] != "auto"]
        if auto is None or not others:
            continue
        best = min(others, key=_rank)
        n = min(auto["seeds"], best["seeds"])
        noise = math.sqrt((auto["val_sd"] ** 2 + best["val_sd"] ** 2) / n) if n > 1 else 0.0
        gap = auto["val_mean"] - best["val_mean"]
        ok = (auto["nan"] <= best["nan"] and auto["diverged"] <= best["diverged"]
              and math.isfinite(auto["val_mean"]) and gap <= max(noise, tolerance))
        out.append({"norm": norm, "depth": depth, "best": best["scheme"], "best_impl": best["impl"],
                    "best_val": best["val_mean"], "auto_val": auto["val_mean"], "gap": gap, "noise": noise,
                    "auto_at_least_as_good": ok})
    return out


def _impl_label(row: dict) -> str:
    if row["scheme"] == "torch":
        return "torch"  # the anchor: the modules' own reset_parameters, neither initlab nor a stand-in for it
    return "ref" if row["impl"] == "reference" else "lib"


def markdown(rows: Sequence[dict], checks: Sequence[dict], target: float) -> str:
    lines = [f"| LN | depth | scheme | impl | val loss (nats/byte) | steps to {target:g} (k/n) | diverged | stalled |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        val = "NaN" if not math.isfinite(r["val_mean"]) else f"{r['val_mean']:.3f} ± {r['val_sd']:.3f}"
        if r["nan"] and math.isfinite(r["val_mean"]):
            val += f" ({r['seeds'] - r['nan']} finite)"
        stt = "–" if r["steps_to_target"] is None else f"{r['steps_to_target']:g}"
        div = f"{r['diverged']}/{r['seeds']}" + (f" ({r['nan']} NaN)" if r["nan"] else "")
        lines.append(f"| {r['norm']} | {r['depth']} | {r['scheme']} | {_impl_label(r)} | {val} | {stt} "
                     f"({r['reached']}/{r['seeds']}) | {div} | {r['stalled']}/{r['seeds']} |")
    if checks:
        lines += ["", "| LN | depth | best other scheme | its val | auto val | auto − best | auto ≥ best? |",
                  "|---|---|---|---|---|---|---|"]
        for c in checks:
            lines.append(f"| {c['norm']} | {c['depth']} | {c['best']} | {c['best_val']:.3f} | {c['auto_val']:.3f} | "
                         f"{c['gap']:+.3f} (noise {c['noise']:.3f}) | {'yes' if c['auto_at_least_as_good'] else 'NO'} |")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- CLI

#: The default run: the issue's hardest cell (post-LN, depth 48, no warmup) with the anchor, auto and the
#: one residual option that trained there, 50 steps (the curves part by step 40): ≈ 5 min on 2 idle cores.
DEFAULT = {"norms": ("post",), "depths": (48,), "schemes": ("torch", "auto", "auto+deepnet-a"),
           "seeds": (0,), "steps": 50}
FULL = {"norms": ("pre", "post"), "depths": (6, 12, 24, 48), "schemes": tuple(SCHEMES), "seeds": (0, 1, 2),
        "steps": 150}


LOG_EVERY = 50


def _worker(spec: RunSpec, settings: Settings, stdlib: str, log_every: int) -> dict:
    torch.set_num_threads(1)
    return run_one(spec, settings, load_corpus(stdlib), log_every)


def run_grid(specs: Sequence[RunSpec], settings: Settings, corpus: Corpus, out: Path, jobs: int,
             progress: bool = True) -> dict[str, dict]:
    """Run every spec not yet in ``out`` (``jobs`` processes of one torch thread each), saving after each."""
    meta = dataclasses.asdict(settings)
    runs = load_results(out, meta)
    todo = [s for s in specs if s.key not in runs]
    if progress:
        print(f"{len(specs) - len(todo)} runs resumed from {out}, {len(todo)} to run", file=sys.stderr)

    def record(r: dict) -> None:
        runs[r["key"]] = r
        save_results(out, meta, runs)
        if progress:
            div = f" {r['divergence'][0]}@{r['divergence'][1]}" if r["divergence"] else ""
            print(f"  {r['key']}: val {r['val_loss']:.3f}, to target {r['steps_to_target']}{div}, "
                  f"{r['step_s']:.3f} s/step", file=sys.stderr)

    if jobs <= 1:
        for s in todo:
            record(run_one(s, settings, corpus, LOG_EVERY if progress else 0))
    else:
        # big depths first, so the last minutes are not one long run on one core
        todo.sort(key=lambda s: -s.depth)
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            futs = [pool.submit(_worker, s, settings, corpus.root, LOG_EVERY if progress else 0) for s in todo]
            for f in as_completed(futs):
                record(f.result())
    return runs


def _csv(kind: Callable, text: str) -> tuple:
    return tuple(kind(x) for x in text.split(",") if x)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the whole grid: pre/post × 6/12/24/48 × every "
                        "scheme × seeds 0–2, 150 steps (≈ 5–10 h on 2 cores; see the README)")
    parser.add_argument("--norms", type=lambda t: _csv(str, t), help="e.g. pre,post")
    parser.add_argument("--depths", type=lambda t: _csv(int, t), help="e.g. 6,12,24,48")
    parser.add_argument("--schemes", type=lambda t: _csv(str, t), help=f"from {', '.join(SCHEMES)}")
    parser.add_argument("--seeds", type=lambda t: _csv(int, t), help="e.g. 0,1,2")
    parser.add_argument("--steps", type=int, help="step budget per run")
    parser.add_argument("--target", type=float, default=Settings.target, help="training loss for steps-to-target")
    parser.add_argument("--impl", choices=("auto", "reference"), default="auto",
                        help="auto: the library where it has the scheme, else the reference; reference: always")
    parser.add_argument("--jobs", type=int, default=2, help="parallel runs, one torch thread each")
    parser.add_argument("--stdlib", help="the Lib directory to read the corpus from (default: this Python's)")
    parser.add_argument("--out", type=Path, help="results JSON (resumed if present)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--table", action="store_true",
                        help="run nothing: print the tables of every run already in --out")
    args = parser.parse_args(argv)
    base = FULL if args.full else DEFAULT
    grid = {k: getattr(args, k) or base[k] for k in ("norms", "depths", "schemes", "seeds", "steps")}
    bad = [s for s in grid["schemes"] if s not in SCHEMES]
    if bad:
        parser.error(f"--schemes: unknown {bad[0]!r}; choose from {', '.join(SCHEMES)}.")
    bad_norm = [n for n in grid["norms"] if n not in ("pre", "post")]
    if bad_norm:
        parser.error(f"--norms: expected pre and/or post, got {bad_norm[0]!r}.")
    if args.jobs < 1:
        parser.error(f"--jobs: expected >= 1, got {args.jobs}.")
    corpus = load_corpus(args.stdlib)
    torch.set_num_threads(1)  # one thread per run: as fast for these sizes, and fair when runs share the cores
    print(f"corpus: {len(CORPUS_FILES)} files under {corpus.root}, {len(corpus.train)} train + {len(corpus.val)} "
          f"validation bytes, SHA-256 {corpus.sha256}", file=sys.stderr)
    settings = Settings(steps=grid["steps"], target=args.target, corpus_sha256=corpus.sha256)
    specs = [RunSpec(n, d, s, seed, SCHEMES[s].impl(args.impl == "reference"))
             for n in grid["norms"] for d in grid["depths"] for s in grid["schemes"] for seed in grid["seeds"]
             if not (s in POST_ONLY and n != "post")]
    out = args.out or Path("bench-out") / f"lm_depth_{'full' if args.full else 'default'}.json"
    unigram = unigram_loss(corpus)
    if args.table:
        if not out.exists():
            parser.error(f"--table: {out} does not exist; pass --out with a results JSON of this benchmark.")
        data = json.loads(out.read_text())
        rows = summarize(list(data["runs"].values()), unigram)
        print(markdown(rows, auto_check(rows), data["meta"]["target"]))
        print(f"\nsettings {data['meta']}; unigram validation loss {unigram:.3f}")
        return 0
    try:  # a results file made with other settings is the user's argument error, before any run starts
        load_results(out, dataclasses.asdict(settings))
    except ValueError as err:
        parser.error(str(err))
    start = time.perf_counter()
    runs = run_grid(specs, settings, corpus, out, args.jobs, progress=not args.no_progress)
    wanted = {s.key for s in specs}
    rows = summarize([r for k, r in runs.items() if k in wanted], unigram)
    checks = auto_check(rows)
    table = markdown(rows, checks, settings.target)
    print(table)
    print(f"\n{len(specs)} runs, {time.perf_counter() - start:.0f} s; torch {torch.__version__}, 1 thread per run, "
          f"{args.jobs} at once; python {platform.python_version()}; corpus SHA-256 {corpus.sha256[:16]}…; "
          "impl ref = reference formulas in this file (the library preset is pending), lib = initlab; "
          f"stalled = val loss above the byte-frequency model's {unigram:.3f} − {STALL_MARGIN}")
    out.with_suffix(".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
