"""Data loading: built-ins made locally, user .npz/.csv files and their errors."""

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn", reason="scikit-learn is a test dependency: pip install -e '.[dev]'")

from initlab.experiments.data import DatasetError, load_dataset


def test_digits_split_and_standardization():
    d = load_dataset("digits")
    # experiments.md §3.3: stratified 75/25 split with random_state=0 -> 1347 / 450, 64 features.
    assert d.x_train.shape == (1347, 64) and d.x_test.shape == (450, 64)
    assert d.n_classes == 10 and d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    # Standardized with the training statistics: mean 0 (to float32 rounding), std 1 or 0 (constant pixels).
    assert d.x_train.mean(0).abs().max() < 1e-5
    stds = d.x_train.std(0, unbiased=False)
    assert torch.all(((stds - 1).abs() < 1e-4) | (stds < 1e-6))


def test_mnist1d_is_made_locally(monkeypatch, tmp_path):
    pytest.importorskip("mnist1d", reason="mnist1d is a test dependency: pip install -e '.[dev]'")
    import mnist1d.data

    def no_download(*a, **k):
        raise AssertionError("the download path must never be used")

    monkeypatch.setattr(mnist1d.data, "get_dataset", no_download)
    d = load_dataset("mnist1d")
    assert d.x_train.shape == (4000, 40) and d.x_test.shape == (1000, 40) and d.n_classes == 10


def test_npz_with_splits_and_with_x_y(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)), np.arange(40) % 4
    np.savez(tmp_path / "a.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    a = load_dataset(tmp_path / "a.npz")
    assert a.x_train.shape == (30, 5) and a.x_test.shape == (10, 5) and a.n_classes == 4
    np.savez(tmp_path / "b.npz", x=x, y=y)
    b = load_dataset(str(tmp_path / "b.npz"))
    assert len(b.x_train) == 30 and len(b.x_test) == 10


def test_csv_with_label_column(tmp_path):
    rows = ["f1,f2,label"] + [f"{i * 0.1},{-i},{i % 3}" for i in range(24)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    d = load_dataset(tmp_path / "d.csv")
    assert d.n_features == 2 and d.n_classes == 3 and len(d.x_train) + len(d.x_test) == 24


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("nolabel.csv", "a,b,c\n1,2,3\n4,5,6\n", "no label column"),
        ("text.csv", "a,label\n1,0\nx,1\n", "not a number"),
        ("ragged.csv", "a,b,label\n1,2\n3,4\n", "columns"),
        ("float.csv", "a,label\n" + "".join(f"{i},{i * 0.5}\n" for i in range(10)), "integers"),
    ],
)
def test_csv_errors_name_the_file_and_the_problem(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset(tmp_path / name)
    assert name in str(err.value)


def test_npz_wrong_keys_and_unknown_specs(tmp_path):
    np.savez(tmp_path / "w.npz", features=np.zeros((4, 2)))
    with pytest.raises(DatasetError, match=r"\['features'\].*x_train"):
        load_dataset(tmp_path / "w.npz")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "missing.csv")
    with pytest.raises(DatasetError, match="neither a built-in"):
        load_dataset("cifar10")
    np.savez(tmp_path / "n.npz", x=np.zeros((4, 2)), y=np.zeros(5))
    with pytest.raises(DatasetError, match="must match"):
        load_dataset(tmp_path / "n.npz")
