"""Shared test set-up. Keras must see its backend before it is first imported."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

# Under pytest-xdist each worker gets one thread: two workers x two OpenMP threads on two cores
# oversubscribe, and spin-waiting then makes small LAPACK calls (QR) ~100x slower.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def keras():
    """Keras 3 on its torch backend, or a skip that says why."""
    keras = pytest.importorskip("keras", reason="keras 3 is a test dependency: pip install -e '.[dev]'")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras is on the {keras.backend.backend()!r} backend; these tests need KERAS_BACKEND=torch")
    return keras
