"""Data sets as standardised, seeded tensor splits (notebook 01).

Only data that ship inside scikit-learn (no download) or are generated here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import _validate as V

# name -> (sklearn loader, task)
BUNDLED = {
    "diabetes": ("load_diabetes", "regression"),
    "breast_cancer": ("load_breast_cancer", "classification"),
    "digits": ("load_digits", "classification"),
    "iris": ("load_iris", "classification"),
    "wine": ("load_wine", "classification"),
}


@dataclass(frozen=True)
class Split:
    """Train/validation/test tensors of one data set, standardised with training statistics (notebook 01).

    ``X_*``: ``(n_part, d)`` floating tensors; ``y_*``: ``(n_part,)``, floating (regression) or
    ``torch.long`` labels in 0..C-1 (classification).

    >>> from metahpo_lib import data
    >>> s = data.load("iris")
    >>> s
    Split('iris', classification, train/val/test = 90/30/30, features = 4, torch.float64, cpu)
    >>> s.num_features, s.num_classes, s.y_train.dtype
    (4, 3, torch.int64)
    """

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    task: str
    feature_names: tuple[str, ...] = ()
    name: str = ""

    @property
    def num_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def num_classes(self) -> int | None:
        """Number of classes (classification) or None (regression)."""
        if self.task != "classification":
            return None
        return int(max(self.y_train.max(), self.y_val.max(), self.y_test.max())) + 1

    def __repr__(self) -> str:
        sizes = "/".join(str(t.shape[0]) for t in (self.X_train, self.X_val, self.X_test))
        return (f"Split({self.name!r}, {self.task}, train/val/test = {sizes}, features = {self.num_features}, "
                f"{self.X_train.dtype}, {self.X_train.device})")


def _fractions(split) -> tuple[float, float, float]:
    if not (isinstance(split, (tuple, list)) and len(split) == 3):
        raise ValueError(f"split must be three fractions (train, val, test), got {split!r}")
    f = tuple(float(s) for s in split)
    if min(f) <= 0 or abs(sum(f) - 1) > 1e-9:
        raise ValueError(f"split fractions must be > 0 and sum to 1, got {split!r}")
    return f


def from_arrays(X, y, *, task: str, split=(0.6, 0.2, 0.2), seed: int = 0, device=None,
                dtype: torch.dtype = torch.float64, standardize_x: bool = True, standardize_y: bool = True,
                name: str = "", feature_names=()) -> Split:
    """Shuffle (seeded), split and standardise arrays ``X (n, d)``, ``y (n,)`` into a :class:`Split` (notebook 01).

    Features are standardised with the training mean and std, ``x -> (x - mean) / std`` (only centred
    when ``standardize_x`` is False); regression targets too (when ``standardize_y``). Classification
    labels become ``torch.long`` in 0..C-1.

    >>> import numpy as np
    >>> from metahpo_lib import data
    >>> X, y = np.arange(20.0).reshape(10, 2), np.array(["cat", "dog"] * 5)
    >>> s = data.from_arrays(X, y, task="classification", split=(0.6, 0.2, 0.2), seed=0)
    >>> s.X_train.shape, s.y_train.dtype, float(s.X_train.mean(0).abs().max()) < 1e-12
    (torch.Size([6, 2]), torch.int64, True)
    """
    V.choice(task, "task", {"regression", "classification"})
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"X must be (n, d) and y (n,) with the same n, got {X.shape} and {y.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values")
    f = _fractions(split)
    n = X.shape[0]
    perm = np.random.default_rng(seed).permutation(n)
    n_tr, n_va = int(round(f[0] * n)), int(round(f[1] * n))
    idx = perm[:n_tr], perm[n_tr:n_tr + n_va], perm[n_tr + n_va:]
    if min(len(i) for i in idx) < 2:
        raise ValueError(f"split {split!r} of {n} examples leaves a part with fewer than 2 examples "
                         f"(sizes {[len(i) for i in idx]}); use more data or larger fractions")
    mu, sd = X[idx[0]].mean(0), X[idx[0]].std(0)
    sd[sd == 0] = 1.0
    if not standardize_x:
        sd = np.ones_like(sd)
    Xs = (X - mu) / sd
    if task == "regression":
        y = y.astype(np.float64)
        if not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinite values")
        if standardize_y and y[idx[0]].std() == 0:
            raise ValueError("y is constant on the training part: nothing to standardise or predict")
        if standardize_y:
            y = (y - y[idx[0]].mean()) / y[idx[0]].std()
        ys = [torch.as_tensor(y[i], dtype=dtype, device=device) for i in idx]
    else:
        classes, y = np.unique(y, return_inverse=True)
        ys = [torch.as_tensor(y[i], dtype=torch.long, device=device) for i in idx]
    Xs_ = [torch.as_tensor(Xs[i], dtype=dtype, device=device) for i in idx]
    return Split(Xs_[0], ys[0], Xs_[1], ys[1], Xs_[2], ys[2], task=task,
                 feature_names=tuple(feature_names), name=name)


def load(name: str, *, split=(0.6, 0.2, 0.2), seed: int = 0, device=None,
         dtype: torch.dtype = torch.float64) -> Split:
    """Load a scikit-learn bundled data set as a seeded, standardised :class:`Split` (notebook 01).

    ``name`` is one of ``BUNDLED``: diabetes (regression), breast_cancer, digits, iris, wine.
    Nothing is downloaded.

    >>> from metahpo_lib import data
    >>> s = data.load("diabetes", seed=0)
    >>> s.task, tuple(s.X_train.shape), s.feature_names[:3]
    ('regression', (265, 10), ('age', 'sex', 'bmi'))
    """
    if name not in BUNDLED:
        raise ValueError(f"name must be one of {sorted(BUNDLED)} (scikit-learn bundled data sets), got {name!r}")
    import sklearn.datasets

    loader, task = BUNDLED[name]
    bunch = getattr(sklearn.datasets, loader)()
    names = getattr(bunch, "feature_names", None)
    names = tuple(str(n) for n in names) if names is not None else ()
    return from_arrays(bunch.data, bunch.target, task=task, split=split, seed=seed, device=device,
                       dtype=dtype, name=name, feature_names=names)


def make_regression(n: int = 500, d: int = 20, *, condition: float = 1.0, noise: float = 0.5,
                    split=(0.6, 0.2, 0.2), seed: int = 0, device=None,
                    dtype: torch.dtype = torch.float64) -> Split:
    """Generated linear regression ``y = X w + noise`` with feature scales spread so that
    the covariance has condition number about ``condition`` (ill-conditioned problems).

    Feature j is scaled by ``condition ** (-j / (2 (d - 1)))``, so X^T X spans ``condition``.
    X is centred, not scaled (scaling would undo the conditioning); y is left as generated.
    Introduced in notebook 04 (ill-conditioned Hessians for CG).

    >>> from metahpo_lib import data
    >>> s = data.make_regression(50, 3, condition=100.0, seed=0)
    >>> s.name, tuple(s.X_train.shape)
    ('make_regression(n=50, d=3, condition=100)', (30, 3))
    >>> [round(v, 2) for v in s.X_train.std(0).tolist()]   # scales 1, 0.32, 0.1 times a random draw
    [1.18, 0.28, 0.08]
    """
    V.positive_int(n, "n", 5)
    V.positive_int(d, "d")
    V.positive_float(condition, "condition")
    V.positive_float(noise, "noise", allow_zero=True)
    rng = np.random.default_rng(seed)
    scales = condition ** (-np.arange(d) / (2 * max(d - 1, 1)))
    X = rng.standard_normal((n, d)) * scales
    w = rng.standard_normal(d)
    y = X @ w + noise * rng.standard_normal(n)
    return from_arrays(X, y, task="regression", split=split, seed=seed, device=device, dtype=dtype,
                       standardize_x=False, standardize_y=False,
                       name=f"make_regression(n={n}, d={d}, condition={condition:g})")
