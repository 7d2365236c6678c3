"""The command line through typer's test runner: every command, and bad arguments as one-line errors."""

import json

import pytest
from typer.testing import CliRunner

from initlab.cli import app

runner = CliRunner()

FACTORY = """
import torch.nn as nn

def make_model():
    return nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3))

NOT_CALLABLE = 3
"""


def ok(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def one_line_error(args, *fragments):
    """A bad argument: non-zero exit, exactly one line on stderr naming the problem, no traceback."""
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    err = result.stderr.strip()
    assert "Traceback" not in result.output
    assert len(err.splitlines()) == 1, err
    assert err.startswith("initlab: error: ")
    for f in fragments:
        assert f in err, err
    return err


def test_help_lists_commands_with_examples():
    out = ok(["--help"]).output
    for cmd in ("list", "describe", "gain", "inspect", "compare", "demo"):
        assert cmd in out
    assert "initlab describe glorot_uniform --shape 250,16 --layout keras" in out
    assert "Example" in ok(["compare", "--help"]).output


def test_list_shows_the_catalogue_with_formulas():
    assert "GlorotUniform" in ok(["list"]).output
    rows = {r["name"]: r for r in json.loads(ok(["list", "--json"]).output)}
    assert "fan_in+fan_out" in rows["GlorotUniform"]["formula"]
    assert {"HeNormal", "Orthogonal", "TorchDefault", "Dirac"} <= set(rows)


def test_describe_and_gain():
    d = json.loads(ok(["describe", "glorot_uniform", "--shape", "250,16", "--layout", "keras", "--json"]).output)
    assert (d["fan_in"], d["fan_out"]) == (250, 16)
    assert d["std"] == pytest.approx((2 / 266) ** 0.5)
    assert "Uniform(-0.1502, 0.1502)" in ok(["describe", "glorot_uniform", "--shape", "250,16", "--layout", "keras"]).output
    g = json.loads(ok(["gain", "tanh", "--json"]).output)
    assert g["torch"] == pytest.approx(5 / 3) and g["forward"] == pytest.approx(1.5925, abs=1e-4)
    assert json.loads(ok(["gain", "gelu", "--json"]).output)["torch"] is None  # torch has no gelu gain
    assert "1.41421" in ok(["gain", "relu"]).output


def test_describe_and_gain_bad_arguments():
    one_line_error(["describe", "glorot_unifrom"], "unknown initializer 'glorot_unifrom'", "glorot_uniform")
    one_line_error(["describe", "he_normal", "--shape", "250,x"], "shape", "'x'")
    one_line_error(["describe", "he_normal", "--layout", "jax"], "jax")
    one_line_error(["gain", "rleu"], "unknown name 'rleu'")


def test_inspect_a_factory_file(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(FACTORY)
    out = ok(["inspect", f"{path}:make_model", "--input-shape", "16,20"]).output
    assert "batch 16" in out and "healthy" in out
    report = json.loads(ok(["inspect", f"{path}:make_model", "--input-shape", "16,20", "--json"]).output)
    assert isinstance(report, dict) and report
    png = tmp_path / "signal.png"
    ok(["inspect", f"{path}:make_model", "--input-shape", "16,20", "--plan", "auto", "--plot", str(png)])
    assert png.stat().st_size > 0


def test_inspect_a_module_path(tmp_path, monkeypatch):
    (tmp_path / "initlab_cli_models.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    report = json.loads(ok(["inspect", "initlab_cli_models:make_model", "--input-shape", "8,20", "--json"]).output)
    assert report
    one_line_error(["inspect", "torch.nn:Identity", "--input-shape", "4,3"], "no parameters")


def test_inspect_bad_arguments(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(FACTORY)
    one_line_error(["inspect", f"{tmp_path}/nope.py:make_model", "--input-shape", "4,20"], "does not exist")
    one_line_error(["inspect", f"{path}:missing", "--input-shape", "4,20"], "no 'missing'", "make_model")
    one_line_error(["inspect", f"{path}:NOT_CALLABLE", "--input-shape", "4,20"], "not a callable")
    one_line_error(["inspect", str(path), "--input-shape", "4,20"], "no ':'")
    one_line_error(["inspect", "no_such_module_xyz:f", "--input-shape", "4,20"], "cannot import")
    one_line_error(["inspect", f"{path}:make_model", "--input-shape", "4,7"], "input-shape", "(4, 7)")
    one_line_error(["inspect", f"{path}:make_model", "--input-shape", "4;20"], "input-shape")


def test_compare_on_digits_and_resume(tmp_path):
    args = ["compare", "--data", "digits", "--inits", "default,he_normal", "--depths", "1", "--widths", "8",
            "--epochs", "1", "--out", str(tmp_path), "--no-progress"]
    out = ok(args).output
    assert "he_normal" in out and "ran 2 runs, skipped 0" in out
    again = json.loads(ok([*args, "--json"]).output)
    assert (again["ran"], again["skipped"]) == (0, 2)
    assert {r["init"] for r in again["rows"]} == {"default", "he_normal"}
    assert (tmp_path / "results.csv").is_file() and (tmp_path / "learning_curves.png").is_file()


def test_compare_bad_arguments(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n4,5,6\n")
    base = ["compare", "--epochs", "1", "--out", str(tmp_path / "o"), "--no-progress"]
    one_line_error([*base, "--data", str(bad)], "no label column", "bad.csv")
    one_line_error([*base, "--data", "digits", "--inits", "he_normal,xavier_unifrom"], "xavier_unifrom")
    one_line_error([*base, "--data", "digits", "--depths", "1,x"], "depths", "'x'")
    one_line_error([*base, "--data", "digits", "--activations", "rleu"], "activations", "relu")
    one_line_error([*base, "--data", "digits", "--optimizers", "rmsprop"], "rmsprop")
    one_line_error([*base, "--data", str(tmp_path / "missing.npz")], "does not exist")
    result = runner.invoke(app, [*base, "--epochs", "0"])  # typer's own range check: a usage error
    assert result.exit_code == 2 and "Traceback" not in result.output
