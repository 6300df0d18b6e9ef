r"""Comparing HPO methods on the task family at equal budgets (notebook 07, part 1).

Every method runs through the registry (:func:`metahpo_lib.hpo.run_method`); a meta-learned
model enters as a *start*: ``"predictor"`` (zero-shot: evaluate its suggestion only),
``"predictor+hgd"`` and ``"predictor+tpe"`` (per-task hypergradient descent or TPE warm-started
with it). The regret of a method at budget :math:`k` is the validation loss of its incumbent
after :math:`k` evaluations minus the per-task best (:func:`dense_best`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .. import _validate as V
from ..hpo.descent import hypergradient_descent
from ..hpo.methods import parse_method, run_method
from ..hpo.search import History
from .family import SPACE, Task
from .predictor import HyperPredictor

__all__ = ["dense_best", "incumbent_curves", "run_methods"]


def dense_best(task: Task, *, num: tuple[int, int] = (81, 41), refine_iterations: int = 40) -> tuple[float, dict]:
    """The per-task reference: the best validation loss on a dense ``num[0] x num[1]`` grid over
    :data:`SPACE`, refined by ``refine_iterations`` of :func:`~metahpo_lib.hpo.hypergradient_descent`
    (``meta_lr = 0.05``). Returns ``(loss, config)``.

    >>> from metahpo_lib.meta import TaskSpec, dense_best, make_task
    >>> task = make_task(TaskSpec("synthetic", 60, 3, 0.1, 0.5, seed=0))
    >>> loss, cfg = dense_best(task, num=(17, 9), refine_iterations=10)
    >>> round(loss, 4), loss == task.objective(cfg)
    (0.0084, True)
    """
    if not (isinstance(num, (tuple, list)) and len(num) == 2):
        raise ValueError(f"num must be two grid sizes (log_alpha, scale_power), got {num!r}")
    V.positive_int(num[0], "num[0]", 2)
    V.positive_int(num[1], "num[1]", 2)
    V.positive_int(refine_iterations, "refine_iterations", 0)
    a = torch.linspace(SPACE["log_alpha"].low, SPACE["log_alpha"].high, num[0], dtype=torch.float64)
    b = torch.linspace(SPACE["scale_power"].low, SPACE["scale_power"].high, num[1], dtype=torch.float64)
    L = task.loss_grid(a, b).cpu()
    i, j = divmod(int(L.argmin()), num[1])
    best_cfg = {"log_alpha": float(a[i]), "scale_power": float(b[j])}
    if refine_iterations:
        hist = hypergradient_descent(task.objective, SPACE, refine_iterations, gradient=task.gradient,
                                     start=best_cfg, meta_lr=0.05)
        if hist.best_value < float(L.min()):
            return hist.best_value, hist.best_config
    return float(L.min()), best_cfg


def incumbent_curves(task: Task, history: History, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """The validation loss of the incumbent (best so far) after each evaluation of ``history``
    and its test loss, two arrays of length ``budget`` (a shorter history keeps its last value).

    >>> from metahpo_lib.hpo import History
    >>> from metahpo_lib.meta import TaskSpec, incumbent_curves, make_task
    >>> task = make_task(TaskSpec("synthetic", 60, 3, 0.1, 0.5, seed=0))
    >>> h = History()
    >>> for a in (2.0, -2.0, 0.0):
    ...     h.add({"log_alpha": a, "scale_power": 1.0}, task.objective({"log_alpha": a, "scale_power": 1.0}))
    >>> val, test = incumbent_curves(task, h, 4)
    >>> val.round(4).tolist()
    [0.3474, 0.0272, 0.0272, 0.0272]
    """
    vals, tests, best, best_test = [], [], math.inf, math.nan
    for c, v in zip(history.configs, history.values):
        if v < best:
            best, best_test = v, task.test_loss(task.hparams(c))
        vals.append(best)
        tests.append(best_test)
    vals += [vals[-1]] * (budget - len(vals))
    tests += [tests[-1]] * (budget - len(tests))
    return np.asarray(vals[:budget]), np.asarray(tests[:budget])


def _grid_curves(task: Task, budget: int, grid_budgets: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Grid search is not anytime: one grid per budget in ``grid_budgets``, NaN elsewhere."""
    v, t = np.full(budget, np.nan), np.full(budget, np.nan)
    for gb in sorted(b for b in grid_budgets if b <= budget):
        cv, ct = incumbent_curves(task, run_method("grid", task, gb), gb)
        v[gb - 1], t[gb - 1] = cv[-1], ct[-1]
    return v, t


def run_methods(task: Task, *, predictor: HyperPredictor | None = None, shared: HyperPredictor | None = None,
                budget: int = 50, grid_budgets: Sequence[int] = (1, 5, 10, 25, 50), seed=0,
                methods: Sequence[str] | None = None) -> dict:
    """Every method on one task at equal budgets. Returns ``{method: (val_curve, test_curve)}``,
    curves of length ``budget`` (:func:`incumbent_curves`).

    ``methods``: names for :func:`~metahpo_lib.hpo.run_method`, with the starts ``"shared"`` and
    ``"predictor"`` (the suggestions of ``shared`` and ``predictor``, when given); default: grid,
    random, TPE, and shared, predictor, predictor+hgd, predictor+tpe when available. Zero-shot
    methods spend one evaluation: their curves are constant. ``"grid"`` runs once per budget in
    ``grid_budgets`` (NaN at other budgets). ``seed``: an int or a ``torch.Generator``.

    >>> from metahpo_lib.meta import TaskSpec, make_task, run_methods
    >>> task = make_task(TaskSpec("synthetic", 60, 3, 0.1, 0.5, seed=0))
    >>> res = run_methods(task, budget=6, grid_budgets=(1, 4), methods=["grid", "random", "hgd"])
    >>> res["grid"][0].round(4).tolist()
    [0.01, nan, nan, 0.0085, nan, nan]
    >>> res["hgd"][0].round(4).tolist()
    [0.01, 0.0093, 0.009, 0.0088, 0.0087, 0.0086]
    """
    V.positive_int(budget, "budget")
    starts = {name: [p.config(task)] for name, p in (("shared", shared), ("predictor", predictor)) if p is not None}
    if methods is None:
        methods = ["grid", "random", "tpe"] + [m for m in ("shared", "predictor", "predictor+hgd", "predictor+tpe")
                                               if m.split("+")[0] in starts]
    for m in methods:
        parse_method(m, starts, arg="methods")
    out = {}
    for m in methods:
        if m == "grid":
            out[m] = _grid_curves(task, budget, grid_budgets)
        else:
            out[m] = incumbent_curves(task, run_method(m, task, budget, seed=seed, starts=starts), budget)
    return out
