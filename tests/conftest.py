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
def one_thread():
    """Run a test on one torch thread: small tensors gain nothing from a second intra-op thread (or
    multithreaded LAPACK in QR) on a loaded 2-core machine, and lose several times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def keras():
    """Keras 3 on its torch backend (a test dependency: `make test` installs it)."""
    import keras

    if keras.backend.backend() != "torch":
        raise RuntimeError(
            f"keras is on the {keras.backend.backend()!r} backend; run the tests with KERAS_BACKEND=torch"
        )
    # Keras names layers from a process-wide counter ("dense", "dense_1", …): start each test from a fresh
    # session, so the names a test sees do not depend on which tests ran before it in this process.
    keras.backend.clear_session()
    return keras


@pytest.fixture(params=["fused", "torch"])
def stats_path(request):
    """Run a test with inspect's compiled single-pass statistics (initlab.inspect.fused, numba) and again with
    its torch-op path: both must give the same numbers. The fused run fails, rather than silently
    testing the torch path twice, when numba is missing (`make test` installs it)."""
    from initlab.inspect import fused

    if request.param == "fused":
        assert fused.available(), (
            "the compiled statistics are off: numba is not installed (pip install -e '.[dev]') or "
            "INITLAB_FUSED is set to 0/off")
        yield request.param
    else:
        with fused.disabled():
            yield request.param
