"""Report: the rich table, the versioned JSON schema, signal propagation plots and the theory overlay."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import initlab
from initlab.inspect.report import SCHEMA, SCHEMA_VERSION, Report
from tests.inspect.test_inspect_models import batch, mlp


@pytest.fixture(scope="module")
def reports():
    x = batch()
    return {
        name: initlab.inspect(mlp(12, act, init), x, recommend=False)
        for name, act, init in (
            ("normal", nn.Tanh, "n001"),
            ("glorot", nn.Tanh, "glorot"),
            ("he", nn.Tanh, "he"),
        )
    }


def _check(schema: dict, value, where: str = "$") -> None:
    """The subset of JSON Schema that SCHEMA uses: type, const, enum, required, properties, items."""
    types = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "null": type(None),
    }
    if "const" in schema:
        assert value == schema["const"], where
    if "enum" in schema:
        assert value in schema["enum"], where
    if "type" in schema:
        allowed = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        assert any(
            isinstance(value, types[t]) and not (t in ("integer", "number") and isinstance(value, bool))
            for t in allowed
        ), (where, value)
    if isinstance(value, dict):
        for k in schema.get("required", []):
            assert k in value, f"{where}.{k} missing"
        for k, sub in schema.get("properties", {}).items():
            if k in value:
                _check(sub, value[k], f"{where}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            _check(schema["items"], v, f"{where}[{i}]")


def test_json_follows_the_documented_schema_and_round_trips(reports, tmp_path):
    r = reports["normal"]
    path = tmp_path / "report.json"
    text = r.to_json(path)
    data = json.loads(path.read_text())
    assert data == json.loads(text)
    assert data["schema"] == SCHEMA_VERSION == "initlab.inspect/2"
    _check(SCHEMA, data)
    back = Report.from_json(path)
    assert back.verdict == r.verdict
    assert [c.grad_norm for c in back.calls] == [c.grad_norm for c in r.calls]
    assert back.trends == r.trends
    with pytest.raises(ValueError, match="schema"):
        Report.from_dict({**data, "schema": "initlab.inspect/0"})
    # Version 1 (no residual or attention rows, no trends fields of version 2) is still read.
    old = {k: v for k, v in data.items() if k not in ("residual", "attention")}
    old["trends"] = {k: v for k, v in data["trends"].items()
                     if k not in ("residual_streams", "token_cosine_first", "token_cosine_last", "axis")}
    v1 = Report.from_dict({**old, "schema": "initlab.inspect/1"})
    assert v1.residual == [] and v1.attention == [] and v1.trends.axis == "layers" and v1.verdict == r.verdict


def test_non_finite_values_are_written_as_strings(tmp_path):
    torch.manual_seed(0)
    model = mlp(50, nn.ReLU, "n1")  # overflows float32: std grows ~×7 per layer
    r = initlab.inspect(model, batch(), recommend=False)
    assert "exploding_activations" in r.verdict or "exploding_gradients" in r.verdict
    data = json.loads(r.to_json())
    assert any(c["grad_norm"] in ("inf", "nan") or c["out_std"] in ("inf", "nan") for c in data["calls"])
    back = Report.from_dict(data)
    assert any(c.out_std is not None and not math.isfinite(c.out_std) for c in back.calls)


def test_table_has_one_row_per_call_and_the_verdict(reports):
    text = str(reports["normal"])
    assert "Layer calls (execution order)" in text and "Parameters" in text
    assert "vanishing_gradients" in text and "sum of squares" in text and "denormals" in text
    assert text.count("Tanh") == 12
    assert "Report(model='Sequential'" in repr(reports["normal"])


def test_plot_and_overlay_write_pngs(reports, tmp_path):
    r = reports["glorot"]
    r.plot(tmp_path / "spp.png")
    reports["he"].to_json(tmp_path / "he.json")
    fig = initlab.plot(
        [reports["normal"], r, tmp_path / "he.json"],
        tmp_path / "compare.png",
        labels=["N(0,0.01²)", "Glorot", "He"],
    )
    for name in ("spp.png", "compare.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert fig.axes[0].get_yscale() == "log" and len(fig.axes[0].lines) == 3
    with pytest.raises(ValueError, match="labels"):
        initlab.plot([r], labels=["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        initlab.plot([])


def test_theory_overlay_matches_the_measured_std_for_an_mlp(reports, tmp_path):
    r = reports["glorot"]
    pred = r.theory_curve()
    meas = np.array([c.z_std for c in r.layers])
    # Mean field is exact as width → ∞; at width 96 with batch 128 the std of z fluctuates by
    # O(1/√96) ≈ 10 % per layer, so the first 6 layers must agree within 25 % (readout excluded:
    # its fan_out is 10, but its z follows the same law).
    assert np.allclose(pred[:6], meas[:6], rtol=0.25), (pred[:6], meas[:6])
    fig = r.plot(tmp_path / "theory.png", theory=True)
    assert len(fig.axes[0].lines) == 2


def test_theory_overlay_refuses_a_model_that_is_not_an_mlp():
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv1d(1, 8, 3), nn.ReLU(), nn.Conv1d(8, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 2)
    )
    r = initlab.inspect(cnn, torch.randn(16, 1, 20), recommend=False)
    with pytest.raises(ValueError, match="MLP-shaped"):
        r.plot(theory=True)
    bn = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="BatchNorm1d"):
        initlab.inspect(bn, torch.randn(16, 4), recommend=False).theory_curve()
