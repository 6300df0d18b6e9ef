"""Self-checks for the exercises of notebook 07 (meta-learning for HPO): ``ch07.meta_gradient(fn)``,
``ch07.greedy_portfolio(fn)``, ``ch07.ranks_at(fn)``; the references are ``ref_*``."""

from __future__ import annotations

import numpy as np
import torch

from .. import hpo, meta
from . import compare

__all__ = ["meta_gradient", "greedy_portfolio", "ranks_at", "ref_meta_gradient", "ref_greedy_portfolio",
           "ref_ranks_at"]


def _tasks(seed: int, k: int = 3):
    specs = meta.sample_specs(("synthetic",), k, seed=seed, n_range=(60, 120), d_max=8)
    return meta.make_tasks(specs)


def ref_meta_gradient(tasks, hparams):
    """Mean over the task batch of each task's exact hypergradient (two hyperparameters):
    :func:`metahpo_lib.meta.meta_gradient`.

    >>> import torch
    >>> from metahpo_lib.checks import ch07
    >>> h = {"log_alpha": torch.tensor(-2.0, dtype=torch.float64), "scale_power": torch.tensor(1.0, dtype=torch.float64)}
    >>> sorted(ch07.ref_meta_gradient(ch07._tasks(0, k=2), h))
    ['log_alpha', 'scale_power']
    """
    return meta.meta_gradient(tasks, hparams)


def meta_gradient(fn) -> None:
    """Check ``fn(tasks, hparams) -> {"log_alpha": (), "scale_power": ()}`` (batch-mean hypergradient).

    >>> from metahpo_lib.checks import ch07
    >>> ch07.meta_gradient(ch07.ref_meta_gradient)
    ✔ ref_meta_gradient matches the reference on 3 seeded case(s).
    """
    cases = []
    for seed, (a, b) in [(0, (-2.0, 1.0)), (1, (-5.0, 2.0)), (2, (0.5, 0.0))]:
        h = {"log_alpha": torch.tensor(a, dtype=torch.float64), "scale_power": torch.tensor(b, dtype=torch.float64)}
        cases.append((f"3 synthetic tasks (seed {seed}), log_alpha={a}, scale_power={b}", (_tasks(seed), h), {}))
    compare(fn, ref_meta_gradient, cases, name=getattr(fn, "__name__", "meta_gradient"), rtol=1e-6, atol=1e-10)


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


def ref_ranks_at(curves, budget):
    """Average rank of each method at ``budget``, from :func:`metahpo_lib.hpo.average_ranks`.

    >>> import numpy as np
    >>> from metahpo_lib.checks import ch07
    >>> ch07.ref_ranks_at({"a": np.array([[1.0], [2.0]]), "b": np.array([[2.0], [1.0]])}, 1)
    {'a': 1.5, 'b': 1.5}
    """
    return {k: v[0] for k, v in hpo.average_ranks(curves, at=(budget,)).items()}


def ranks_at(fn) -> None:
    """Check ``fn(curves: {method: (runs, budget) array}, budget) -> {method: average rank}``.

    >>> from metahpo_lib.checks import ch07
    >>> ch07.ranks_at(ch07.ref_ranks_at)
    ✔ ref_ranks_at matches the reference on 3 seeded case(s).
    """
    cases = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        curves = {m: np.minimum.accumulate(rng.random((6, 12)), axis=1) for m in ("a", "b", "c")}
        curves["c"][:, 4:] = curves["a"][:, 4:]  # ties share the mean rank
        cases.append((f"3 methods x 6 runs (seed {seed}), budget {5 + seed}", (curves, 5 + seed), {}))
    compare(lambda c, b: {k: float(v) for k, v in fn(c, b).items()}, ref_ranks_at, cases,
            name=getattr(fn, "__name__", "ranks_at"))
