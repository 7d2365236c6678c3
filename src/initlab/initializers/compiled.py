"""The switch in front of initlab's optional compiled kernels (numba: the ``fast`` extra).

Two modules carry kernels behind one: :mod:`initlab.initializers.counter` (the Philox generator) and
:mod:`initlab.inspect.fused` (inspection's statistics). Each keeps a small state dict — whether its
kernels are on, and the loaded module — and an environment variable that turns them off. Without numba,
or turned off, each falls back to torch ops with the same results.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["switch_on", "switched_off"]

_VALUES = {"1": True, "on": True, "true": True, "yes": True, "0": False, "off": False, "false": False, "no": False}


def switch_on(state: dict[str, Any], env: str, load: Callable[[], Any], what: str) -> bool:
    """Whether the kernels are on: decided once (``state["ok"]``) from the environment variable ``env``
    (1/on, the default, or 0/off) and whether ``load()`` — which returns the kernels' module, kept as
    ``state["kernels"]`` — imports; ``what`` names them in the error for a bad value."""
    if "ok" not in state:
        value = os.environ.get(env, "1").strip().lower()
        if value not in _VALUES:
            raise ValueError(
                f"environment variable {env}: expected 1/on to use {what} or 0/off to turn them off, got {value!r}."
            )
        ok = _VALUES[value]
        if ok:
            try:
                state["kernels"] = load()
            except ImportError:
                ok = False
        state["ok"] = ok
    return bool(state["ok"])


@contextmanager
def switched_off(state: dict[str, Any]) -> Iterator[None]:
    """Run a block with the kernels off (torch ops only), e.g. to compare both paths side by side."""
    was = state.get("ok")
    state["ok"] = False
    try:
        yield
    finally:
        if was is None:
            state.pop("ok", None)
        else:
            state["ok"] = was
