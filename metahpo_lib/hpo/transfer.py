r"""HPO across data sets: zero-shot portfolios, the leave-one-data-set-out protocol, ranks (notebook 07).

- :func:`greedy_portfolio`: the zero-shot portfolio of Wistuba et al. / Feurer et al.:
  given the normalised regret ``R[t, c]`` of every configuration on the training data sets,
  add one configuration at a time, each time the one minimising
  :math:`\frac1T \sum_t \min_{c \in P} R[t, c]`.
- :func:`leave_one_dataset_out`: the HPO-B protocol (Pineda-Arango et al. 2021): for each
  data set, transfer methods (the portfolio, ``"mixture"``) see the tables of the *other*
  data sets only; every method runs through the registry (:func:`~metahpo_lib.hpo.run_method`).
- :func:`average_ranks`: ranks of methods at budgets (confidence intervals:
  :func:`metahpo_lib.stats.mean_ci`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from .. import _validate as V
from .methods import parse_method, run_method
from .tables import TableBenchmark, dataset_names

__all__ = ["LODO_METHODS", "greedy_portfolio", "average_ranks", "leave_one_dataset_out"]

#: the methods :func:`leave_one_dataset_out` runs by default (``"portfolio"`` is the zero-shot start,
#: ``"mixture"`` :func:`~metahpo_lib.hpo.mixture_search`)
LODO_METHODS = ("random", "tpe", "gp", "portfolio", "portfolio+tpe", "mixture")


def greedy_portfolio(regrets, size: int) -> list[int]:
    """Greedy zero-shot portfolio: ``size`` column indices of ``regrets`` (shape
    ``(tasks, configs)``, e.g. normalised regret on each training data set), each added to
    minimise the mean over tasks of the best regret in the portfolio so far. When no
    configuration lowers it any more, the rest follow in order of mean regret.

    >>> import numpy as np
    >>> from metahpo_lib.hpo import greedy_portfolio
    >>> greedy_portfolio(np.array([[0.0, 1.0, 0.5, 0.2], [1.0, 0.0, 0.5, 0.3]]), 4)
    [3, 1, 0, 2]
    """
    R = np.asarray(regrets, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] < 1 or R.shape[1] < 1:
        raise ValueError(f"regrets must have shape (tasks, configs) with both >= 1, got {R.shape}")
    if not np.isfinite(R).all():
        raise ValueError("regrets contains NaN or infinite values")
    V.positive_int(size, "size")
    if size > R.shape[1]:
        raise ValueError(f"size must be <= the number of configurations {R.shape[1]}, got {size}")
    chosen: list[int] = []
    best = np.full(R.shape[0], np.inf)
    by_mean = np.argsort(R.mean(0), kind="stable")
    while len(chosen) < size:
        score = np.minimum(best[:, None], R).mean(0)
        score[chosen] = np.inf
        j = int(np.argmin(score))
        if chosen and score[j] >= best.mean() - 1e-12:  # no gain left
            j = next(int(c) for c in by_mean if int(c) not in chosen)
        chosen.append(j)
        best = np.minimum(best, R[:, j])
    return chosen


def average_ranks(curves: dict, at: Sequence[int] = (5, 10, 25, 50)) -> dict:
    """Average rank of each method at each budget in ``at``.

    ``curves[method]`` has shape ``(..., budget)`` (the same leading shape for every
    method: runs, or data sets x seeds); methods are ranked per run (1 = lowest regret,
    ties share the mean rank) and the ranks averaged. Returns ``{method: [rank at b]}``.

    >>> import numpy as np
    >>> from metahpo_lib.hpo import average_ranks
    >>> average_ranks({"a": np.array([[3.0], [1.0]]), "b": np.array([[1.0], [1.0]])}, at=(1,))
    {'a': [1.75], 'b': [1.25]}
    """
    from scipy.stats import rankdata

    if not isinstance(curves, dict) or not curves:
        raise ValueError("curves must be a non-empty dict method -> array (..., budget)")
    names = list(curves)
    arrs = [np.asarray(curves[k], dtype=np.float64) for k in names]
    if len({a.shape for a in arrs}) != 1:
        raise ValueError(f"every curve array must have the same shape, got {[a.shape for a in arrs]}")
    for b in at:
        V.positive_int(b, "at")
        if b > arrs[0].shape[-1]:
            raise ValueError(f"at={b} exceeds the curve length {arrs[0].shape[-1]}")
    out = {k: [] for k in names}
    for b in at:
        stacked = np.stack([a[..., b - 1].ravel() for a in arrs])  # methods x runs
        for k, v in zip(names, rankdata(stacked, axis=0).mean(1)):
            out[k].append(float(v))
    return out


def _check_lodo(names, methods, budget, warm_start_size, seeds) -> list[int]:
    if len(names) < 2:
        raise ValueError(f"datasets must hold at least 2 data sets (one held out, one to learn from): "
                         f"leave-one-data-set-out is impossible with {names}")
    for m in methods:
        parse_method(m, ["portfolio"], arg="methods")
    V.positive_int(budget, "budget")
    V.positive_int(warm_start_size, "warm_start_size")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must be non-empty")
    return seeds


def leave_one_dataset_out(benchmark: str = "hpobench", datasets: Sequence[str] | None = None, *,
                          methods: Sequence[str] = LODO_METHODS, budget: int = 50, seeds: Sequence[int] = range(10),
                          metric: str | None = None, warm_start_size: int = 5, normalization: str = "quantile",
                          held_out: Sequence[str] | None = None, progress: bool = False) -> dict:
    """Run every method on every data set with every seed, the HPO-B way.

    The zero-shot portfolio for data set ``D`` is :func:`greedy_portfolio` on the normalised
    regret tables (``normalization``, :class:`~metahpo_lib.hpo.TableBenchmark`) of the other
    data sets (also the ``sources`` of ``D``'s problem, which ``"mixture"`` reads); it is the
    start ``"portfolio"`` of :func:`~metahpo_lib.hpo.run_method`: ``"portfolio"`` evaluates its
    first ``budget`` members in order, ``"portfolio+tpe"`` enqueues the first
    ``warm_start_size`` of them and continues with TPE; any registered method works
    (``"random"``, ``"gp"``, ``"portfolio+gp"``, ...). Each run observes noisy losses (one
    stored training run per call, drawn with the run's seed, the same for every method) and is
    scored by the normalised regret of the *mean* loss of its incumbent.

    ``held_out``: the data sets to hold out in turn (default: every one of ``datasets``; the
    others still serve as sources), to split a long run over processes.

    Returns ``{"curves": {method: array (held-out data sets, seeds, budget)}, "datasets": [...],
    "seeds": [...], "portfolios": {dataset: [config, ...]}, ...}``.

    >>> from metahpo_lib.hpo import leave_one_dataset_out
    >>> r = leave_one_dataset_out("nasbench201", ["cifar10", "cifar100"], methods=["random", "portfolio"],
    ...                           budget=3, seeds=[0])
    >>> r["curves"]["portfolio"].shape
    (2, 1, 3)
    """
    names = list(dataset_names(benchmark) if datasets is None else datasets)
    methods = list(methods)
    seeds = _check_lodo(names, methods, budget, warm_start_size, seeds)
    held = names if held_out is None else list(held_out)
    if not held or not set(held) <= set(names):
        raise ValueError(f"held_out must be a non-empty subset of the data sets {names}, got {held_out!r}")
    benches = {d: TableBenchmark(benchmark, d, metric, normalization=normalization) for d in names}
    regret = {d: b.regret_table() for d, b in benches.items()}
    curves = {m: np.zeros((len(held), len(seeds), budget)) for m in methods}
    portfolios = {}
    bar = tqdm(total=len(held) * len(seeds) * len(methods), disable=not progress, desc="LODO")
    for i, d in enumerate(held):
        bench = benches[d]
        others = np.stack([regret[o] for o in names if o != d])
        portfolios[d] = [bench.config(j) for j in greedy_portfolio(others, budget)]
        for s_i, seed in enumerate(seeds):
            for m in methods:
                hist = run_method(m, bench.problem(seed=seed, sources=others), budget, seed=seed,
                                  starts={"portfolio": portfolios[d]}, warm_start_size=warm_start_size)
                reg = bench.incumbent_regret(hist.configs, hist.values)
                curves[m][i, s_i] = np.concatenate([reg, np.full(budget - len(reg), reg[-1])])  # stopped early
                bar.update()
    bar.close()
    return {"curves": curves, "datasets": held, "seeds": seeds, "portfolios": portfolios,
            "benchmark": benchmark, "budget": budget, "warm_start_size": warm_start_size,
            "normalization": normalization}
