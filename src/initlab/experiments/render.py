"""Shared output helpers for the experiments: rich progress bars, matplotlib figures, a self-contained
HTML page (figures embedded as base64 PNG data URIs, so the one file is the whole report)."""

from __future__ import annotations

import base64
import contextlib
import html
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = [
    "HtmlReport",
    "plot_accuracy_vs_depth",
    "plot_learning_curves",
    "progress_bar",
]


@contextlib.contextmanager
def progress_bar(*, enabled: bool = True, transient: bool = False) -> Iterator[Progress]:
    """A rich progress display (disabled: the same API, nothing drawn)."""
    bar = Progress(
        TextColumn("[progress.description]{task.description:<40}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=transient,
    )
    with bar:
        yield bar


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


#: One colour per init name, the same in every figure.
INIT_COLOURS = {
    "normal1": "#d62728",
    "normal001": "#8c564b",
    "default": "#7f7f7f",
    "standard": "#bcbd22",
    "glorot_uniform": "#1f77b4",
    "he_normal": "#2ca02c",
    "orthogonal": "#9467bd",
    "lsuv": "#17becf",
    "critical": "#e377c2",
    "auto": "#ff7f0e",
}


def colour(init: str) -> str | None:
    return INIT_COLOURS.get(init)


def plot_learning_curves(records: Sequence[dict[str, Any]], path: Path, *, title: str | None = None) -> Path:
    """Test accuracy against epoch, one panel per (activation, depth, width, optimizer), one colour per
    init; seeds of a cell are drawn thin, the target as a dotted line."""
    plt = _pyplot()
    panels: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        c = r["config"]
        panels.setdefault((c["activation"], c["depth"], c["width"], c["optimizer"]), []).append(r)
    n = max(1, len(panels))
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, ((act, depth, width, opt), rs) in zip(axes.flat, panels.items(), strict=False):
        seen = set()
        for r in rs:
            init = r["config"]["init"]
            label = None if init in seen else init + (" (diverged)" if r["diverged"] else "")
            seen.add(init)
            ax.plot(range(len(r["test_acc"])), r["test_acc"], color=colour(init), label=label,
                    lw=1.6 if len(rs) <= 8 else 1.0, alpha=0.9)
        target = rs[0]["config"].get("target")
        if target is not None:
            ax.axhline(target, ls=":", color="black", lw=0.8)
        ax.set_title(f"{act}, depth {depth}, width {width}, {opt}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_accuracy_vs_depth(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Final test accuracy (mean over seeds, bars ± sd) against depth, one line per init, one panel per
    (activation, width, optimizer)."""
    plt = _pyplot()
    panels: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        panels.setdefault((r["activation"], r["width"], r["optimizer"]), []).append(r)
    n = max(1, len(panels))
    cols = min(n, 3)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.4 * nrows), squeeze=False)
    for ax, ((act, width, opt), rs) in zip(axes.flat, panels.items(), strict=False):
        by_init: dict[str, list[dict[str, Any]]] = {}
        for r in rs:
            by_init.setdefault(r["init"], []).append(r)
        for init, pts in by_init.items():
            pts = sorted(pts, key=lambda r: r["depth"])
            ax.errorbar([p["depth"] for p in pts], [p["final_acc"] for p in pts],
                        yerr=[p["final_sd"] for p in pts], marker="o", capsize=3, color=colour(init), label=init)
        ax.set_title(f"{act}, width {width}, {opt}", fontsize=10)
        ax.set_xlabel("depth (hidden layers)")
        ax.set_ylabel("final test accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    return _save(fig, path)


class HtmlReport:
    """A single self-contained HTML page: headings, paragraphs, tables and embedded PNG figures.

    The page counts its figures when it loads and writes "all N figures loaded" (or which failed) into
    ``#figure-status``, which the browser test reads.
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self._parts: list[str] = []
        self.figures = 0

    def heading(self, text: str, level: int = 2) -> None:
        self._parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str) -> None:
        self._parts.append(f"<p>{html.escape(text)}</p>")

    def bullets(self, items: Sequence[str]) -> None:
        self._parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")

    def preformatted(self, text: str) -> None:
        self._parts.append(f"<pre>{html.escape(text)}</pre>")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
        self._parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def figure(self, png: Path, caption: str) -> None:
        data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
        self.figures += 1
        self._parts.append(
            f'<figure><img class="fig" src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def render(self) -> str:
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
            "line-height:1.45;color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
            "td:first-child,th:first-child{text-align:left}figure{margin:1.5em 0}img{max-width:100%}"
            "figcaption{font-size:0.9em;color:#555}pre{background:#f7f7f7;padding:0.8em;overflow-x:auto}"
            "#figure-status{color:#777;font-size:0.85em}"
        )
        script = (
            "window.addEventListener('load',function(){var imgs=document.querySelectorAll('img.fig');"
            "var bad=[];imgs.forEach(function(im,i){if(!(im.complete&&im.naturalWidth>0))bad.push(i+1);});"
            "document.getElementById('figure-status').textContent=bad.length?"
            "('figures not loaded: '+bad.join(',')+' of '+imgs.length):('all '+imgs.length+' figures loaded');});"
        )
        return (
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>'
            f"<style>{style}</style></head><body><h1>{html.escape(self.title)}</h1>"
            + "\n".join(self._parts)
            + f'<p id="figure-status" data-expected="{self.figures}">figures not checked</p>'
            f"<script>{script}</script></body></html>"
        )

    def write(self, path: Path) -> Path:
        path = Path(path)
        path.write_text(self.render(), encoding="utf-8")
        return path
