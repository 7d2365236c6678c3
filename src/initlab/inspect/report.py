"""The :class:`Report` of :func:`initlab.inspect`: a rich table, versioned JSON and signal-propagation plots.

JSON schema ``initlab.inspect/1`` (``Report.to_json``; :data:`SCHEMA` is the same as a JSON Schema
document). Non-finite floats are written as the strings ``"inf"``, ``"-inf"``, ``"nan"``.

``schema``
    ``"initlab.inspect/1"``; the number changes when a field is removed or changes meaning.
``meta``
    ``model``, ``framework`` (``torch``/``keras``), ``loss`` (which loss was used), ``loss_value``,
    ``runs``, ``batches``, ``seeds``, ``batch_size``, ``training_mode``, ``flush_denormal`` and
    ``flush_denormal_note``, ``tolerance``, ``initlab_version``.
``calls``
    One object per module call in execution order: ``index``, ``path``, ``call`` (1 for the first
    call of that module, 2 for the second, …), ``module``, ``kind`` (``layer``, ``activation``, ``norm``,
    ``other``), ``depth`` (1…L for layers), ``in_shape``, ``out_shape``, ``in_mean``, ``in_std``,
    ``out_mean``, ``out_std``, ``z_std`` (pre-activation std), ``activation``, ``saturation``,
    ``saturation_ref`` (at z ~ N(0, 1)), ``dead``, ``grad_norm`` (‖dL/d output‖), ``cosine``,
    ``live_cosine``.
``params``
    ``name``, ``module``, ``shape``, ``layout``, ``fan_in``, ``mean``, ``std``, ``norm``, ``grad_norm``,
    ``ratio`` (‖∂L/∂W‖/‖W‖), ``requires_grad``.
``blocks``
    Residual blocks ``x + f(x)``: ``index``, ``path``, ``module``, ``in_std``, ``out_std``,
    ``branch_std``, ``growth``, ``correlation``.
``trends``
    ``depth``, ``z_std_rate``, ``z_std_rate_se``, ``z_std_change``, ``grad_rate``, ``grad_rate_se``,
    ``dz_ratio``, ``cosine_first``, ``cosine_last``, ``collapse_rate``, ``collapse_depth``, ``residual_blocks``,
    ``residual_rate``, ``residual_growth``, ``nonfinite_grad_layers``, ``nonfinite_act_layers``,
    ``zero_grad_layers``, ``zero_act_layers``
    (see :class:`initlab.inspect.Trends`).
``findings``
    ``kind``, ``layers``, ``evidence``, ``message``, ``fix`` (``null`` or ``{"preset", "entries":
    [{"path", "shape", "initializer", "std", "why"}]}``).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from .findings import Finding, _jsonable
from .rows import BlockStats, CallStats, ParamStats, Trends

__all__ = ["SCHEMA", "SCHEMA_VERSION", "Report", "plot"]

SCHEMA_VERSION = "initlab.inspect/1"

_NUM = {"type": ["number", "string", "null"]}
_SHAPE = {"type": ["array", "null"], "items": {"type": "integer"}}


def _obj(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(props), "properties": props}


SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://initlab.dev/schema/inspect-1.json",
    "title": "initlab inspection report",
    **_obj(
        {
            "schema": {"const": SCHEMA_VERSION},
            "meta": {"type": "object"},
            "calls": {
                "type": "array",
                "items": _obj(
                    {
                        "index": {"type": "integer"},
                        "path": {"type": "string"},
                        "call": {"type": "integer"},
                        "module": {"type": "string"},
                        "kind": {"enum": ["layer", "activation", "norm", "other"]},
                        "depth": {"type": ["integer", "null"]},
                        "in_shape": _SHAPE,
                        "out_shape": _SHAPE,
                        **{
                            k: _NUM
                            for k in (
                                "in_mean",
                                "in_std",
                                "out_mean",
                                "out_std",
                                "z_std",
                                "saturation",
                                "saturation_ref",
                                "dead",
                                "grad_norm",
                                "cosine",
                                "live_cosine",
                            )
                        },
                        "activation": {"type": ["string", "null"]},
                    }
                ),
            },
            "params": {
                "type": "array",
                "items": _obj(
                    {
                        "name": {"type": "string"},
                        "module": {"type": "string"},
                        "shape": _SHAPE,
                        "layout": {"type": "string"},
                        "fan_in": {"type": ["integer", "null"]},
                        **{k: _NUM for k in ("mean", "std", "norm", "grad_norm", "ratio")},
                        "requires_grad": {"type": "boolean"},
                    }
                ),
            },
            "blocks": {"type": "array", "items": {"type": "object"}},
            "trends": {"type": "object"},
            "findings": {
                "type": "array",
                "items": _obj(
                    {
                        "kind": {"type": "string"},
                        "layers": {"type": "array", "items": {"type": "string"}},
                        "evidence": {"type": "object"},
                        "message": {"type": "string"},
                        "fix": {"type": ["object", "null"]},
                    }
                ),
            },
        }
    ),
}


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


def _unjson(v: Any) -> Any:
    if isinstance(v, str) and v in ("inf", "-inf", "nan"):
        return float(v)
    if isinstance(v, list):
        return [_unjson(x) for x in v]
    if isinstance(v, dict):
        return {k: _unjson(x) for k, x in v.items()}
    return v


@dataclass
class Report:
    """What :func:`initlab.inspect` measured: ``calls`` (one :class:`CallStats` per module call in
    execution order), ``params``, residual ``blocks``, depth ``trends``, ``findings`` and ``meta``.

    ``print(report)`` renders rich tables; ``to_json``/``from_json`` round-trip the versioned schema
    (module docstring); ``plot`` draws the signal propagation plot.
    """

    calls: list[CallStats]
    params: list[ParamStats]
    blocks: list[BlockStats]
    trends: Trends
    findings: list[Finding] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    # ---- convenience ----
    @property
    def layers(self) -> list[CallStats]:
        """The weight-layer calls (``kind == "layer"``) that define depth."""
        return [c for c in self.calls if c.kind == "layer"]

    @property
    def healthy(self) -> bool:
        return all(f.kind == "healthy" for f in self.findings)

    @property
    def verdict(self) -> list[str]:
        return [f.kind for f in self.findings]

    def finding(self, kind: str) -> Finding | None:
        """The finding of that kind, or None."""
        return next((f for f in self.findings if f.kind == kind), None)

    # ---- JSON ----
    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able data (schema :data:`SCHEMA_VERSION`)."""
        from .._version import __version__

        return {
            "schema": SCHEMA_VERSION,
            "meta": _jsonable({**self.meta, "initlab_version": __version__}),
            "calls": [_jsonable(asdict(c)) for c in self.calls],
            "params": [_jsonable(asdict(p)) for p in self.params],
            "blocks": [_jsonable(asdict(b)) for b in self.blocks],
            "trends": _jsonable(asdict(self.trends)),
            "findings": [f.to_dict() for f in self.findings],
        }

    @property
    def quiet(self) -> bool:
        """True on ranks other than 0 of a sharded run (:mod:`initlab.inspect.sharded`): every rank holds
        the same reduced report, and only rank 0 prints it or writes files."""
        return bool(self.meta.get("rank", 0))

    def to_json(self, path: str | os.PathLike[str] | None = None, *, indent: int = 2) -> str:
        """The JSON text; also written to ``path`` when given (by rank 0 only, in a sharded run)."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None and not self.quiet:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """Rebuild a report from :meth:`to_dict` output (findings keep their fix as a plain dict)."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
            got = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"Report.from_dict: expected schema {SCHEMA_VERSION!r}, got {got!r}.")

        def build(kls: type, d: dict[str, Any]) -> Any:
            names = {f.name for f in fields(kls)}
            kw = {k: _unjson(v) for k, v in d.items() if k in names}
            for k in ("in_shape", "out_shape", "shape"):
                if k in kw and isinstance(kw[k], list):
                    kw[k] = tuple(kw[k])
            return kls(**kw)

        return cls(
            calls=[build(CallStats, c) for c in data["calls"]],
            params=[build(ParamStats, p) for p in data["params"]],
            blocks=[build(BlockStats, b) for b in data["blocks"]],
            trends=build(Trends, data["trends"]),
            findings=[
                Finding(f["kind"], list(f["layers"]), _unjson(f["evidence"]), f["message"], f["fix"])
                for f in data["findings"]
            ],
            meta={k: v for k, v in data["meta"].items()},
        )

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike[str]) -> Report:
        """Load a report written by :meth:`to_json` (a path, or the JSON text itself)."""
        s = os.fspath(path_or_text)
        if s.lstrip().startswith("{"):
            return cls.from_dict(json.loads(s))
        with open(s, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    # ---- rich rendering ----
    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.table import Table

        m = self.meta
        if self.quiet:
            yield f"initlab.inspect: rank {m['rank']} of {m['ranks']}; rank 0 prints the report"
            return
        yield (
            f"[bold]initlab.inspect[/bold] {m.get('model', '')} ({m.get('framework', '')}) · batch "
            f"{m.get('batch_size')} · {m.get('runs', 1)} run(s) · loss: {m.get('loss', '')} · "
            f"{'train' if m.get('training_mode') else 'eval'} mode · {m.get('flush_denormal_note', '')}"
        )
        if m.get("sharding"):
            yield f"sharded: {m['sharding']}"
        t = Table(title="Layer calls (execution order)", show_lines=False, header_style="bold")
        for col, just in (
            ("#", "right"),
            ("layer", "left"),
            ("module", "left"),
            ("out shape", "left"),
            ("in mean", "right"),
            ("in std", "right"),
            ("out mean", "right"),
            ("out std", "right"),
            ("std(z)", "right"),
            ("sat (ref)", "right"),
            ("dead", "right"),
            ("‖dL/dz‖", "right"),
            ("cos", "right"),
        ):
            t.add_column(col, justify=just)
        for c in self.calls:
            name = c.path if c.call == 1 else f"{c.path}#{c.call}"
            if c.depth is not None:
                name = f"[bold]{name}[/bold] (L{c.depth})"
            sat = (
                "–"
                if c.saturation is None
                else f"{_fmt(c.saturation, True)} ({_fmt(c.saturation_ref, True)})"
            )
            t.add_row(
                str(c.index),
                name,
                c.module if c.activation is None or c.module == c.activation else f"{c.module}",
                "×".join(map(str, c.out_shape)) if c.out_shape else "–",
                _fmt(c.in_mean),
                _fmt(c.in_std),
                _fmt(c.out_mean),
                _fmt(c.out_std),
                _fmt(c.z_std),
                sat,
                _fmt(c.dead, True),
                _fmt(c.grad_norm),
                _fmt(c.cosine),
            )
        yield t
        p = Table(title="Parameters", header_style="bold")
        for col in ("parameter", "shape", "fan_in", "std", "‖W‖", "‖∂L/∂W‖", "ratio"):
            p.add_column(col, justify="left" if col in ("parameter", "shape") else "right")
        for q in self.params:
            p.add_row(
                q.name,
                "×".join(map(str, q.shape)),
                _fmt(q.fan_in),
                _fmt(q.std),
                _fmt(q.norm),
                _fmt(q.grad_norm),
                _fmt(q.ratio),
            )
        yield p
        tr = self.trends
        yield (
            f"[bold]Depth trends[/bold] over L = {tr.depth} layers: std(z) ×{_fmt(tr.z_std_rate)}/layer "
            f"(last/first {_fmt(tr.z_std_change)}); ‖dL/dz‖ ×{_fmt(tr.grad_rate)}/layer backward; "
            f"‖dL/dz₁‖/‖dL/dz_L‖ = {_fmt(tr.dz_ratio)}; cosine {_fmt(tr.cosine_first)} → {_fmt(tr.cosine_last)}"
            + (
                f"; residual stream ×{_fmt(tr.residual_rate)}/block over {tr.residual_blocks} blocks "
                f"(×{_fmt(tr.residual_growth)} in all)"
                if tr.residual_blocks
                else ""
            )
        )
        for f in self.findings:
            colour = "green" if f.kind == "healthy" else "red"
            fix = ""
            if f.fix is not None:
                # A live Plan, or its as_dict() form when the report was read back from JSON.
                as_dict = f.fix if isinstance(f.fix, dict) else None
                n = len(getattr(f.fix, "entries", None) or (as_dict or {}).get("entries", []))
                preset = getattr(f.fix, "preset", None) or (as_dict or {}).get("preset", "auto")
                options = getattr(f.fix, "options", None) or (as_dict or {}).get("options") or {}
                opts = f", options={options!r}" if options else ""
                fix = f" → fix: initlab.plan(preset={preset!r}{opts}) ({n} entries); initlab.fix(model, x, apply=True)"
            elif "fix_error" in f.evidence:
                fix = f" (no fix: {f.evidence['fix_error']})"
            yield f"[{colour}]● {f.kind}[/{colour}]: {f.message}{fix}"

    def __str__(self) -> str:
        from rich.console import Console

        buf = io.StringIO()
        Console(file=buf, width=160, force_terminal=False, color_system=None).print(self)
        return buf.getvalue()

    def __repr__(self) -> str:
        return (
            f"Report(model={self.meta.get('model')!r}, calls={len(self.calls)}, depth={self.trends.depth}, "
            f"findings={self.verdict})"
        )

    # ---- plots ----
    def plot(
        self, path: str | os.PathLike[str] | None = None, *, theory: bool = False, label: str | None = None
    ) -> Any:
        """Signal propagation plot: std(z_ℓ) and ‖dL/dz_ℓ‖ against depth ℓ, log scale.

        ``theory=True`` overlays the mean-field prediction ``initlab.theory.predict_std`` for an
        MLP-shaped model (alternating weight layers and one elementwise activation), with
        σ_w² = median over layers of Var(W)·fan_in, σ_b² = mean over layers of E[b²] and q₀ the mean
        square of the input (Poole et al. 2016; Schoenholz et al. 2017). Returns the matplotlib
        figure; saves a PNG when ``path`` is given.
        """
        return plot([self], path, labels=[label] if label else None, theory=theory)

    def theory_curve(self) -> np.ndarray:
        """Predicted std(z_ℓ), ℓ = 1…L, of the mean-field theory for this (MLP-shaped) model."""
        from ..initializers.activations import activation
        from ..theory.maps import predict_std

        act_label, sw2, sb2, q0 = self._mlp_parameters()
        name, param = _parse_label(act_label)
        act = activation(name, param) if param is not None else activation(name)
        return np.asarray(predict_std(act, sw2, sb2, self.trends.depth, q0=q0), dtype=float)

    def _mlp_parameters(self) -> tuple[str, float, float, float]:
        seq = [c for c in self.calls if c.kind in ("layer", "activation", "norm") or c.module not in _PASSIVE]
        kinds = [c.kind for c in seq]
        layers = [c for c in seq if c.kind == "layer"]
        acts = [c for c in seq if c.kind == "activation"]
        why = None
        if len(layers) < 2:
            why = f"it has {len(layers)} weight layer(s)"
        elif any(k not in ("layer", "activation") for k in kinds):
            others = sorted({c.module for c in seq if c.kind not in ("layer", "activation")})
            why = f"it has non-elementwise calls between layers: {', '.join(others)}"
        elif kinds != ["layer", "activation"] * (len(layers) - 1) + ["layer"] and kinds != [
            "layer",
            "activation",
        ] * len(layers):
            why = "its calls do not alternate weight layer, activation, weight layer, …"
        elif len({a.activation for a in acts}) != 1:
            why = f"it mixes activations {sorted({str(a.activation) for a in acts})}"
        elif any(c.out_shape is None or len(c.out_shape) != 2 for c in layers):
            why = "its weight layers are not dense (2-D outputs)"
        if why is None:
            weights = [self._weight(c.path) for c in layers]
            if any(w is None or w.fan_in is None or len(w.shape) != 2 for w in weights):
                why = "some weight layers have no 2-D weight with a known fan-in"
        if why is not None:
            raise ValueError(
                f"Report.plot(theory=True): the mean-field curve needs an MLP-shaped model (dense layers "
                f"alternating with one elementwise activation), but {why}. Plot with theory=False."
            )
        sw2 = float(np.median([w.std**2 * w.fan_in for w in weights]))
        biases = [self._bias(c.path) for c in layers]
        sb2 = float(np.mean([0.0 if b is None else b.mean**2 + b.std**2 for b in biases]))
        first = layers[0]
        q0 = (first.in_mean or 0.0) ** 2 + (first.in_std or 0.0) ** 2
        return str(acts[0].activation), sw2, sb2, q0

    def _weight(self, module: str) -> ParamStats | None:
        return next((p for p in self.params if p.module == module and len(p.shape) >= 2), None)

    def _bias(self, module: str) -> ParamStats | None:
        return next((p for p in self.params if p.module == module and len(p.shape) == 1), None)


_PASSIVE = {"Flatten", "Identity", "Dropout", "InputLayer", "Unflatten"}


def _parse_label(label: str) -> tuple[str, float | None]:
    if "(" not in label:
        return label, None
    name, inner = label.split("(", 1)
    parts = [p for p in inner.rstrip(")").split(",") if p.strip()]
    if len(parts) != 1:
        raise ValueError(
            f"Report.plot(theory=True): activation {label!r} has {len(parts)} parameters; the theory "
            "overlay supports named activations with at most one (slope or alpha)."
        )
    return name, float(parts[0].split("=")[1])


def plot(
    reports: Report | str | os.PathLike[str] | Sequence[Report | str | os.PathLike[str]],
    path: str | os.PathLike[str] | None = None,
    *,
    labels: Sequence[str] | None = None,
    theory: bool = False,
) -> Any:
    """Overlay the signal propagation plots of several reports (or report JSON files).

    Left: std(z_ℓ) against depth ℓ; right: ‖dL/dz_ℓ‖ — both log scale, one line per report. With
    ``theory=True`` each report's mean-field std curve is drawn dashed (MLP-shaped models only).
    Returns the figure; writes a PNG when ``path`` is given (by rank 0 only, for sharded reports).
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    items = [reports] if isinstance(reports, (Report, str, os.PathLike)) else list(reports)
    if not items:
        raise ValueError("plot: reports is empty; pass one or more Report objects or report JSON paths.")
    loaded: list[Report] = []
    for r in items:
        if isinstance(r, Report):
            loaded.append(r)
        elif isinstance(r, (str, os.PathLike)):
            loaded.append(Report.from_json(r))
        else:
            raise TypeError(f"plot: expected Report objects or JSON paths, got {type(r).__name__}.")
    if labels is not None and len(labels) != len(loaded):
        raise ValueError(f"plot: labels has {len(labels)} entries for {len(loaded)} reports.")
    fig, (ax_z, ax_g) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, r in enumerate(loaded):
        lab = labels[i] if labels is not None else _default_label(r, i)
        layers = r.layers
        d = [c.depth for c in layers]
        z = [_pos(c.z_std) for c in layers]
        g = [_pos(c.grad_norm) for c in layers]
        (line,) = ax_z.plot(d, z, marker="o", ms=3, label=lab)
        ax_g.plot(d, g, marker="o", ms=3, color=line.get_color(), label=lab)
        if theory:
            pred = r.theory_curve()
            ax_z.plot(d, pred, ls="--", color=line.get_color(), label=f"{lab}: mean-field theory")
    for ax, title in ((ax_z, "std of pre-activations z"), (ax_g, "‖dL/dz‖ (gradient w.r.t. layer output)")):
        ax.set_yscale("log")
        ax.set_xlabel("depth ℓ (weight-layer call)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Signal propagation at initialization (initlab.inspect)")
    fig.tight_layout()
    if path is not None and not any(r.quiet for r in loaded):
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def _pos(v: float | None) -> float:
    return v if v is not None and math.isfinite(v) and v > 0 else math.nan


def _default_label(r: Report, i: int) -> str:
    kinds = ", ".join(r.verdict) or "?"
    return f"{i + 1}: {r.meta.get('model', 'model')} ({kinds})"
