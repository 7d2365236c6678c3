"""Statistics of token representations and attention maps: attention entropy per head, the attention
probabilities of ``F.scaled_dot_product_attention`` recomputed from its arguments, and the mean cosine
between the tokens of a sequence (rank collapse, Dong, Cordonnier & Loukas 2021, arXiv:2103.03404).

Plain functions of tensors, used by :mod:`initlab.inspect.transformer` during a run and by the tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

__all__ = ["attention_entropy", "sdpa_entropy", "sdpa_probabilities", "token_cosine"]

#: Elements of one chunk of recomputed attention scores (float32: 64 MB), so a long sequence is done a
#: few heads at a time instead of materializing all of B·H·Q·K at once.
_CHUNK = 1 << 24


class _EntropySums:
    """Per-head running sums of the row entropies and of the normalized ones (see :func:`attention_entropy`)."""

    def __init__(self, heads: int, device: torch.device) -> None:
        z = lambda: torch.zeros(heads, dtype=torch.float64, device=device)  # noqa: E731
        self.ent, self.rows, self.norm, self.norm_rows = z(), z(), z(), z()

    def add(self, p: torch.Tensor, h0: int, h1: int) -> None:
        """Rows of the (B, h1 − h0, Q, K) probabilities ``p`` of heads h0…h1−1."""
        q = p.detach().to(torch.float64)
        ent = -torch.special.xlogy(q, q).sum(-1)  # (B, h, Q); 0·log 0 = 0
        support = (q > 0).sum(-1)
        ok = ~torch.isnan(ent)
        self.ent[h0:h1] += torch.where(ok, ent, 0.0).sum((0, 2))
        self.rows[h0:h1] += ok.sum((0, 2))
        wide = ok & (support > 1)
        normed = ent / support.clamp_min(2).to(torch.float64).log()
        self.norm[h0:h1] += torch.where(wide, normed, 0.0).sum((0, 2))
        self.norm_rows[h0:h1] += wide.sum((0, 2))

    def result(self) -> tuple[list[float], list[float | None]]:
        ent = [s / n if n > 0 else math.nan for s, n in zip(self.ent.tolist(), self.rows.tolist(), strict=True)]
        norm = [s / n if n > 0 else None for s, n in zip(self.norm.tolist(), self.norm_rows.tolist(), strict=True)]
        return ent, norm


def attention_entropy(probs: torch.Tensor) -> tuple[list[float], list[float | None]]:
    """Per head: the mean over batch and query rows of H = −Σ_k p log p (nats), and of H / log(n_k), where
    n_k is the number of keys the row gives a non-zero probability (1.0 = uniform over the keys it sees,
    so causal rows, which see fewer keys, are comparable). ``probs`` is (B, H, Q, K), or (H, Q, K).

    Rows that hold a NaN (a fully masked row of ``scaled_dot_product_attention``) are left out of both
    means; rows that see one key (entropy 0, nothing to normalize) are left out of the normalized one,
    whose entry is None for a head with no such row. Sums are taken in float64, a few heads at a time.
    """
    p = probs.unsqueeze(0) if probs.dim() == 3 else probs
    if p.dim() != 4:
        raise ValueError(f"probs: expected a (B, H, Q, K) tensor of attention probabilities, got shape "
                         f"{tuple(probs.shape)}.")
    sums = _EntropySums(p.shape[1], p.device)
    for h0, h1 in _head_chunks(p.shape):
        sums.add(p[:, h0:h1], h0, h1)
    return sums.result()


def sdpa_entropy(
    query: torch.Tensor,
    key: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> tuple[list[float], list[float | None]]:
    """:func:`attention_entropy` of the probabilities of ``F.scaled_dot_product_attention`` (recomputed by
    :func:`sdpa_probabilities`, a few heads at a time so a long sequence never holds all of B·H·Q·K)."""
    q4 = query if query.dim() >= 4 else query.reshape((1,) * (4 - query.dim()) + tuple(query.shape))
    shape = torch.Size((math.prod(q4.shape[:-3]), q4.shape[-3], query.shape[-2], key.shape[-2]))
    sums = _EntropySums(shape[1], query.device)
    for h0, h1 in _head_chunks(shape):
        p = sdpa_probabilities(query, key, attn_mask, is_causal, scale, enable_gqa, heads=(h0, h1))
        sums.add(p.reshape(-1, h1 - h0, *p.shape[-2:]), h0, h1)
    return sums.result()


def _head_chunks(shape: torch.Size) -> Iterator[tuple[int, int]]:
    """Ranges of heads whose (B, h, Q, K) slice has at most :data:`_CHUNK` elements (at least one head)."""
    b, heads = shape[0], shape[1]
    per_head = max(1, b * math.prod(shape[2:]))
    step = max(1, _CHUNK // per_head)
    for h0 in range(0, heads, step):
        yield h0, min(heads, h0 + step)


def sdpa_probabilities(
    query: torch.Tensor,
    key: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    heads: tuple[int, int] | None = None,
) -> torch.Tensor:
    """The attention probabilities softmax(q·kᵀ·scale + mask) that ``F.scaled_dot_product_attention(query,
    key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)`` weighs the values with (before
    dropout), as its documented reference implementation defines them: scale 1/√E by default; ``is_causal``
    keeps key j ≤ query i (top-left aligned); a boolean mask keeps the True entries, a float mask is added;
    with ``enable_gqa`` (or fewer key heads than query heads) each key head serves H_q/H_kv query heads.
    ``heads=(h0, h1)`` computes only those query heads. Computed in float32 at least (float64 stays).
    """
    dtype = torch.promote_types(query.dtype, torch.float32)
    q = query.detach().to(dtype)
    k = key.detach().to(dtype)
    if q.dim() >= 3 and k.dim() >= 3 and k.shape[-3] != q.shape[-3]:
        if q.shape[-3] % k.shape[-3]:
            raise ValueError(f"query has {q.shape[-3]} heads and key {k.shape[-3]}: not a grouped-query split.")
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
    h0, h1 = heads if heads is not None else (0, q.shape[-3] if q.dim() >= 3 else 1)
    if q.dim() >= 3:
        q, k = q[..., h0:h1, :, :], k[..., h0:h1, :, :]
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    scores = torch.matmul(q, k.transpose(-2, -1)) * s
    n_q, n_k = scores.shape[-2], scores.shape[-1]
    if is_causal:
        keep = torch.ones(n_q, n_k, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        m = attn_mask.detach()
        if m.dim() >= 3 and query.dim() >= 3 and m.shape[-3] == query.shape[-3] and heads is not None:
            m = m[..., h0:h1, :, :]
        scores = scores.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else scores + m.to(dtype)
    return torch.softmax(scores, dim=-1)


def token_cosine(x: torch.Tensor) -> float | None:
    """The mean cosine similarity between different tokens of each sequence of ``x`` (B, S, D), averaged
    over the batch: 1.0 when every token of a sequence is the same vector (rank collapse), ≈ 0 for tokens
    in independent directions. None when ``x`` is not 3-D or a sequence has fewer than 2 tokens.

    In O(B·S·D): with unit vectors u_s, Σ_{s≠t} u_s·u_t = ‖Σ_s u_s‖² − Σ_s ‖u_s‖² (a zero token counts as
    a zero vector: its cosines are 0). Float64.
    """
    if x.dim() != 3 or x.shape[1] < 2 or x.numel() == 0:
        return None
    d = x.detach().to(torch.float64)
    u = torch.nn.functional.normalize(d, dim=-1)
    total = u.sum(1).pow(2).sum(-1)  # (B,)
    own = u.pow(2).sum((1, 2))
    s = x.shape[1]
    return float(((total - own) / (s * (s - 1))).mean())
