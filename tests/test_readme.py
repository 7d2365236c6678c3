"""The README's Python code blocks run as written.

The README is cut into its ``<!-- section:NAME -->`` sections; the ```python blocks of one section run in
order in one namespace (later blocks use what earlier ones made, as a reader would), in a scratch
directory (some write figures and JSON). A block whose first line starts with ``# not run:`` is
skipped — it says why; keep those to a minimum.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
NOT_RUN = "# not run:"


def _sections() -> dict[str, list[tuple[int, str]]]:
    """{section name: [(line number, code)]} for every ```python block, in order."""
    sections: dict[str, list[tuple[int, str]]] = {}
    current = "(before any section)"
    block: list[str] | None = None
    start = 0
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), start=1):
        if block is not None:
            if line.startswith("```"):
                sections.setdefault(current, []).append((start, "\n".join(block) + "\n"))
                block = None
            else:
                block.append(line)
            continue
        m = re.match(r"<!-- section:([\w-]+) -->", line.strip())
        if m:
            current = m.group(1)
        elif line.strip() == "```python":
            block, start = [], number
    return sections


SECTIONS = _sections()


def test_the_readme_has_python_blocks_to_run():
    runnable = [code for blocks in SECTIONS.values() for _, code in blocks if not code.startswith(NOT_RUN)]
    assert len(runnable) >= 7


# Keras's advice against input_shape= in the README's verbatim tutorial snippet
@pytest.mark.filterwarnings("ignore:Do not pass an .input_shape.:UserWarning")
@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_readme_section_runs(section, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    try:
        for line, code in SECTIONS[section]:
            if code.startswith(NOT_RUN):
                continue
            try:
                exec(compile(code, f"README.md:{line}", "exec"), namespace)
            except Exception as e:
                raise AssertionError(f"the README block at line {line} (section {section!r}) raised {e!r}") from e
    finally:
        # Keras names layers from a process-wide counter ("dense", "dense_1", …); the README's models must
        # not change the names later tests in this process see
        if "keras" in sys.modules:
            sys.modules["keras"].backend.clear_session()
