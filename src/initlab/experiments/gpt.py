"""A GPT/Llama-style decoder to try sharded initialization on (written for initlab, not torchtitan's code).

Module names follow torchtitan's layout — ``tok_embeddings``, ``layers.<i>.attention.{wq,wk,wv,wo}``,
``layers.<i>.feed_forward.{w1,w2[,w3]}``, ``layers.<i>.{attention_norm,ffn_norm}``, ``norm``,
``output`` — so a tensor-parallel plan (:func:`tp_plan`) reads as theirs does. Attention reshapes with
``-1`` heads, so it runs unchanged on tensor-parallel shards (heads split across ranks). Build it under
``torch.device("meta")``, shard it (``fully_shard``, ``parallelize_module``), ``to_empty``, then
``initlab.plan(...).apply(seed)``.

>>> import torch
>>> with torch.device("meta"):
...     m = GPT(GPTConfig(vocab=256, dim=64, n_layers=2, n_heads=4))
>>> sum(p.numel() for p in m.parameters())
131392
>>> n_params(CONFIGS["1.3b"]), n_params(CONFIGS["70b"])
(1339131904, 68976648192)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CONFIGS", "GPT", "GPTConfig", "n_params", "tp_plan"]


@dataclass(frozen=True)
class GPTConfig:
    vocab: int = 256
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None  # grouped-query attention (Llama-2-70B: 8)
    ffn_dim: int | None = None  # default 4·dim (gelu) or Llama's 8/3·dim rounded up to 256 (swiglu)
    mlp: str = "gelu"  # "gelu" (GPT-2/3) or "swiglu" (Llama)
    norm: str = "layernorm"  # "layernorm" or "rmsnorm"
    bias: bool = False

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def hidden(self) -> int:
        if self.ffn_dim:
            return self.ffn_dim
        if self.mlp == "gelu":
            return 4 * self.dim
        h = int(2 * 4 * self.dim / 3)
        return 256 * ((h + 255) // 256)


#: GPT-3 XL's width and depth with a Llama-size vocabulary, untied output (1.34 B parameters), and
#: Llama-2-70B's shape (68.98 B: grouped-query attention with 8 KV heads, SwiGLU 28672, RMSNorm).
CONFIGS = {
    "1.3b": GPTConfig(vocab=32000, dim=2048, n_layers=24, n_heads=16),
    "70b": GPTConfig(vocab=32000, dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, ffn_dim=28672, mlp="swiglu",
                     norm="rmsnorm"),
}


def _norm(cfg: GPTConfig) -> nn.Module:
    return nn.LayerNorm(cfg.dim, bias=cfg.bias) if cfg.norm == "layernorm" else nn.RMSNorm(cfg.dim)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        hd = cfg.dim // cfg.n_heads
        self.head_dim, self.rep = hd, cfg.n_heads // cfg.kv_heads
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * hd, bias=cfg.bias)
        self.wk = nn.Linear(cfg.dim, cfg.kv_heads * hd, bias=cfg.bias)
        self.wv = nn.Linear(cfg.dim, cfg.kv_heads * hd, bias=cfg.bias)
        self.wo = nn.Linear(cfg.n_heads * hd, cfg.dim, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.wq(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        if self.rep > 1:
            k, v = k.repeat_interleave(self.rep, dim=1), v.repeat_interleave(self.rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(b, s, -1))


class FeedForward(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        self.w1 = nn.Linear(cfg.dim, cfg.hidden, bias=cfg.bias)
        self.w2 = nn.Linear(cfg.hidden, cfg.dim, bias=cfg.bias)
        if self.swiglu:
            self.w3 = nn.Linear(cfg.dim, cfg.hidden, bias=cfg.bias)
        self.act = nn.SiLU() if self.swiglu else nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.w1(x))
        return self.w2(h * self.w3(x) if self.swiglu else h)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.attention_norm, self.attention = _norm(cfg), Attention(cfg)
        self.ffn_norm, self.feed_forward = _norm(cfg), FeedForward(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.feed_forward(self.ffn_norm(x))


class GPT(nn.Module):
    """Token embedding, ``n_layers`` pre-norm blocks, a final norm and an untied output projection."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = _norm(cfg)
        self.output = nn.Linear(cfg.dim, cfg.vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h)
        return self.output(self.norm(h))


def n_params(cfg: GPTConfig) -> int:
    """Parameters of ``GPT(cfg)``, counted on meta (no memory)."""
    with torch.device("meta"):
        return sum(p.numel() for p in GPT(cfg).parameters())


def tp_plan(model: GPT) -> dict[str, Any]:
    """Megatron-style tensor parallelism for ``parallelize_module``: q, k, v, w1 (and w3) column-wise,
    wo and w2 row-wise, so each block's activations come back replicated."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    out: dict[str, Any] = {}
    for i, blk in enumerate(model.layers):
        for name in ("wq", "wk", "wv"):
            out[f"layers.{i}.attention.{name}"] = ColwiseParallel()
        out[f"layers.{i}.attention.wo"] = RowwiseParallel()
        out[f"layers.{i}.feed_forward.w1"] = ColwiseParallel()
        if blk.feed_forward.swiglu:
            out[f"layers.{i}.feed_forward.w3"] = ColwiseParallel()
        out[f"layers.{i}.feed_forward.w2"] = RowwiseParallel()
    return out
