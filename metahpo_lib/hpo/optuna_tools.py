r"""Optuna samplers, zero-shot portfolios and the leave-one-data-set-out protocol (notebook 06).

- :func:`optuna_search`: random / TPE / GP sampler on a ``space`` with a fixed budget, an
  optional warm start (configurations enqueued with ``study.enqueue_trial``) and an optional
  storage (see :mod:`metahpo_lib.hpo.workers`); returns a :class:`~metahpo_lib.hpo.History`.
- :func:`greedy_portfolio`: the zero-shot portfolio of Wistuba et al. / Feurer et al.:
  given the normalised regret ``R[t, c]`` of every configuration on the training data sets,
  add one configuration at a time, each time the one minimising
  :math:`\frac1T \sum_t \min_{c \in P} R[t, c]`.
- :func:`leave_one_dataset_out`: the HPO-B protocol (Pineda-Arango et al. 2021): for each
  data set, portfolio methods see the tables of the *other* data sets only.
- :func:`mean_ci`, :func:`average_ranks`: 95% confidence intervals and ranks at budgets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .. import _validate as V
from .search import Categorical, Float, History, Int, check_space

SAMPLERS = ("random", "tpe", "gp")
#: the methods :func:`leave_one_dataset_out` knows
METHODS = ("random", "tpe", "gp", "portfolio", "portfolio+tpe")


def _optuna():
    try:
        import optuna
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("this needs optuna: pip install optuna (or pip install -e '.[course]')") from e
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def make_sampler(name: str, seed: int = 0, *, parallel: bool = False):
    """An Optuna sampler by name: ``"random"``, ``"tpe"`` (multivariate TPE; with
    ``parallel``, the constant liar for several workers) or ``"gp"`` (Optuna's GPSampler)."""
    V.choice(name, "sampler", set(SAMPLERS))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    optuna = _optuna()
    if name == "random":
        return optuna.samplers.RandomSampler(seed=int(seed))
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=int(seed), multivariate=True, constant_liar=parallel)
    return optuna.samplers.GPSampler(seed=int(seed))


def suggest(trial, space: dict) -> dict:
    """Ask an Optuna ``trial`` for one configuration of ``space`` (Float, Int, Categorical)."""
    out = {}
    for name, dim in space.items():
        if isinstance(dim, Categorical):
            out[name] = trial.suggest_categorical(name, list(dim.choices))
        elif isinstance(dim, Int):
            out[name] = trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
        elif isinstance(dim, Float):
            out[name] = trial.suggest_float(name, float(dim.low), float(dim.high), log=dim.log)
    return out


def optuna_search(objective: Callable, space, budget: int, *, sampler: str = "tpe", seed: int = 0,
                  warm_start: Sequence[dict] = (), storage=None, study_name: str | None = None) -> History:
    """Minimise ``objective(config)`` over ``space`` with ``budget`` Optuna trials.

    ``warm_start`` configurations are evaluated first (``study.enqueue_trial``), then the
    sampler takes over, conditioned on them. ``storage`` (a URL or path, see
    :func:`metahpo_lib.hpo.workers.open_storage`) keeps every trial in a database.
    """
    if not callable(objective):
        raise TypeError(f"objective must be callable config -> float, got {type(objective).__name__}")
    space = check_space(space)
    V.positive_int(budget, "budget")
    optuna = _optuna()
    smp = make_sampler(sampler, seed)
    if storage is not None:
        from .workers import open_storage
        storage = open_storage(storage)
    study = optuna.create_study(direction="minimize", sampler=smp, storage=storage, study_name=study_name,
                                load_if_exists=storage is not None)
    for cfg in list(warm_start)[:budget]:
        if not isinstance(cfg, dict) or set(cfg) != set(space):
            raise ValueError(f"warm_start configurations must be dicts with keys {sorted(space)}, got {cfg!r}")
        study.enqueue_trial(dict(cfg), skip_if_exists=False)
    hist = History()

    def f(trial):
        cfg = suggest(trial, space)
        value = float(objective(cfg))
        hist.add(cfg, value)
        return value

    study.optimize(f, n_trials=budget)
    return hist


def greedy_portfolio(regrets, size: int) -> list[int]:
    """Greedy zero-shot portfolio: ``size`` column indices of ``regrets`` (shape
    ``(tasks, configs)``, e.g. normalised regret on each training data set), each added to
    minimise the mean over tasks of the best regret in the portfolio so far. When no
    configuration lowers it any more, the rest follow in order of mean regret."""
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


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t ``level`` confidence interval of a sample (flattened):
    ``(mean, low, high)``; one value has no interval: ``(mean, nan, nan)``."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("values must be non-empty")
    m = float(x.mean())
    if x.size == 1:
        return m, math.nan, math.nan
    from scipy import stats

    h = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return m, m - h, m + h


def average_ranks(curves: dict, at: Sequence[int] = (5, 10, 25, 50)) -> dict:
    """Average rank of each method at each budget in ``at``.

    ``curves[method]`` has shape ``(..., budget)`` (the same leading shape for every
    method: runs, or data sets x seeds); methods are ranked per run (1 = lowest regret,
    ties share the mean rank) and the ranks averaged. Returns ``{method: [rank at b]}``.
    """
    from scipy.stats import rankdata

    if not isinstance(curves, dict) or not curves:
        raise ValueError("curves must be a non-empty dict method -> array (..., budget)")
    names = list(curves)
    arrs = [np.asarray(curves[k], dtype=np.float64) for k in names]
    if len({a.shape for a in arrs}) != 1:
        raise ValueError(f"every curve array must have the same shape, got {[a.shape for a in arrs]}")
    out = {k: [] for k in names}
    for b in at:
        V.positive_int(b, "at")
        if b > arrs[0].shape[-1]:
            raise ValueError(f"at={b} exceeds the curve length {arrs[0].shape[-1]}")
        stacked = np.stack([a[..., b - 1].ravel() for a in arrs])  # methods x runs
        r = rankdata(stacked, axis=0).mean(1)
        for k, v in zip(names, r):
            out[k].append(float(v))
    return out


def leave_one_dataset_out(benchmark: str = "hpobench", datasets: Sequence[str] | None = None, *,
                          methods: Sequence[str] = METHODS, budget: int = 50, seeds: Sequence[int] = range(10),
                          metric: str | None = None, warm_start_size: int = 5, progress: bool = False) -> dict:
    """Run every method on every data set with every seed, the HPO-B way.

    The zero-shot portfolio for data set ``D`` is :func:`greedy_portfolio` on the normalised
    regret tables of the other data sets; ``"portfolio"`` evaluates its first ``budget``
    members in order, ``"portfolio+tpe"`` enqueues the first ``warm_start_size`` of them and
    continues with TPE. Each run observes noisy losses (one stored training run per call,
    drawn with the run's seed, the same for every method) and is scored by the normalised
    regret of the *mean* loss of its incumbent.

    Returns ``{"curves": {method: array (datasets, seeds, budget)}, "datasets": [...],
    "seeds": [...], "portfolios": {dataset: [config, ...]}}``.
    """
    from tqdm.auto import tqdm

    from .tables import TableBenchmark, dataset_names

    names = list(dataset_names(benchmark) if datasets is None else datasets)
    if len(names) < 2:
        raise ValueError(f"datasets must hold at least 2 data sets (one held out, one to learn from), got {names}")
    methods = list(methods)
    for m in methods:
        V.choice(m, "methods", set(METHODS))
    V.positive_int(budget, "budget")
    V.positive_int(warm_start_size, "warm_start_size")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must be non-empty")
    benches = {d: TableBenchmark(benchmark, d, metric) for d in names}
    regret = {d: b.regret_table() for d, b in benches.items()}
    curves = {m: np.zeros((len(names), len(seeds), budget)) for m in methods}
    portfolios = {}
    bar = tqdm(total=len(names) * len(seeds) * len(methods), disable=not progress, desc="LODO")
    for i, d in enumerate(names):
        bench = benches[d]
        others = np.stack([regret[o] for o in names if o != d])
        port = [bench.config(j) for j in greedy_portfolio(others, budget)]
        portfolios[d] = port
        for s_i, seed in enumerate(seeds):
            for m in methods:
                f = bench.objective(seed=seed)
                if m == "portfolio":
                    hist = History()
                    for cfg in port:
                        hist.add(cfg, f(cfg))
                elif m == "portfolio+tpe":
                    hist = optuna_search(f, bench.space, budget, sampler="tpe", seed=seed,
                                         warm_start=port[:warm_start_size])
                else:
                    hist = optuna_search(f, bench.space, budget, sampler=m, seed=seed)
                curves[m][i, s_i] = bench.incumbent_regret(hist.configs, hist.values)
                bar.update()
    bar.close()
    return {"curves": curves, "datasets": names, "seeds": seeds, "portfolios": portfolios,
            "benchmark": benchmark, "budget": budget, "warm_start_size": warm_start_size}
