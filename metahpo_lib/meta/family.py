r"""The task family: ridge regression tasks drawn from several sources (notebook 07, part 1).

Each task is ridge regression on a regression data set made from a *source*: generated data
(``"synthetic"``, ``"ill_conditioned"``) or a scikit-learn bundled data set (``"diabetes"``
with its own target; ``"breast_cancer"``, ``"digits"``, ``"wine"`` regression-ised: one
standardised column is the target, a random subset of the others the features). Tasks differ
in size ``n``, number of features ``d``, added label ``noise`` and feature scaling (column
``j`` multiplied by :math:`e^{\mathrm{spread}\cdot z_j}`). :data:`META_TRAIN_SOURCES` and
:data:`META_TEST_SOURCES` share no source.

Two hyperparameters per task, ``{"log_alpha": (), "scale_power": ()}``, set one ridge penalty
per feature (:func:`metahpo_lib.problems.ridge` with ``per_feature``):

.. math::  \log\alpha_j = \texttt{log\_alpha} + \texttt{scale\_power}\cdot(\log s_j - \overline{\log s}),

with :math:`s_j` the training std of feature ``j``: ``scale_power = 2`` makes the penalty
invariant to feature scaling; ``0`` is plain ridge.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import _validate as V
from ..data import Split, from_arrays
from ..hpo.search import Float, int_seed
from ..hypergrad import exact
from ..problems import ridge

__all__ = ["SOURCES", "META_TRAIN_SOURCES", "META_TEST_SOURCES", "OUT_OF_DISTRIBUTION_SOURCES", "SPACE",
           "HPARAM_KEYS", "META_FEATURES", "TaskSpec", "Task", "source_size", "meta_features", "make_task",
           "sample_specs", "make_tasks"]

#: every source a task can be drawn from
SOURCES = ("synthetic", "ill_conditioned", "diabetes", "breast_cancer", "digits", "wine")
META_TRAIN_SOURCES = ("synthetic", "breast_cancer", "digits")
META_TEST_SOURCES = ("diabetes", "wine")
#: a source unlike the training tasks: truth isotropic in the *raw* feature scale
OUT_OF_DISTRIBUTION_SOURCES = ("ill_conditioned",)
#: the search space of the two hyperparameters (used by every HPO method)
SPACE = {"log_alpha": Float(-12.0, 4.0), "scale_power": Float(-1.0, 3.0)}
HPARAM_KEYS = ("log_alpha", "scale_power")
META_FEATURES = ("log n_train", "log d", "scale spread", "log LOO error", "mean |corr(x, y)|", "mean |corr(x, x)|")
_SKLEARN = {"diabetes": "load_diabetes", "breast_cancer": "load_breast_cancer", "digits": "load_digits",
            "wine": "load_wine"}


@dataclass(frozen=True)
class TaskSpec:
    """How to draw one task: ``source``, total rows ``n``, features ``d``, label ``noise`` (std,
    relative to the standardised target), feature-scale ``spread``, and the int ``seed`` of its data.

    >>> from metahpo_lib.meta import TaskSpec
    >>> TaskSpec("synthetic", n=60, d=3, noise=0.1, spread=0.5, seed=0).source
    'synthetic'
    """

    source: str
    n: int
    d: int
    noise: float
    spread: float
    seed: int

    def __post_init__(self):
        V.choice(self.source, "source", set(SOURCES))
        V.positive_int(self.n, "n", 20)
        V.positive_int(self.d, "d")
        V.positive_float(self.noise, "noise", allow_zero=True)
        V.positive_float(self.spread, "spread", allow_zero=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int (it names the task's data), got {type(self.seed).__name__}")


@functools.lru_cache(maxsize=8)
def _sklearn_source(source: str):
    import sklearn.datasets

    b = getattr(sklearn.datasets, _SKLEARN[source])()
    X = np.asarray(b.data, dtype=np.float64)
    X = X[:, X.std(0) > 1e-8]
    X = (X - X.mean(0)) / X.std(0)
    y = np.asarray(b.target, dtype=np.float64) if source == "diabetes" else None
    return X, y


def source_size(source: str) -> tuple[int, int]:
    """``(rows, usable feature columns)`` of a source (generated sources: unlimited).

    >>> from metahpo_lib.meta import source_size
    >>> source_size("wine")
    (178, 12)
    """
    V.choice(source, "source", set(SOURCES))
    if source in ("synthetic", "ill_conditioned"):
        return 10**6, 10**6
    X, y = _sklearn_source(source)
    return X.shape[0], X.shape[1] - (1 if y is None else 0)


def _generated(spec: TaskSpec, rng: np.random.Generator):
    n, d = spec.n, spec.d
    if spec.source == "synthetic":  # scale-invariant truth: y = Z v, features Z * s
        Z = rng.standard_normal((n, d))
        y = Z @ rng.standard_normal(d)
        return Z * np.exp(spec.spread * rng.standard_normal(d)), y
    scales = np.exp(spec.spread * rng.standard_normal(d))  # ill_conditioned: truth isotropic in the raw scale
    X = rng.standard_normal((n, d)) * scales
    return X, X @ rng.standard_normal(d)


def _from_sklearn(spec: TaskSpec, rng: np.random.Generator):
    n, d = spec.n, spec.d
    Xs, ys = _sklearn_source(spec.source)
    if n > Xs.shape[0]:
        raise ValueError(f"n must be <= {Xs.shape[0]} rows for source {spec.source!r}, got {n}")
    rows = rng.choice(Xs.shape[0], size=n, replace=False)
    Xr = Xs[rows]
    moves = (np.abs(Xr - np.median(Xr, 0)) > 1e-9).mean(0)  # share of rows off the column's median
    varied = np.flatnonzero((Xr.std(0) > 0.3) & (moves >= 0.25))  # skip (nearly) constant columns
    if ys is None:
        t = int(rng.choice(varied))
        pool, y = varied[varied != t], Xs[rows, t]
    else:
        pool, y = varied, ys[rows]
    if d > len(pool):
        raise ValueError(f"d must be <= {len(pool)} features for source {spec.source!r}, got {d}")
    cols = rng.choice(pool, size=d, replace=False)
    return Xs[np.ix_(rows, cols)] * np.exp(spec.spread * rng.standard_normal(d)), y


def _arrays(spec: TaskSpec, rng: np.random.Generator):
    """The task's raw arrays: features (scaled) and a standardised, noisy target."""
    X, y = _generated(spec, rng) if spec.source in ("synthetic", "ill_conditioned") else _from_sklearn(spec, rng)
    y = (y - y.mean()) / max(y.std(), 1e-12)
    return X, y + spec.noise * rng.standard_normal(spec.n)


@dataclass(frozen=True)
class Task:
    """One ridge task: its :class:`~metahpo_lib.data.Split`, the centred log feature scales
    ``log_scales (d,)``, its meta-features ``features (K,)`` and the per-feature ridge
    ``problem`` (hparams ``{"log_alpha": (d,)}``). A task is also an HPO problem for
    :func:`~metahpo_lib.hpo.run_method`: it has ``space``, ``objective`` and ``gradient``.

    >>> from metahpo_lib.meta import TaskSpec, make_task
    >>> task = make_task(TaskSpec("synthetic", n=60, d=3, noise=0.1, spread=0.5, seed=0))
    >>> task.name
    'synthetic(n=60, d=3, noise=0.10, spread=0.50, seed=0)'
    >>> round(task.objective({"log_alpha": -2.0, "scale_power": 1.0}), 4)
    0.0272
    """

    spec: TaskSpec
    split: Split
    log_scales: torch.Tensor
    features: torch.Tensor
    problem: object = field(repr=False)
    test_problem: object = field(repr=False)

    @property
    def name(self) -> str:
        """A readable description of the task's specification."""
        s = self.spec
        return f"{s.source}(n={s.n}, d={s.d}, noise={s.noise:.2f}, spread={s.spread:.2f}, seed={s.seed})"

    @property
    def space(self) -> dict:
        """The search space of the two hyperparameters, :data:`SPACE`."""
        return SPACE

    def expand(self, hparams: dict) -> dict:
        """The per-feature penalties ``{"log_alpha": (d,)}`` of the two task hyperparameters."""
        hp = V.tensor_dict(hparams, "hparams")
        if set(hp) != set(HPARAM_KEYS):
            raise ValueError(f"hparams must have keys {list(HPARAM_KEYS)}, got {sorted(hp)}")
        return {"log_alpha": hp["log_alpha"] + hp["scale_power"] * self.log_scales}

    def hparams(self, config: dict) -> dict:
        """A config dict of floats (as a search returns) as an hparams dict of 0-d tensors."""
        kw = dict(dtype=self.log_scales.dtype, device=self.log_scales.device)
        return {k: torch.as_tensor(float(config[k]), **kw) for k in HPARAM_KEYS}

    def val_loss(self, hparams: dict) -> float:
        r"""Validation loss :math:`\frac{1}{2m}\|X_{val} w^* - y_{val}\|^2` at ``hparams``."""
        lam = self.expand(hparams)
        with torch.no_grad():
            return float(self.problem.outer_loss(self.problem.solve_inner(lam), lam))

    def test_loss(self, hparams: dict) -> float:
        """The same loss on the test split (never seen by any search)."""
        lam = self.expand(hparams)
        with torch.no_grad():
            return float(self.test_problem.outer_loss(self.problem.solve_inner(lam), lam))

    def hypergrad(self, hparams: dict) -> dict:
        r"""Exact hypergradient of the validation loss w.r.t. the two hyperparameters:
        :func:`~metahpo_lib.hypergrad.exact` for the per-feature penalties ``g``, chained through
        :meth:`expand`: :math:`\partial/\partial\texttt{log\_alpha} = \sum_j g_j`,
        :math:`\partial/\partial\texttt{scale\_power} = \sum_j g_j \log s_j`."""
        lam = {k: v.detach() for k, v in self.expand(hparams).items()}
        g = exact(self.problem, lam)["log_alpha"]
        return {"log_alpha": g.sum(), "scale_power": (g * self.log_scales).sum()}

    def objective(self, config: dict) -> float:
        """``f(config) -> validation loss`` for the HPO methods over :data:`SPACE`."""
        return self.val_loss(self.hparams(config))

    def gradient(self, config: dict) -> dict:
        """:meth:`hypergrad` at a config dict, as floats (for gradient-based HPO methods)."""
        return {k: float(v) for k, v in self.hypergrad(self.hparams(config)).items()}

    def loss_grid(self, log_alphas, scale_powers, which: str = "val") -> torch.Tensor:
        """Validation (or test) loss on the grid ``log_alphas x scale_powers``, shape
        ``(len(log_alphas), len(scale_powers))``, by one batched solve."""
        V.choice(which, "which", {"val", "test"})
        kw = dict(dtype=self.log_scales.dtype, device=self.log_scales.device)
        a = torch.as_tensor(log_alphas, **kw).reshape(-1, 1, 1)
        b = torch.as_tensor(scale_powers, **kw).reshape(1, -1, 1)
        lam = (a + b * self.log_scales).exp()  # (A, B, d)
        s = self.split
        n = s.X_train.shape[0]
        gram, rhs = s.X_train.T @ s.X_train / n, s.X_train.T @ s.y_train / n
        W = torch.linalg.solve(gram + torch.diag_embed(lam), rhs.expand(*lam.shape[:2], -1).unsqueeze(-1))[..., 0]
        X, y = (s.X_val, s.y_val) if which == "val" else (s.X_test, s.y_test)
        return (torch.einsum("nd,abd->abn", X, W) - y).pow(2).mean(-1) / 2


def meta_features(split: Split) -> torch.Tensor:
    """Cheap statistics of a task's *training* split, shape ``(6,)`` (see :data:`META_FEATURES`):
    log n, log d, std of the log feature scales, log leave-one-out error of a lightly
    regularised scale-invariant ridge fit, mean ``|corr(x_j, y)|``, mean ``|corr(x_j, x_k)|``.

    >>> from metahpo_lib.meta import TaskSpec, make_task, meta_features
    >>> meta_features(make_task(TaskSpec("synthetic", 60, 3, 0.1, 0.5, seed=0)).split).shape
    torch.Size([6])
    """
    X, y = split.X_train, split.y_train
    n, d = X.shape
    sd = X.std(0)
    sd = sd.clamp_min(1e-3 * float(sd.median()))
    Z = (X - X.mean(0)) / sd
    H = Z @ torch.linalg.solve(Z.T @ Z + 1e-1 * n * torch.eye(d, dtype=X.dtype, device=X.device), Z.T)
    resid = (y - H @ y) / (1 - torch.diagonal(H)).clamp_min(1e-6)
    yc = (y - y.mean()) / y.std().clamp_min(1e-12)
    cxy = (Z.T @ yc / n).abs().mean()
    C = (Z.T @ Z / n).abs()
    cxx = (C.sum() - C.diagonal().sum()) / max(d * (d - 1), 1)
    return torch.stack([torch.tensor(math.log(n), dtype=X.dtype, device=X.device),
                        torch.tensor(math.log(d), dtype=X.dtype, device=X.device),
                        sd.log().std(unbiased=False), resid.pow(2).mean().log(), cxy, cxx])


def make_task(spec: TaskSpec, *, device=None, dtype: torch.dtype = torch.float64) -> Task:
    """Draw the task described by ``spec`` (seeded by ``spec.seed``): split 50/25/25, features
    centred (not scaled: the feature scaling is part of the task), target standardised.

    >>> from metahpo_lib.meta import TaskSpec, make_task
    >>> make_task(TaskSpec("wine", 100, 4, 0.1, 0.1, seed=0)).split.X_train.shape
    torch.Size([50, 4])
    """
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"spec must be a TaskSpec, got {type(spec).__name__}")
    X, y = _arrays(spec, np.random.default_rng(spec.seed))
    split = from_arrays(X, y, task="regression", split=(0.5, 0.25, 0.25), seed=spec.seed, device=device,
                        dtype=dtype, standardize_x=False, name=spec.source)
    sd = split.X_train.std(0)
    ls = sd.clamp_min(1e-3 * float(sd.median())).log()  # a column constant in training stays finite
    ls = ls - ls.mean()
    problem = ridge(split.X_train, split.y_train, split.X_val, split.y_val, per_feature=True)
    test_problem = ridge(split.X_train, split.y_train, split.X_test, split.y_test, per_feature=True)
    return Task(spec, split, ls, meta_features(split), problem, test_problem)


def _check_sources(sources) -> None:
    if isinstance(sources, str) or not sources:
        raise ValueError(f"sources must be a non-empty list of names from {list(SOURCES)}, got {sources!r}")
    for s in sources:
        V.choice(s, "sources", set(SOURCES))


def sample_specs(sources: Sequence[str], n_tasks: int, *, seed=0, n_range=(60, 500), d_max: int = 30,
                 noise_range=(0.0, 1.0), spread_range=(0.0, 1.5)) -> list[TaskSpec]:
    """``n_tasks`` random task specifications spread evenly over ``sources``: ``n``
    log-uniform in ``n_range``, ``d`` uniform in ``3..d_max`` (at most ``n // 2 - 2``), ``noise``
    and ``spread`` uniform in their ranges. ``seed``: an int or a ``torch.Generator``.

    >>> from metahpo_lib.meta import sample_specs
    >>> [s.source for s in sample_specs(["synthetic", "wine"], 3, seed=0)]
    ['synthetic', 'wine', 'synthetic']
    """
    _check_sources(sources)
    V.positive_int(n_tasks, "n_tasks")
    rng = np.random.default_rng(int_seed(seed))
    out = []
    for i in range(n_tasks):
        src = sources[i % len(sources)]
        N, D = source_size(src)
        n = int(round(math.exp(rng.uniform(math.log(n_range[0]), math.log(min(n_range[1], N))))))
        d = min(int(rng.integers(3, min(d_max, D) + 1)), max(1, n // 2 - 2))
        out.append(TaskSpec(src, n, d, float(rng.uniform(*noise_range)), float(rng.uniform(*spread_range)),
                            int(rng.integers(2**31 - 1))))
    return out


def make_tasks(specs: Sequence[TaskSpec], **kw) -> list[Task]:
    """:func:`make_task` for each spec (``kw``: ``device``, ``dtype``).

    >>> from metahpo_lib.meta import make_tasks, sample_specs
    >>> len(make_tasks(sample_specs(["synthetic"], 2, seed=0)))
    2
    """
    return [make_task(s, **kw) for s in specs]
