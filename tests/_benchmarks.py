"""Load a script of ``benchmarks/`` (not a package) as a module, for the tests of its logic."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(script: str) -> ModuleType:
    """``benchmarks/<script>.py`` as the module ``<script>_bench``; registered in ``sys.modules`` first, as
    dataclasses and pickling need."""
    spec = importlib.util.spec_from_file_location(f"{script}_bench", BENCHMARKS / f"{script}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod
