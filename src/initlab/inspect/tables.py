"""Rich tables of the report's transformer sections (per residual add; attention entropy per head) and the
number format the report's tables share."""

from __future__ import annotations

import math
from typing import Any

from .rows import AttentionStats, ResidualStats

__all__ = ["attention_table", "residual_table"]


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if pct:
            return f"{100 * v:.0f}%"
        return f"{v:.3g}"
    return str(v)


def _tail(name: str, block: str) -> str:
    """``attn.c_proj.weight`` for ``transformer.h.3.attn.c_proj.weight`` in block ``transformer.h.3``."""
    return name[len(block) + 1:] if block and name.startswith(block + ".") else name


def residual_table(rows: list[ResidualStats]) -> Any:
    """The per-add table of the residual streams (rich)."""
    from rich.table import Table

    t = Table(title="Residual streams (per residual add)", header_style="bold")
    for col in ("stream", "block", "branch out-proj", "LN", "RMS skip", "RMS branch", "branch/stream",
                "growth", "token cos"):
        t.add_column(col, justify="left" if col in ("stream", "block", "branch out-proj", "LN") else "right")
    for r in rows:
        t.add_row(
            f"{r.stream} {r.stream_name}" if r.position == 1 else "",
            r.block,
            _tail(r.out_proj, r.block),
            r.placement,
            _fmt(r.rms_skip),
            _fmt(r.rms_branch),
            _fmt(r.ratio),
            _fmt(r.growth),
            _fmt(r.token_cosine),
        )
    return t

def attention_table(rows: list[AttentionStats]) -> Any:
    """The per-call table of attention entropies per head (rich)."""
    from rich.table import Table

    t = Table(title="Attention (entropy per head, nats; normalized: / log(keys seen), 1 = uniform)",
              header_style="bold")
    for col in ("module", "source", "heads", "q × k", "entropy (min–max)", "normalized (min–max)"):
        t.add_column(col, justify="left" if col in ("module", "source") else "right")
    for a in rows:
        norm = [v for v in a.entropy_normalized if v is not None]
        t.add_row(
            a.path if a.call == 1 else f"{a.path}#{a.call}",
            a.source,
            str(a.heads),
            f"{a.queries}×{a.keys}",
            f"{_fmt(a.mean_entropy)} ({_fmt(min(a.entropy))}–{_fmt(max(a.entropy))})" if a.entropy else "–",
            f"{_fmt(a.mean_entropy_normalized)} ({_fmt(min(norm))}–{_fmt(max(norm))})" if norm else "–",
        )
    return t
