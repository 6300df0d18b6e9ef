r"""The comparison protocol of notebook 07, part 1: every method's evaluations on one task and
run seed, their cost in full trainings, and the test regret of the incumbent at each budget.

A method's *incumbent* after a budget of B trainings is its evaluated configuration with the
lowest validation loss among those paid for within B (cumulative cost :math:`\le B`). Two test
regrets score it:

- *same run*: its test loss on the run that chose it, minus the best test loss of everything
  evaluated on that task and seed (a large random search included): the model you keep;
- *re-trained*: its test loss averaged over fresh training runs (:func:`retrain`, seeds no
  method saw), minus the best such average in a reference set: the quality of the
  hyperparameters, without the luck of the run that picked them.

A hypergradient costs ``hypergradient_cost`` trainings (measured).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import _validate as V
from ..hpo.methods import run_method
from .tasks import Task
from .training import STEPS, TaskProblem, evaluate, random_configs, to_config

__all__ = ["BASELINES", "incumbents", "incumbent_regret", "retrain", "run_search"]

#: the per-task searches (no meta-learning): name -> what it runs
BASELINES = {"random": "hpo.random_search's distribution, trained at once with vmap", "tpe": "Optuna TPE",
             "gp": "Optuna GP", "hgd": "hypergradient descent (hpo.hypergradient_descent)"}


def incumbents(vals, costs, budgets) -> list:
    """The index of the incumbent (lowest validation loss among the evaluations paid within the
    budget) at each of ``budgets``; ``None`` where not even one evaluation fits.

    >>> from metahpo_lib import meta
    >>> meta.incumbents([3.0, 1.0, 2.0], [1, 1, 1], [0.5, 1, 3])
    [None, 0, 1]
    """
    vals, costs = np.asarray(vals, dtype=float), np.asarray(costs, dtype=float)
    if len(vals) != len(costs):
        raise ValueError(f"vals and costs must have the same length, got {len(vals)} and {len(costs)}")
    cum = np.cumsum(costs)
    out = []
    for b in budgets:
        paid = np.flatnonzero(cum <= b + 1e-9)
        out.append(None if not len(paid) else int(paid[np.argmin(vals[paid])]))
    return out


def retrain(task: Task, configs: torch.Tensor, seeds, *, steps: int = STEPS) -> torch.Tensor:
    """``(K, R)`` test losses of ``K`` configurations ``(K, 25)`` re-trained from each of the ``R``
    run ``seeds`` (``meta.evaluate``: all at once, a diverged run scores ``meta.CAP``).

    >>> import torch
    >>> from metahpo_lib import meta
    >>> t = meta.make_task(meta.TaskSpec("wine", 3, 80, 0.0, "none", 1.0, 0.0, seed=1))
    >>> meta.retrain(t, torch.stack([meta.to_vector(meta.DEFAULT)] * 2), [10, 11], steps=20).shape
    torch.Size([2, 2])
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one run seed")
    return torch.stack([evaluate(task, configs, s, steps=steps)[1] for s in seeds], dim=1)


def incumbent_regret(vals, tests, costs, budgets, best_test: float) -> np.ndarray:
    """Test regret of the incumbent (lowest validation loss among evaluations paid within each
    budget) at each of ``budgets``; NaN where not even one evaluation fits.

    >>> from metahpo_lib import meta
    >>> meta.incumbent_regret([3.0, 1.0, 2.0], [0.5, 0.2, 0.1], [1, 1, 1], [1, 2, 3], best_test=0.1).round(2).tolist()
    [0.4, 0.1, 0.1]
    """
    if not len(vals) == len(tests) == len(costs):
        raise ValueError(f"vals, tests and costs must have the same length, got {len(vals)}, {len(tests)}, {len(costs)}")
    tests = np.asarray(tests, dtype=float)
    return np.array([math.nan if i is None else tests[i] - best_test for i in incumbents(vals, costs, budgets)])


def run_search(method: str, task: Task, seed: int, budget: float, *, start: dict | None = None,
               hypergradient_cost: float = 1.0, steps: int = STEPS) -> dict:
    """Run one per-task search (:data:`BASELINES`) on ``task`` and run ``seed`` with ``budget``
    trainings: ``{"vals", "tests", "costs", "configs"}`` lists. ``"hgd"`` takes
    ``floor(budget / hypergradient_cost)`` steps from ``start`` (default: ``meta.DEFAULT``).

    >>> from metahpo_lib import meta
    >>> t = meta.make_task(meta.TaskSpec("wine", 3, 80, 0.0, "none", 1.0, 0.0, seed=1))
    >>> r = meta.run_search("hgd", t, 0, 3, hypergradient_cost=1.5, steps=20)
    >>> len(r["vals"]), r["costs"]
    (2, [1.5, 1.5])
    """
    V.choice(method, "method", sorted(BASELINES))
    if not isinstance(budget, (int, float)) or isinstance(budget, bool) or not budget >= 1:
        raise ValueError(f"budget must be >= 1 full training, got {budget!r}")
    if method == "random":
        C = random_configs(int(budget), seed=seed)
        val, test = evaluate(task, C, seed, steps=steps)
        return {"vals": val.tolist(), "tests": test.tolist(), "costs": [1.0] * len(C),
                "configs": [to_config(c) for c in C]}
    p = TaskProblem(task, seed, gradient=method == "hgd", steps=steps)
    if method == "hgd":
        n = int(budget // V.positive_float(hypergradient_cost, "hypergradient_cost"))
        if n >= 1:
            run_method("start+hgd" if start else "hgd", p, n, seed=seed, starts={"start": [start]} if start else None)
    else:
        run_method(method, p, int(budget), seed=seed)
    cost = hypergradient_cost if method == "hgd" else 1.0
    return {"vals": p.vals, "tests": p.tests, "costs": [cost] * len(p.vals), "configs": p.configs}
