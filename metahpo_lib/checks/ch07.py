"""Self-checks for the exercises of notebook 07 (meta-learning for HPO): ``ch07.maml_meta_gradient(fn)``,
``ch07.incumbent_regret(fn)``, ``ch07.greedy_portfolio(fn)``; the references are ``ref_*``."""

from __future__ import annotations

import numpy as np
import torch

from .. import hpo, meta
from . import compare

__all__ = ["maml_meta_gradient", "incumbent_regret", "greedy_portfolio", "ref_maml_meta_gradient",
           "ref_incumbent_regret", "ref_greedy_portfolio", "small_task"]


def small_task(seed: int = 0) -> meta.Task:
    """A small float64 held-out task (digits 5-9, 2 classes) for the checks.

    >>> from metahpo_lib.checks import ch07
    >>> ch07.small_task(0).X_train.dtype
    torch.float64
    """
    spec = meta.TaskSpec("digits_5to9", 2, 64, 0.1, "none", 1.0, 0.0, seed=seed)
    return meta.make_task(spec, dtype=torch.float64)


def ref_maml_meta_gradient(task, init, log_step, k, seed):
    """The second-order MAML-style meta-gradient on 20-step trainings (inner and outer),
    :func:`metahpo_lib.meta.maml_meta_gradient`.

    >>> import torch
    >>> from metahpo_lib import meta
    >>> from metahpo_lib.checks import ch07
    >>> loss, g = ch07.ref_maml_meta_gradient(ch07.small_task(0), meta.to_vector(meta.DEFAULT),
    ...                                       torch.zeros(25, dtype=torch.float64), 1, 0)
    >>> sorted(g)
    ['init', 'log_step']
    """
    return meta.maml_meta_gradient(task, init, log_step, k=k, seed=seed, steps=20, cheap_steps=20)


def maml_meta_gradient(fn) -> None:
    """Check ``fn(task, init, log_step, k, seed) -> (outer loss float, {"init": (25,), "log_step": (25,)})``
    in float64 against the reference, on three seeded cases.

    >>> from metahpo_lib.checks import ch07
    >>> ch07.maml_meta_gradient(ch07.ref_maml_meta_gradient)
    ✔ ref_maml_meta_gradient matches the reference on 3 seeded case(s).
    """
    cases = []
    for seed, (k, step) in enumerate([(0, 1.0), (1, 1.0), (2, 0.5)]):
        init = meta.to_vector(meta.DEFAULT) + 0.1 * torch.randn(25, generator=torch.Generator().manual_seed(seed),
                                                               dtype=torch.float64)
        log_step = torch.full((25,), float(np.log(step)), dtype=torch.float64)
        cases.append((f"task small_task({seed}), k={k}, step sizes {step}, run seed {seed}",
                      (small_task(seed), meta.clamp(init), log_step, k, seed), {}))
    compare(lambda *a: _as_float(fn(*a)), ref_maml_meta_gradient, cases,
            name=getattr(fn, "__name__", "maml_meta_gradient"), rtol=1e-6, atol=1e-9)


def _as_float(out):
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], torch.Tensor):
        return float(out[0].detach()), out[1]
    return out


def ref_incumbent_regret(vals, tests, costs, budgets, best_test):
    """Test regret of the validation-chosen incumbent at budgets in trainings, :func:`metahpo_lib.meta.incumbent_regret`.

    >>> from metahpo_lib.checks import ch07
    >>> ch07.ref_incumbent_regret([2.0, 1.0], [0.3, 0.4], [1.5, 1.5], [1, 2, 3], 0.3).tolist()
    [nan, 0.0, 0.10000000000000003]
    """
    return meta.incumbent_regret(vals, tests, costs, budgets, best_test)


def incumbent_regret(fn) -> None:
    """Check ``fn(vals, tests, costs, budgets, best_test) -> array (len(budgets),)`` (NaN where nothing fits).

    >>> from metahpo_lib.checks import ch07
    >>> ch07.incumbent_regret(ch07.ref_incumbent_regret)
    ✔ ref_incumbent_regret matches the reference on 3 seeded case(s).
    """
    cases = []
    for seed, (n, cost) in enumerate([(10, 1.0), (30, 1.6), (8, 0.63)]):
        rng = np.random.default_rng(seed)
        vals = rng.random(n)
        tests = vals + 0.3 * rng.random(n)  # validation and test disagree a little
        costs = [1.0] + [cost] * (n - 1)
        cases.append((f"{n} evaluations of cost {cost} (seed {seed}), budgets 1, 5, 10, 25, 50",
                      (vals.tolist(), tests.tolist(), costs, [1, 5, 10, 25, 50], float(tests.min())), {}))
    compare(lambda *a: torch.as_tensor(np.asarray(fn(*a), dtype=float)),
            lambda *a: torch.as_tensor(ref_incumbent_regret(*a)), cases,
            name=getattr(fn, "__name__", "incumbent_regret"))


def ref_greedy_portfolio(regrets, size):
    """The greedy zero-shot portfolio, :func:`metahpo_lib.hpo.greedy_portfolio`.

    >>> import numpy as np
    >>> from metahpo_lib.checks import ch07
    >>> ch07.ref_greedy_portfolio(np.array([[0.0, 1.0], [1.0, 0.0]]), 2)
    [0, 1]
    """
    return hpo.greedy_portfolio(regrets, size)


def greedy_portfolio(fn) -> None:
    """Check ``fn(regrets (tasks, configs) array, size) -> list of column indices``.

    >>> from metahpo_lib.checks import ch07
    >>> ch07.greedy_portfolio(ch07.ref_greedy_portfolio)
    ✔ ref_greedy_portfolio matches the reference on 3 seeded case(s).
    """
    cases = []
    for seed, (t, c, k) in enumerate([(3, 20, 3), (5, 50, 4), (7, 200, 6)]):
        rng = np.random.default_rng(seed)
        R = rng.random((t, c)) ** 3  # a few good configurations per task
        cases.append((f"random regrets of shape ({t}, {c}), size {k}", (R, k), {}))
    compare(lambda R, k: [int(i) for i in fn(R, k)], ref_greedy_portfolio, cases,
            name=getattr(fn, "__name__", "greedy_portfolio"))
