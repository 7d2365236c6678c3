"""Data sets for the experiments: MNIST-1D made locally, scikit-learn's digits, or the user's own file.

- ``"mnist1d"``: Greydanus (2020), "Scaling down deep learning with MNIST-1D" (arXiv 2011.14439), made
  by ``mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())`` — 4000 train / 1000 test, 40
  features, 10 classes, seed 42, standardized inside the call. Nothing is downloaded. Making it takes
  a few seconds, so the arrays are cached in memory and on disk (``$INITLAB_CACHE``, default
  ``~/.cache/initlab``), keyed by the mnist1d version and its arguments.
- ``"digits"``: ``sklearn.datasets.load_digits`` (1797 × 64), stratified 75/25 split with
  ``random_state=0`` (1347 / 450), each feature standardized with the training mean and std (constant
  pixels get std 1).
- ``PATH.npz``: arrays ``x_train, y_train, x_test, y_test``, or ``x, y`` (split as for digits).
- ``PATH.csv``: a header row, numeric feature columns and one integer label column (``label``, ``y``,
  ``target`` or ``class``); split and standardized as for digits.

Labels must be integers 0…C−1. Every error names the file, what was found and what would be valid.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

__all__ = ["BUILTIN_DATASETS", "LABEL_COLUMNS", "Dataset", "DatasetError", "load_dataset"]

BUILTIN_DATASETS = ("mnist1d", "digits")
#: Column names a CSV's label column may have (first match wins, case-insensitive).
LABEL_COLUMNS = ("label", "y", "target", "class")


class DatasetError(ValueError):
    """A data set that cannot be used, with the reason and what would be valid."""


@dataclass(frozen=True)
class Dataset:
    """Train and test splits as float32 features and int64 labels (torch tensors, CPU)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max().item(), self.y_test.max().item())) + 1

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
            f"classes={self.n_classes})"
        )


def load_dataset(spec: str | os.PathLike[str]) -> Dataset:
    """``"mnist1d"``, ``"digits"``, or a path to a ``.npz`` / ``.csv`` file (see the module docstring)."""
    text = os.fspath(spec)
    if text in BUILTIN_DATASETS:
        return _mnist1d() if text == "mnist1d" else _digits()
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".csv"):
        raise DatasetError(
            f"data: {text!r} is neither a built-in data set ({', '.join(BUILTIN_DATASETS)}) nor a .npz or "
            ".csv file."
        )
    if not path.is_file():
        raise DatasetError(f"data: file {text!r} does not exist.")
    return _npz(path) if suffix == ".npz" else _csv(path)


# -- built-in ---------------------------------------------------------------------------------------


def _cache_dir() -> Path:
    return Path(os.environ.get("INITLAB_CACHE", Path.home() / ".cache" / "initlab"))


@lru_cache(maxsize=1)
def _mnist1d() -> Dataset:
    try:
        import mnist1d
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise DatasetError(
            "data: 'mnist1d' needs the mnist1d package: pip install 'initlab[data]' (or pip install mnist1d)."
        ) from exc
    args = get_dataset_args()
    key_src = json.dumps(
        {"version": getattr(mnist1d, "__version__", "?"), "args": {k: repr(v) for k, v in vars(args).items()}},
        sort_keys=True,
    )
    cache = _cache_dir() / f"mnist1d-{hashlib.sha256(key_src.encode()).hexdigest()[:16]}.npz"
    arrays = None
    if cache.is_file():
        with np.load(cache) as z:
            arrays = {k: z[k] for k in ("x", "y", "x_test", "y_test")}
    if arrays is None:
        d = make_dataset(args)  # made locally from the templates; never the download path
        arrays = {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")}
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, **arrays)
            tmp.replace(cache)
        except OSError:
            pass  # an unwritable cache only costs the few seconds of making the data again
    return _tensors("mnist1d", arrays["x"], arrays["y"], arrays["x_test"], arrays["y_test"])


@lru_cache(maxsize=1)
def _digits() -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DatasetError(
            "data: 'digits' needs scikit-learn: pip install 'initlab[data]' (or pip install scikit-learn)."
        ) from exc
    d = load_digits()
    return _split_standardize("digits", d.data, d.target)


# -- user files -------------------------------------------------------------------------------------


def _npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if {"x_train", "y_train", "x_test", "y_test"} <= keys:
                return _tensors(path.name, z["x_train"], z["y_train"], z["x_test"], z["y_test"], standardize=True)
            if {"x", "y"} <= keys:
                return _split_standardize(path.name, z["x"], z["y"])
    except (OSError, ValueError) as exc:
        raise DatasetError(f"data: cannot read {str(path)!r} as a .npz archive ({exc}).") from exc
    raise DatasetError(
        f"data: {str(path)!r} holds arrays {sorted(keys)}; expected x_train, y_train, x_test, y_test "
        "(or x, y, which are split 75/25)."
    )


def _csv(path: Path) -> Dataset:
    try:
        with path.open(newline="") as fh:
            header = fh.readline().strip()
        table = np.genfromtxt(path, delimiter=",", skip_header=1, dtype=np.float64, ndmin=2)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"data: cannot read {str(path)!r} as CSV ({exc}).") from exc
    columns = [c.strip().strip('"') for c in header.split(",")] if header else []
    lower = [c.lower() for c in columns]
    label = next((lower.index(n) for n in LABEL_COLUMNS if n in lower), None)
    if label is None:
        raise DatasetError(
            f"data: {str(path)!r} has columns {columns[:8]}{' …' if len(columns) > 8 else ''} but no label "
            f"column; name one of them {' / '.join(LABEL_COLUMNS)} (the others must be numeric features)."
        )
    if len(columns) < 2:
        raise DatasetError(f"data: {str(path)!r} has only the label column {columns}; it needs feature columns too.")
    if table.size == 0:
        raise DatasetError(f"data: {str(path)!r} has a header but no data rows.")
    if table.shape[1] != len(columns):
        raise DatasetError(
            f"data: {str(path)!r} has {len(columns)} columns in its header but {table.shape[1]} in its rows."
        )
    if np.isnan(table).any():
        row, col = (int(i) for i in np.argwhere(np.isnan(table))[0])
        raise DatasetError(
            f"data: {str(path)!r} row {row + 2}, column {columns[col]!r} is empty or not a number; every "
            "column must be numeric."
        )
    y = table[:, label]
    x = np.delete(table, label, axis=1)
    return _split_standardize(path.name, x, y)


# -- shared -----------------------------------------------------------------------------------------


def _labels(name: str, y: np.ndarray, split: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DatasetError(f"data: {name}: {split} labels have shape {y.shape}; expected one integer per row.")
    if y.size == 0:
        raise DatasetError(f"data: {name}: the {split} split is empty.")
    if not np.all(np.isfinite(y.astype(np.float64))) or not np.all(np.mod(y, 1) == 0) or y.min() < 0:
        bad = y[(np.mod(y, 1) != 0) | (y < 0)][:3] if np.all(np.isfinite(y.astype(np.float64))) else "nan/inf"
        raise DatasetError(
            f"data: {name}: {split} labels must be integers 0…C−1 (class indices); found {bad}."
        )
    return y.astype(np.int64)


def _features(name: str, x: np.ndarray, split: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise DatasetError(
            f"data: {name}: {split} features have shape {x.shape}; expected 2-D (samples × features)."
        )
    if not np.all(np.isfinite(x)):
        raise DatasetError(f"data: {name}: {split} features contain NaN or inf.")
    return x


def _tensors(name, x_train, y_train, x_test, y_test, *, standardize: bool = False) -> Dataset:
    x_train, x_test = _features(name, x_train, "train"), _features(name, x_test, "test")
    y_train, y_test = _labels(name, y_train, "train"), _labels(name, y_test, "test")
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise DatasetError(
            f"data: {name}: {len(x_train)} train rows but {len(y_train)} labels, {len(x_test)} test rows "
            f"but {len(y_test)} labels; they must match."
        )
    if x_train.shape[1] != x_test.shape[1]:
        raise DatasetError(
            f"data: {name}: train has {x_train.shape[1]} features, test {x_test.shape[1]}; they must match."
        )
    if standardize:
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std[std == 0] = 1.0
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return Dataset(
        name,
        torch.as_tensor(x_train, dtype=torch.float32),
        torch.as_tensor(y_train),
        torch.as_tensor(x_test, dtype=torch.float32),
        torch.as_tensor(y_test),
    )


def _split_standardize(name: str, x: np.ndarray, y: np.ndarray) -> Dataset:
    x, y = _features(name, x, "all"), _labels(name, y, "all")
    if len(x) != len(y):
        raise DatasetError(f"data: {name}: {len(x)} rows of features but {len(y)} labels; they must match.")
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    stratify = y if len(x) >= 8 and counts[counts > 0].min() >= 2 else None
    try:
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=stratify)
    except ValueError as exc:
        raise DatasetError(f"data: {name}: cannot split {len(x)} rows 75/25 ({exc}).") from exc
    return _tensors(name, x_tr, y_tr, x_te, y_te, standardize=True)
