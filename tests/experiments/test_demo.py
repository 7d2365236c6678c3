"""``initlab demo --quick``: every figure and the self-contained HTML report, rendered in a real browser."""

import json
import os
import re
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

pytest.importorskip("mnist1d", reason="mnist1d is a test dependency: pip install -e '.[dev]'")

from initlab.cli import app

FIGURES = ("a_node.png", "b_signal_tanh3.png", "b_signal_relu6.png", "b_saturation.png", "c_learning_curves.png",
           "c_summary.png")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"report: {(out / 'report.html').resolve()}" in result.output.replace("\n", "")
    return out


def test_demo_writes_every_figure_and_numbers(demo_dir):
    for name in FIGURES:
        assert (demo_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    summary = json.loads((demo_dir / "demo.json").read_text())
    n1 = summary["node"][0]
    # 4000 draws: std(z) has relative standard error 1/√(2·4000) = 1.1 %; 5 % is > 4 standard errors.
    assert n1["name"] == "N(0, 1)" and abs(n1["std_z"] / 250**0.5 - 1) < 0.05 and n1["saturated"] > 0.6
    inits = {r["config"]["init"] for r in summary["training"]}
    assert inits == {"normal1", "default", "glorot_uniform", "he_normal", "auto"}
    assert set(summary["propagation"]) == {"tanh3", "relu6"}
    assert len(summary["reading"]) >= 3 and "std" in summary["reading"][0]


def test_report_is_self_contained(demo_dir):
    page = (demo_dir / "report.html").read_text()
    images = re.findall(r'<img class="fig" src="([^"]+)"', page)
    assert len(images) == len(FIGURES)
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from disk or network
    for heading in ("a. One node", "b. A deep network", "c. Training", "d. What it means"):
        assert heading in page


@pytest.fixture
def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    reason = "no headless browser: install Debian's chromium package (.ci/run does) to render the report"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI installs it, so its absence there is a failure")
    pytest.skip(reason)


def test_report_renders_in_headless_chromium(demo_dir, chromium, tmp_path):
    page = demo_dir / "report.html"
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    # The page's own script checks every <img> after the load event (complete and naturalWidth > 0).
    status = re.search(r'<p id="figure-status" data-expected="(\d+)">([^<]*)</p>', dom)
    assert status is not None, dom[-500:]
    assert status.group(2) == f"all {len(FIGURES)} figures loaded" and status.group(1) == str(len(FIGURES))
