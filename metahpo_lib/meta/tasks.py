r"""The task family of notebook 07, part 1: small classification tasks made offline, each
trained by the same small network (an MLP :math:`64 \to 32 \to 32 \to 10`).

A task is drawn from a *source*: the pool of examples it takes its rows from. Sources never
share an example: ``"digits_0to4"`` and ``"digits_5to9"`` are the scikit-learn digits images of
classes 0-4 and 5-9, ``"breast_cancer"`` and ``"wine"`` the bundled tabular sets, ``"blobs"``
and ``"hypercube"`` two generators (``sklearn.datasets.make_blobs`` and
``make_classification``) whose difficulty is set by ``difficulty`` (cluster spread, class
separation). :data:`META_TRAIN_SOURCES` and :data:`META_TEST_SOURCES` share no source, so no
example, class pool or generator of a held-out task was seen in meta-training
(:func:`check_split` checks it).

Tasks differ in their class subset (2-5 classes of the pool), training-set size, label noise
(a fraction of training labels replaced by random ones), input transformation (``"none"``,
``"noise"``: Gaussian noise of std 0.5 added, ``"roll"``: the features, or the image columns of a
digit, rolled by one) and input ``scale`` (the standardised inputs multiplied by it). The
out-of-distribution group (:func:`sample_specs` with ``ood=True``) draws held-out sources with
an input scale of 3-6, outside the meta-training range 0.5-2: the learning rate that suited
the family is then too large.

Inputs are standardised with training statistics, scaled, and zero-padded to :data:`WIDTH` = 64
features; labels are ``0..n_classes-1`` of :data:`CLASSES` = 10 outputs.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch

from .. import _validate as V

__all__ = ["WIDTH", "CLASSES", "SOURCES", "META_TRAIN_SOURCES", "META_TEST_SOURCES", "TRANSFORMS", "META_FEATURES",
           "TaskSpec", "Task", "make_task", "sample_specs", "make_tasks", "meta_features", "check_split"]

WIDTH, CLASSES = 64, 10
META_TRAIN_SOURCES = ("digits_0to4", "breast_cancer", "blobs")
META_TEST_SOURCES = ("digits_5to9", "wine", "hypercube")
SOURCES = META_TRAIN_SOURCES + META_TEST_SOURCES
TRANSFORMS = ("none", "noise", "roll")
META_FEATURES = ("log n_train", "log n_classes", "log input std", "active features", "1-NN error")
_EVAL_MIN, _EVAL_MAX = 30, 150


@functools.lru_cache(maxsize=None)
def _sklearn(name: str):
    import sklearn.datasets as D
    X, y = getattr(D, f"load_{name}")(return_X_y=True)
    return X.astype(np.float64), y.astype(np.int64)


def _pool(source: str, difficulty: float, seed: int):
    """Rows ``X (n, d)``, labels ``y`` of a source (a generator draws them from ``seed``)."""
    if source.startswith("digits"):
        X, y = _sklearn("digits")
        keep = y < 5 if source == "digits_0to4" else y >= 5
        return X[keep], y[keep] - (0 if source == "digits_0to4" else 5)
    if source in ("breast_cancer", "wine"):
        return _sklearn(source)
    from sklearn.datasets import make_blobs, make_classification
    if source == "blobs":
        return make_blobs(n_samples=700, n_features=16, centers=5, cluster_std=1.0 + 4.0 * difficulty,
                          random_state=seed)
    return make_classification(n_samples=700, n_features=20, n_informative=8, n_redundant=4, n_classes=5,
                               n_clusters_per_class=1, class_sep=2.0 - 1.5 * difficulty, random_state=seed)


def _pool_size(source: str) -> tuple[int, int]:
    """(rows, classes) of a source."""
    X, y = _pool(source, 0.0, 0)
    return X.shape[0], int(y.max()) + 1


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """How to make one task: ``source``, ``n_classes`` (2-5), ``n_train`` rows, ``label_noise``
    (fraction in [0, 1) of training labels replaced), ``transform`` (one of :data:`TRANSFORMS`),
    input ``scale`` (> 0), ``difficulty`` (in [0, 1], generators only) and the int ``seed`` of its data.

    >>> from metahpo_lib import meta
    >>> meta.TaskSpec("wine", 3, 80, 0.1, "none", 1.0, 0.0, seed=0).source
    'wine'
    >>> meta.TaskSpec("mnist", 3, 80, 0.1, "none", 1.0, 0.0, seed=0)
    Traceback (most recent call last):
        ...
    ValueError: source must be one of ['blobs', 'breast_cancer', 'digits_0to4', 'digits_5to9', 'hypercube', 'wine'], got 'mnist'
    """

    source: str
    n_classes: int
    n_train: int
    label_noise: float
    transform: str
    scale: float
    difficulty: float
    seed: int

    def __post_init__(self):
        V.choice(self.source, "source", sorted(SOURCES))
        V.choice(self.transform, "transform", TRANSFORMS)
        rows, classes = _pool_size(self.source)
        if not (isinstance(self.n_classes, int) and 2 <= self.n_classes <= min(5, classes)):
            raise ValueError(f"n_classes must be an int in [2, {min(5, classes)}] for source {self.source!r}, "
                             f"got {self.n_classes!r}")
        V.positive_int(self.n_train, "n_train", minimum=32)
        if self.n_train > rows // 2:
            raise ValueError(f"n_train must be <= {rows // 2} (half the rows of source {self.source!r}), "
                             f"got {self.n_train}")
        if not 0 <= self.label_noise < 1:
            raise ValueError(f"label_noise must be in [0, 1), got {self.label_noise!r}")
        V.positive_float(self.scale, "scale")
        V.unit_interval(self.difficulty, "difficulty")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise TypeError(f"seed must be an int, got {type(self.seed).__name__}")


class Task:
    """One classification task: ``spec``, the padded tensors ``X_train, y_train, X_val, y_val,
    X_test, y_test`` (inputs ``(n, 64)``, labels ``0..n_classes-1``) and its meta-features
    ``features`` (:func:`meta_features`). Build it with :func:`make_task`.

    >>> from metahpo_lib import meta
    >>> t = meta.make_task(meta.TaskSpec("digits_0to4", 3, 60, 0.0, "none", 1.0, 0.0, seed=0))
    >>> tuple(t.X_train.shape), t.source, int(t.y_train.max())
    ((60, 64), 'digits_0to4', 2)
    """

    def __init__(self, spec: TaskSpec, tensors: dict, features: torch.Tensor):
        self.spec, self.features = spec, features
        for k, v in tensors.items():
            setattr(self, k, v)

    @property
    def source(self) -> str:
        """The source the task's rows come from."""
        return self.spec.source

    def __repr__(self) -> str:
        s = self.spec
        return (f"Task({s.source}, {s.n_classes} classes, n_train={s.n_train}, noise={s.label_noise:.2f}, "
                f"{s.transform}, scale={s.scale:.2g}, seed={s.seed})")


def _transform(X: np.ndarray, kind: str, source: str, rng) -> np.ndarray:
    if kind == "noise":
        return X + 0.5 * rng.standard_normal(X.shape)
    if kind == "roll":
        if source.startswith("digits"):
            return np.roll(X.reshape(-1, 8, 8), 1, axis=2).reshape(X.shape)
        return np.roll(X, 1, axis=1)
    return X


def make_task(spec: TaskSpec, *, dtype=torch.float32, device=None) -> Task:
    """Make the task of ``spec`` (seeded by ``spec.seed``): pick the class subset, shuffle, split
    into ``n_train`` training rows and validation/test sets of equal size (30-150 rows each), add
    label noise to the training labels, standardise with training statistics, transform, scale, pad.

    >>> from metahpo_lib import meta
    >>> t = meta.make_task(meta.TaskSpec("wine", 3, 80, 0.0, "none", 2.0, 0.0, seed=1))
    >>> round(float(t.X_train[:, :13].std(0).mean()), 1), t.X_val.shape[0] == t.X_test.shape[0]
    (2.0, True)
    """
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"spec must be a meta.TaskSpec, got {type(spec).__name__}")
    rng = np.random.default_rng(spec.seed)
    X, y = _pool(spec.source, spec.difficulty, spec.seed)
    classes = rng.choice(int(y.max()) + 1, spec.n_classes, replace=False)
    keep = np.isin(y, classes)
    X, y = X[keep], np.searchsorted(np.sort(classes), y[keep])
    order = rng.permutation(len(y))
    n_eval = min(_EVAL_MAX, (len(y) - spec.n_train) // 2)
    if n_eval < _EVAL_MIN:
        raise ValueError(f"spec.n_train={spec.n_train} leaves {len(y) - spec.n_train} rows of the {spec.n_classes} "
                         f"chosen classes for validation and test; need {2 * _EVAL_MIN}")
    parts = np.split(order[:spec.n_train + 2 * n_eval], [spec.n_train, spec.n_train + n_eval])
    Xs, ys = [X[p] for p in parts], [y[p].copy() for p in parts]
    flip = rng.random(spec.n_train) < spec.label_noise
    ys[0][flip] = rng.integers(0, spec.n_classes, int(flip.sum()))
    mu, sd = Xs[0].mean(0), Xs[0].std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    out = {}
    for name, Xp, yp in zip(("train", "val", "test"), Xs, ys):
        Z = _transform((Xp - mu) / sd, spec.transform, spec.source, rng) * spec.scale
        Z = np.pad(Z, ((0, 0), (0, WIDTH - Z.shape[1])))
        out[f"X_{name}"] = torch.as_tensor(Z, dtype=dtype, device=device)
        out[f"y_{name}"] = torch.as_tensor(yp, dtype=torch.long, device=device)
    return Task(spec, out, meta_features(out["X_train"], out["y_train"]))


def meta_features(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""The task description a predictor reads (:data:`META_FEATURES`), from the training set only:
    :math:`\log n`, :math:`\log C`, the log of the mean input std over active features, the
    fraction of active (non-constant) features, and the leave-one-out 1-nearest-neighbour error
    (a proxy for difficulty and label noise). Returns a float64 tensor ``(5,)``.

    >>> import torch
    >>> from metahpo_lib import meta
    >>> X, y = torch.eye(4).repeat(2, 1), torch.arange(4).repeat(2)
    >>> [round(v, 3) for v in meta.meta_features(X, y).tolist()]
    [2.079, 1.386, -0.77, 1.0, 0.0]
    """
    V.tensor(X, "X", ndim=2)
    V.same_rows(X, y, "X", "y")
    Xd = X.detach().double()
    sd = Xd.std(0)
    active = sd > 1e-8
    D = torch.cdist(Xd, Xd)
    D.fill_diagonal_(math.inf)
    nn_err = (y[D.argmin(1)] != y).double().mean()
    return torch.tensor([math.log(X.shape[0]), math.log(int(y.max()) + 1), float(sd[active].mean().log()),
                         float(active.double().mean()), float(nn_err)], dtype=torch.float64)


def sample_specs(sources, n: int, *, seed: int = 0, ood: bool = False) -> list[TaskSpec]:
    """``n`` task specifications drawn with ``seed``, cycling through ``sources``: 2-5 classes,
    ``n_train`` log-uniform in [40, 300] (at most half the source), label noise in [0, 0.3],
    a transform, ``difficulty`` in [0, 1] and input ``scale`` log-uniform in [0.5, 2]
    (``ood=True``: [3, 6], the out-of-distribution group).

    >>> from metahpo_lib import meta
    >>> [s.source for s in meta.sample_specs(meta.META_TEST_SOURCES, 4, seed=0)]
    ['digits_5to9', 'wine', 'hypercube', 'digits_5to9']
    """
    sources = list(sources) if not isinstance(sources, str) else [sources]
    if not sources:
        raise ValueError("sources must name at least one source")
    for s in sources:
        V.choice(s, "sources", sorted(SOURCES))
    V.positive_int(n, "n")
    rng = np.random.default_rng(seed)
    lo, hi = (3.0, 6.0) if ood else (0.5, 2.0)
    out = []
    for i in range(n):
        src = sources[i % len(sources)]
        rows, classes = _pool_size(src)
        c = int(rng.integers(2, min(5, classes) + 1))
        cap = min(300, rows // 2, int(0.8 * rows * c / classes) - 2 * _EVAL_MIN)
        n_train = int(math.exp(rng.uniform(math.log(40), math.log(max(cap, 41)))))
        out.append(TaskSpec(src, c, min(n_train, cap), float(rng.uniform(0, 0.3)), str(rng.choice(TRANSFORMS)),
                            float(math.exp(rng.uniform(math.log(lo), math.log(hi)))), float(rng.uniform()),
                            int(rng.integers(0, 2**31))))
    return out


def make_tasks(specs, *, dtype=torch.float32, device=None) -> list[Task]:
    """:func:`make_task` for each spec.

    >>> from metahpo_lib import meta
    >>> len(meta.make_tasks(meta.sample_specs(["wine"], 2, seed=0)))
    2
    """
    return [make_task(s, dtype=dtype, device=device) for s in specs]


def check_split(train_tasks, test_tasks, *, train_name: str = "tasks", test_name: str = "task") -> None:
    """Raise a ``ValueError`` naming ``test_name`` if a held-out task's source also made a meta-training task.

    >>> from metahpo_lib import meta
    >>> tr = meta.make_tasks(meta.sample_specs(["wine"], 1, seed=0))
    >>> meta.check_split(tr, tr)
    Traceback (most recent call last):
        ...
    ValueError: task comes from a source that meta-training saw (wine): meta-test tasks must come from other sources ...
    """
    seen = {t.source for t in train_tasks}
    shared = sorted(seen & {t.source for t in test_tasks})
    if shared:
        raise ValueError(f"{test_name} comes from a source that meta-training saw ({', '.join(shared)}): meta-test "
                         f"tasks must come from other sources (the {train_name} came from {sorted(seen)})")
