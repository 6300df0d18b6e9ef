r"""Meta-learning hyperparameters across a family of ridge regression tasks (notebook 06, part 1).

**Task family.** Each task is ridge regression on a regression data set made from a
*source*: generated data (``"synthetic"``, ``"ill_conditioned"``) or a scikit-learn bundled
data set (``"diabetes"`` with its own target; ``"breast_cancer"``, ``"digits"``, ``"wine"``
regression-ised: one standardised column is the target, a random subset of the others the
features). Tasks differ in size ``n``, number of features ``d``, added label ``noise`` and
feature scaling (column ``j`` multiplied by :math:`e^{\mathrm{spread}\cdot z_j}`).
:data:`META_TRAIN_SOURCES` and :data:`META_TEST_SOURCES` share no source.

**Hyperparameters.** Two numbers per task, ``{"log_alpha": (), "scale_power": ()}``, mapped
to one ridge penalty per feature (:func:`metahpo_lib.problems.ridge` with ``per_feature``):

.. math::  \log\alpha_j = \texttt{log\_alpha} + \texttt{scale\_power}\cdot(\log s_j - \overline{\log s}),

with :math:`s_j` the training std of feature ``j``. ``scale_power = 2`` makes the penalty
invariant to feature scaling; ``0`` is plain ridge.

**Meta-learning** (the outer loop averages over a batch of tasks, as MAML does):

.. math::  \min_\phi \frac1B \sum_{\tau \in \text{batch}} L^\tau_{val}\big(w^*_\tau(h_\phi(m_\tau))\big),
           \qquad h_\phi(m) = b + W^\top \frac{m - \mu}{\sigma},

where :math:`m_\tau` are the task's meta-features (:func:`meta_features`) and the gradient
of each term is the exact hypergradient (:func:`metahpo_lib.hypergrad.exact`) chained
through :math:`h_\phi`. (a) ``kind="shared"`` keeps :math:`W = 0`: one setting for the
family; (b) ``kind="predictor"``: a linear predictor from meta-features to hyperparameters.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from . import _validate as V
from .data import Split, from_arrays
from .hpo.search import Float, History, grid_configs, random_search
from .hypergrad import exact
from .problems import ridge

#: every source a task can be drawn from
SOURCES = ("synthetic", "ill_conditioned", "diabetes", "breast_cancer", "digits", "wine")
META_TRAIN_SOURCES = ("synthetic", "breast_cancer", "digits")
META_TEST_SOURCES = ("diabetes", "wine")
#: a source unlike the training tasks: truth isotropic in the *raw* feature scale
OUT_OF_DISTRIBUTION_SOURCES = ("ill_conditioned",)
#: the search space of the two hyperparameters (used by grid, random and TPE)
SPACE = {"log_alpha": Float(-12.0, 4.0), "scale_power": Float(-1.0, 3.0)}
HPARAM_KEYS = ("log_alpha", "scale_power")
META_FEATURES = ("log n_train", "log d", "scale spread", "log LOO error", "mean |corr(x, y)|", "mean |corr(x, x)|")
_SKLEARN = {"diabetes": "load_diabetes", "breast_cancer": "load_breast_cancer", "digits": "load_digits",
            "wine": "load_wine"}


@dataclass(frozen=True)
class TaskSpec:
    """How to draw one task: source, total rows ``n``, features ``d``, label ``noise`` (std,
    relative to the standardised target), feature-scale ``spread``, and ``seed``."""

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


@functools.lru_cache(maxsize=8)
def _sklearn_source(source: str):
    import sklearn.datasets

    b = getattr(sklearn.datasets, _SKLEARN[source])()
    X = np.asarray(b.data, dtype=np.float64)
    keep = X.std(0) > 1e-8
    X = X[:, keep]
    X = (X - X.mean(0)) / X.std(0)
    y = np.asarray(b.target, dtype=np.float64) if source == "diabetes" else None
    return X, y


def source_size(source: str) -> tuple[int, int]:
    """``(rows, usable feature columns)`` of a source (generated sources: unlimited)."""
    V.choice(source, "source", set(SOURCES))
    if source in ("synthetic", "ill_conditioned"):
        return 10**6, 10**6
    X, y = _sklearn_source(source)
    return X.shape[0], X.shape[1] - (1 if y is None else 0)


def _arrays(spec: TaskSpec, rng: np.random.Generator):
    n, d = spec.n, spec.d
    if spec.source == "synthetic":  # scale-invariant truth: y = Z v, features Z * s
        Z = rng.standard_normal((n, d))
        y = Z @ rng.standard_normal(d)
        scales = np.exp(spec.spread * rng.standard_normal(d))
        X = Z * scales
    elif spec.source == "ill_conditioned":  # truth isotropic in the raw scale: y = X w
        scales = np.exp(spec.spread * rng.standard_normal(d))
        X = rng.standard_normal((n, d)) * scales
        y = X @ rng.standard_normal(d)
    else:
        Xs, ys = _sklearn_source(spec.source)
        N, D = Xs.shape
        if n > N:
            raise ValueError(f"n must be <= {N} rows for source {spec.source!r}, got {n}")
        rows = rng.choice(N, size=n, replace=False)
        Xr = Xs[rows]
        moves = (np.abs(Xr - np.median(Xr, 0)) > 1e-9).mean(0)  # share of rows off the column's median
        varied = np.flatnonzero((Xr.std(0) > 0.3) & (moves >= 0.25))  # skip (nearly) constant columns
        if ys is None:
            t = int(rng.choice(varied))
            pool = varied[varied != t]
            y = Xs[rows, t]
        else:
            pool = varied
            y = ys[rows]
        if d > len(pool):
            raise ValueError(f"d must be <= {len(pool)} features for source {spec.source!r}, got {d}")
        cols = rng.choice(pool, size=d, replace=False)
        scales = np.exp(spec.spread * rng.standard_normal(d))
        X = Xs[np.ix_(rows, cols)] * scales
    y = (y - y.mean()) / max(y.std(), 1e-12)
    y = y + spec.noise * rng.standard_normal(n)
    return X, y


@dataclass(frozen=True)
class Task:
    """One ridge task: its :class:`~metahpo_lib.data.Split`, the centred log feature scales
    ``log_scales (d,)``, its meta-features ``features (K,)`` and the per-feature ridge
    ``problem`` (hparams ``{"log_alpha": (d,)}``)."""

    spec: TaskSpec
    split: Split
    log_scales: torch.Tensor
    features: torch.Tensor
    problem: object = field(repr=False)
    test_problem: object = field(repr=False)

    @property
    def name(self) -> str:
        s = self.spec
        return f"{s.source}(n={s.n}, d={s.d}, noise={s.noise:.2f}, spread={s.spread:.2f}, seed={s.seed})"

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
        """Validation loss :math:`\\frac{1}{2m}\\|X_{val} w^* - y_{val}\\|^2` at ``hparams``."""
        lam = self.expand(hparams)
        with torch.no_grad():
            return float(self.problem.outer_loss(self.problem.solve_inner(lam), lam))

    def test_loss(self, hparams: dict) -> float:
        """The same loss on the test split (never seen by any search)."""
        lam = self.expand(hparams)
        with torch.no_grad():
            return float(self.test_problem.outer_loss(self.problem.solve_inner(lam), lam))

    def hypergrad(self, hparams: dict) -> dict:
        """Exact hypergradient of the validation loss w.r.t. the two hyperparameters:
        :func:`~metahpo_lib.hypergrad.exact` for the per-feature penalties, chained through
        :meth:`expand` (d/dlog_alpha = sum_j g_j, d/dscale_power = sum_j g_j log s_j)."""
        lam = {k: v.detach() for k, v in self.expand(hparams).items()}
        g = exact(self.problem, lam)["log_alpha"]
        return {"log_alpha": g.sum(), "scale_power": (g * self.log_scales).sum()}

    def objective(self, config: dict) -> float:
        """``f(config) -> validation loss`` for grid, random and Optuna searches over :data:`SPACE`."""
        return self.val_loss(self.hparams(config))

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
        gram = s.X_train.T @ s.X_train / n
        rhs = s.X_train.T @ s.y_train / n
        W = torch.linalg.solve(gram + torch.diag_embed(lam), rhs.expand(*lam.shape[:2], -1).unsqueeze(-1))[..., 0]
        X, y = (s.X_val, s.y_val) if which == "val" else (s.X_test, s.y_test)
        return (torch.einsum("nd,abd->abn", X, W) - y).pow(2).mean(-1) / 2


def meta_features(split: Split) -> torch.Tensor:
    """Cheap statistics of a task's *training* split, shape ``(6,)`` (see :data:`META_FEATURES`):
    log n, log d, std of the log feature scales, log leave-one-out error of a lightly
    regularised scale-invariant ridge fit, mean |corr(x_j, y)|, mean |corr(x_j, x_k)|."""
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
    """Draw the task described by ``spec`` (seeded): split 50/25/25, features centred (not
    scaled: the feature scaling is part of the task), target standardised."""
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


def sample_specs(sources: Sequence[str], n_tasks: int, *, seed: int = 0, n_range=(60, 500), d_max: int = 30,
                 noise_range=(0.0, 1.0), spread_range=(0.0, 1.5)) -> list[TaskSpec]:
    """``n_tasks`` random task specifications spread evenly over ``sources`` (seeded)."""
    if isinstance(sources, str) or not sources:
        raise ValueError(f"sources must be a non-empty list of names from {list(SOURCES)}, got {sources!r}")
    for s in sources:
        V.choice(s, "sources", set(SOURCES))
    V.positive_int(n_tasks, "n_tasks")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_tasks):
        src = sources[i % len(sources)]
        N, D = source_size(src)
        hi = min(n_range[1], N)
        n = int(round(math.exp(rng.uniform(math.log(n_range[0]), math.log(hi)))))
        d = int(rng.integers(3, min(d_max, D) + 1))
        d = min(d, max(1, n // 2 - 2))
        out.append(TaskSpec(src, n, d, float(rng.uniform(*noise_range)), float(rng.uniform(*spread_range)),
                            int(rng.integers(2**31 - 1))))
    return out


def make_tasks(specs: Sequence[TaskSpec], **kw) -> list[Task]:
    """:func:`make_task` for each spec."""
    return [make_task(s, **kw) for s in specs]


# ----------------------------------------------------------------------------------------------
# meta-learned hyperparameters


@dataclass(frozen=True)
class HyperPredictor:
    """:math:`h(m) = b + W^\\top (m - \\mu)/\\sigma`: meta-features ``(K,)`` -> the two
    hyperparameters. ``weights = {"W": (K, 2), "b": (2,)}``; ``kind="shared"`` has W = 0."""

    weights: dict
    mu: torch.Tensor
    sd: torch.Tensor
    kind: str = "predictor"
    losses: tuple = ()

    def __call__(self, task: Task) -> dict:
        return predict(self.weights, task.features, self.mu, self.sd)

    def config(self, task: Task) -> dict:
        """The predicted hyperparameters as a config dict of floats, clipped to :data:`SPACE`."""
        h = self(task)
        return {k: float(min(max(float(h[k]), SPACE[k].low), SPACE[k].high)) for k in HPARAM_KEYS}


def predict(weights: dict, features: torch.Tensor, mu: torch.Tensor, sd: torch.Tensor) -> dict:
    """Functional predictor: ``{"log_alpha": (), "scale_power": ()}`` from ``features (K,)``."""
    out = weights["b"] + ((features - mu) / sd) @ weights["W"]
    return {k: out[i] for i, k in enumerate(HPARAM_KEYS)}


def meta_gradient(tasks: Sequence[Task], hparams: dict) -> dict:
    """The outer-loop gradient of one shared setting over a batch of tasks:
    :math:`\\frac1B\\sum_\\tau \\nabla_h L^\\tau_{val}(w^*_\\tau(h))` (exact hypergradients)."""
    if not tasks:
        raise ValueError("tasks must be a non-empty list of Task")
    gs = [t.hypergrad(hparams) for t in tasks]
    return {k: torch.stack([g[k] for g in gs]).mean() for k in HPARAM_KEYS}


def meta_train(tasks: Sequence[Task], *, kind: str = "predictor", steps: int = 300, batch_size: int = 8,
               lr: float = 0.05, weight_decay: float = 1e-2, seed: int = 0, init=(-2.0, 1.0),
               progress: bool = False) -> HyperPredictor:
    """Meta-train a :class:`HyperPredictor` with Adam on the mean validation loss of random
    task batches; each task contributes its exact hypergradient, back-propagated through
    the predictor. ``weight_decay`` is an L2 penalty on ``W`` (few tasks, keep it simple)."""
    from tqdm.auto import tqdm

    V.choice(kind, "kind", {"predictor", "shared"})
    if len(tasks) < 2 or not all(isinstance(t, Task) for t in tasks):
        raise ValueError(f"tasks must be a list of at least 2 Task (meta-features are standardised over them), "
                         f"got {len(tasks)}")
    V.positive_int(steps, "steps")
    V.positive_int(batch_size, "batch_size")
    V.positive_float(lr, "lr")
    V.positive_float(weight_decay, "weight_decay", allow_zero=True)
    F = torch.stack([t.features for t in tasks])
    mu, sd = F.mean(0), F.std(0).clamp_min(1e-6)
    kw = dict(dtype=F.dtype, device=F.device)
    W = torch.zeros(F.shape[1], 2, **kw, requires_grad=kind == "predictor")
    b = torch.tensor(init, **kw, requires_grad=True)
    opt = torch.optim.Adam([b] + ([W] if kind == "predictor" else []), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in tqdm(range(steps), disable=not progress, desc=f"meta-train ({kind})"):
        idx = torch.randperm(len(tasks), generator=gen)[: min(batch_size, len(tasks))].tolist()
        opt.zero_grad()
        total = 0.0
        for i in idx:
            t = tasks[i]
            h = predict({"W": W, "b": b}, t.features, mu, sd)
            lam = t.expand(h)["log_alpha"]
            g = exact(t.problem, {"log_alpha": lam.detach()})["log_alpha"]
            lam.backward(g / len(idx))  # chain rule: dL/dphi = dL/dlam . dlam/dphi
            total += t.val_loss({k: v.detach() for k, v in h.items()})
        if kind == "predictor" and weight_decay > 0:
            (0.5 * weight_decay * W.pow(2).sum()).backward()
        opt.step()
        with torch.no_grad():  # stay inside the search space
            b[0].clamp_(SPACE["log_alpha"].low, SPACE["log_alpha"].high)
            b[1].clamp_(SPACE["scale_power"].low, SPACE["scale_power"].high)
        losses.append(total / len(idx))
    return HyperPredictor({"W": W.detach(), "b": b.detach()}, mu, sd, kind, tuple(losses))


# ----------------------------------------------------------------------------------------------
# evaluation: dense reference, searches at equal budgets, regret with CI


def dense_best(task: Task, *, num: tuple[int, int] = (81, 41), refine_steps: int = 40) -> tuple[float, dict]:
    """The per-task reference: the best validation loss on a dense grid over :data:`SPACE`,
    refined by ``refine_steps`` of hypergradient descent. Returns ``(loss, config)``."""
    a = torch.linspace(SPACE["log_alpha"].low, SPACE["log_alpha"].high, num[0], dtype=torch.float64)
    b = torch.linspace(SPACE["scale_power"].low, SPACE["scale_power"].high, num[1], dtype=torch.float64)
    L = task.loss_grid(a, b).cpu()
    i, j = divmod(int(L.argmin()), num[1])
    best_cfg = {"log_alpha": float(a[i]), "scale_power": float(b[j])}
    hist = hypergrad_descent(task, best_cfg, refine_steps, lr=0.05) if refine_steps else None
    if hist is not None and hist.best_value < float(L.min()):
        return hist.best_value, hist.best_config
    return float(L.min()), best_cfg


def hypergrad_descent(task: Task, start: dict, budget: int, *, lr: float = 0.3) -> History:
    """Per-task hypergradient descent (Adam on the two hyperparameters) from ``start``;
    each step costs one evaluation (a solve and its hypergradient). Returns a History."""
    V.positive_int(budget, "budget")
    h = {k: torch.tensor(float(start[k]), dtype=torch.float64, requires_grad=True) for k in HPARAM_KEYS}
    opt = torch.optim.Adam(list(h.values()), lr=lr)
    hist = History()
    for _ in range(budget):
        cfg = {k: float(v.detach()) for k, v in h.items()}
        hist.add(cfg, task.objective(cfg))
        g = task.hypergrad(task.hparams(cfg))
        opt.zero_grad()
        for k in HPARAM_KEYS:
            h[k].grad = g[k].to(h[k].dtype).cpu()
        opt.step()
        with torch.no_grad():
            for k in HPARAM_KEYS:
                h[k].clamp_(SPACE[k].low, SPACE[k].high)
    return hist


def run_methods(task: Task, *, predictor: HyperPredictor | None = None, shared: HyperPredictor | None = None,
                budget: int = 50, grid_budgets: Sequence[int] = (1, 5, 10, 25, 50), seed: int = 0,
                methods: Sequence[str] | None = None) -> dict:
    """Every method on one task at equal budgets. Returns ``{method: (val_curve, test_curve)}``
    with curves of length ``budget``: the validation loss of the incumbent (best so far) and
    its test loss. Zero-shot methods ("shared", "predictor") spend no evaluation: their
    curves are constant. Grid search is run once per budget in ``grid_budgets``."""
    from .hpo.optuna_tools import optuna_search

    V.positive_int(budget, "budget")
    allowed = ["grid", "random", "tpe"]
    if shared is not None:
        allowed += ["shared"]
    if predictor is not None:
        allowed += ["predictor", "predictor+hgd", "predictor+tpe"]
    methods = allowed if methods is None else list(methods)
    for m in methods:
        V.choice(m, "methods", set(allowed))

    def curves(hist: History):
        vals, tests, best, bt = [], [], math.inf, math.nan
        for c, v in zip(hist.configs, hist.values):
            if v < best:
                best, bt = v, task.test_loss(task.hparams(c))
            vals.append(best)
            tests.append(bt)
        vals += [vals[-1]] * (budget - len(vals))
        tests += [tests[-1]] * (budget - len(tests))
        return np.asarray(vals[:budget]), np.asarray(tests[:budget])

    def const(cfg):
        h = task.hparams(cfg)
        return np.full(budget, task.val_loss(h)), np.full(budget, task.test_loss(h))

    out = {}
    for m in methods:
        if m == "grid":
            v, t = np.full(budget, np.nan), np.full(budget, np.nan)
            for gb in sorted(b for b in grid_budgets if b <= budget):
                cv, ct = curves(History(*_eval_all(task, grid_configs(SPACE, gb))))
                v[gb - 1], t[gb - 1] = cv[-1], ct[-1]
            out[m] = (v, t)
        elif m == "random":
            out[m] = curves(random_search(task.objective, SPACE, budget, seed=seed))
        elif m == "tpe":
            out[m] = curves(optuna_search(task.objective, SPACE, budget, sampler="tpe", seed=seed))
        elif m == "shared":
            out[m] = const(shared.config(task))
        elif m == "predictor":
            out[m] = const(predictor.config(task))
        elif m == "predictor+hgd":
            out[m] = curves(hypergrad_descent(task, predictor.config(task), budget))
        elif m == "predictor+tpe":
            out[m] = curves(optuna_search(task.objective, SPACE, budget, sampler="tpe", seed=seed,
                                          warm_start=[predictor.config(task)]))
    return out


def _eval_all(task, configs):
    return list(configs), [task.objective(c) for c in configs]


def regret_ci(regrets, level: float = 0.95) -> tuple[float, float, float]:
    """Mean regret and its Student-t ``level`` confidence interval over all entries
    (tasks x seeds): ``(mean, low, high)``."""
    from .hpo.optuna_tools import mean_ci

    return mean_ci(regrets, level)
