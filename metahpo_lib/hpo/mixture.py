r"""Transfer across tables: a ranking-weighted mixture of the other data sets' tables (notebook 07).

The zero-shot portfolio (:func:`~metahpo_lib.hpo.greedy_portfolio`) fixes its order before
the first evaluation. :func:`mixture_search` keeps learning from the held-out data set's own
evaluations :math:`D = \{(c_i, y_i)\}_{i \le n}`, in the spirit of RGPE (Feurer et al. 2018):

- **sources**: the normalised regret tables :math:`R_1, \dots, R_T` of the other data sets,
  plus one table of the target itself, :math:`R_{T+1}(c)`, the quantile of a Gaussian
  process's posterior mean :math:`\mu_n(c)` fitted to :math:`D` (:func:`gp_table`);
- **weights** (:func:`ranking_weights`): how well each table orders the observed pairs, read
  as a likelihood in which a pair's order flips with probability :math:`\varepsilon`,

  .. math:: w_t \propto (1 - \varepsilon)^{A_t}\, \varepsilon^{F_t},

  with :math:`A_t` (:math:`F_t`) the number of pairs :math:`i < j` that :math:`R_t` orders
  like (unlike) :math:`y`; the target's table is judged by its leave-one-out predictions;
- **next configuration**: the unevaluated :math:`c` minimising the expected regret under the
  mixture,

  .. math:: a(c) = \sum_t w_t \big[\lambda \min(b_t, R_t(c)) + (1 - \lambda) R_t(c)\big],
            \qquad b_t = \min_{i \le n} R_t(c_i).

  :math:`\min(b_t, R_t(c))` is the greedy portfolio's criterion (what ``c`` adds to the best
  configuration so far if the target were like data set :math:`t`); :math:`R_t(c)` rewards
  configurations that are good on their own (robust when the observations are noisy).

- **re-measuring** (intensification, as in SMAC; :func:`to_confirm`): the observations are
  noisy (one stored training run per look-up) and the incumbent is the configuration with
  the best *mean* observation, so after many evaluations it is likely a lucky draw of a worse
  configuration (the winner's curse: on HPOBench the best configuration *evaluated* has a
  regret of about 0.002, the one with the best single observation about 0.035). From
  ``confirm_after`` evaluations on, an incumbent with fewer than ``repeats`` observations is
  measured again (another stored run; one evaluation of the budget) before anything new.

With equal weights and :math:`\lambda = 1` the first steps are the greedy portfolio's; as
evaluations come in, the weights move to the tables that order them well, the target's own
table among them. ``flip`` (:math:`\varepsilon`), ``coverage`` (:math:`\lambda`), the GP's
settings, ``repeats`` and ``confirm_after`` are fixed in advance (pilot runs on seeds
100-119), never fitted on the held-out data set.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .. import _validate as V
from .search import History
from .tables import mean_incumbents

__all__ = ["ranking_weights", "gp_table", "to_confirm", "mixture_search"]

#: default observations of the incumbent before it counts as confirmed (chosen on dev seeds)
REPEATS = 3
#: default evaluations before re-measuring starts
CONFIRM_AFTER = 10


def ranking_weights(scores, y, flip: float = 0.3) -> np.ndarray:
    r"""Posterior weight of each table given observed losses: :math:`w_t \propto
    (1-\varepsilon)^{A_t} \varepsilon^{F_t}` (module docstring), ``flip`` :math:`= \varepsilon`.

    ``scores``: shape ``(tables, n)``, each table's score of the ``n`` observed configurations
    (lower = better); ``y``: shape ``(n,)``, their observed losses. Ties count as neither
    agreement nor flip; with fewer than two observations every table weighs the same.

    >>> import numpy as np
    >>> from metahpo_lib.hpo import ranking_weights
    >>> w = ranking_weights(np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]]), np.array([1.0, 2.0, 3.0]))
    >>> np.round(w, 3)
    array([0.927, 0.073])
    """
    scores, y = np.asarray(scores, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if y.size < 2:
        return np.full(scores.shape[0], 1.0 / scores.shape[0])
    i, j = np.triu_indices(y.size, 1)
    order = np.sign(y[i] - y[j]) * np.sign(scores[:, i] - scores[:, j])  # tables x pairs
    loglik = (order > 0).sum(1) * np.log1p(-flip) + (order < 0).sum(1) * np.log(flip)
    w = np.exp(loglik - loglik.max())
    return w / w.sum()


def _rbf(A, B, lengthscale: float) -> np.ndarray:
    d2 = ((A[:, None, :] - B[None]) ** 2).sum(-1)
    return np.exp(-d2 / (2.0 * lengthscale ** 2))


def gp_table(features, observed, y, *, lengthscale: float = 0.5, noise: float = 0.1, cross=None):
    r"""The target's own table: a Gaussian process on its evaluations, as a quantile table.

    Zero prior mean, kernel :math:`k(x, x') = \exp(-\lVert x - x'\rVert^2 / 2\ell^2)` on the
    ``features`` of the configurations (shape ``(N, d)``), standardised losses :math:`\tilde y`,
    noise variance ``noise``: :math:`\mu(c) = k(c, X)(K + \sigma^2 I)^{-1}\tilde y`. Returns
    ``(table, loo)``: ``table[c]`` the fraction of configurations with a lower :math:`\mu`
    (the rank of :math:`\mu(c)`, ties in row order, over :math:`N - 1`)
    shape ``(N,)``; ``loo[i]`` the leave-one-out prediction at the ``i``-th evaluation,
    :math:`\tilde y_i - [K^{-1}\tilde y]_i / [K^{-1}]_{ii}`. ``cross``: :math:`k(\cdot, X)`
    of shape ``(N, n)`` when already computed.

    >>> import numpy as np
    >>> from metahpo_lib.hpo import gp_table
    >>> X = np.linspace(0, 1, 5)[:, None]
    >>> table, loo = gp_table(X, [0, 4], np.array([1.0, 0.0]))
    >>> table.tolist(), np.round(loo, 3).tolist()
    ([1.0, 0.75, 0.5, 0.25, 0.0], [-0.123, 0.123])
    """
    X = np.asarray(features, dtype=np.float64)
    obs = np.asarray(observed, dtype=np.int64)
    y = np.asarray(y, dtype=np.float64)
    y = (y - y.mean()) / (y.std() + 1e-12)
    cross = _rbf(X, X[obs], lengthscale) if cross is None else cross
    Kinv = np.linalg.inv(cross[obs] + noise * np.eye(len(obs)))
    alpha = Kinv @ y
    mu = cross @ alpha
    table = np.empty(len(mu))
    table[np.argsort(mu, kind="stable")] = np.arange(len(mu)) / max(len(mu) - 1, 1)
    return table, y - alpha / np.diag(Kinv)


def _acquisition(R, w, b, coverage: float) -> np.ndarray:
    return w @ (coverage * np.minimum(b[:, None], R) + (1.0 - coverage) * R)


def _check(problem, budget, flip, coverage, gp_after, repeats, confirm_after):
    V.positive_int(budget, "budget")
    V.unit_interval(flip, "flip", closed_low=False)
    if not 0.0 <= coverage <= 1.0:
        raise ValueError(f"coverage must be in [0, 1], got {coverage!r}")
    V.positive_int(gp_after, "gp_after", minimum=2)
    V.positive_int(repeats, "repeats")
    V.positive_int(confirm_after, "confirm_after")
    sources = getattr(problem, "sources", None)
    if sources is None or getattr(problem, "features", None) is None:
        raise ValueError("problem must carry sources and features (a TableBenchmark.problem(seed, sources=...)), "
                         f"got {type(problem).__name__} without them")
    sources = np.asarray(sources, dtype=np.float64)
    n = len(problem.features)
    if sources.ndim != 2 or sources.shape[0] < 1 or sources.shape[1] != n:
        raise ValueError(f"problem.sources must hold at least one source table, shape (tables >= 1, {n}), "
                         f"got shape {sources.shape}")
    return sources


def to_confirm(rows, y, repeats: int):
    r"""The configuration to re-measure (intensification, as in SMAC), or None.

    The incumbent is the evaluated configuration with the best mean observation
    (:func:`~metahpo_lib.hpo.mean_incumbents`, the rule of
    :meth:`TableBenchmark.incumbent_regret <metahpo_lib.hpo.TableBenchmark.incumbent_regret>`).
    Under noise its mean is biased low -- the best of many noisy draws is likely a lucky one (the
    winner's curse) -- so it is measured again until it has ``repeats`` observations;
    a lucky first draw then averages out and the next best takes its place.
    ``rows``: the evaluated configurations (row numbers, repeats allowed); ``y`` their losses.

    >>> from metahpo_lib.hpo import to_confirm
    >>> to_confirm([4, 7, 4], [0.3, 0.2, 0.35], repeats=2)
    7
    >>> to_confirm([4, 7, 4, 7], [0.3, 0.2, 0.35, 0.5], repeats=2) is None
    True
    """
    incumbents = mean_incumbents(rows, y)
    if not incumbents:
        return None
    inc, n = incumbents[-1]
    return int(inc) if n < repeats else None


def mixture_search(problem, budget: int, *, warm_start=(), flip: float = 0.3, coverage: float = 0.5,
                   gp_after: int = 5, lengthscale: float = 0.5, noise: float = 0.1, repeats: int = REPEATS,
                   confirm_after: int = CONFIRM_AFTER, progress: bool = False) -> History:
    r"""Search a table with the ranking-weighted mixture of source tables (module docstring).

    ``problem``: a :class:`~metahpo_lib.hpo.TableProblem` with ``sources`` (the other data
    sets' normalised regret tables, shape ``(tables, N)``) and ``features``; ``warm_start``:
    configurations evaluated first; from ``gp_after`` evaluations on, the target's own
    :func:`gp_table` joins the mixture. From ``confirm_after`` evaluations on, an incumbent
    with fewer than ``repeats`` observations is measured again first (:func:`to_confirm`; each
    repeat costs one evaluation; ``repeats=1``: never). Deterministic given the observations
    (ties go to the lowest row). Registered as method ``"mixture"``
    (:func:`~metahpo_lib.hpo.run_method`).

    >>> from metahpo_lib.hpo import TableBenchmark, mixture_search
    >>> tables = [TableBenchmark("nasbench201", d) for d in ("cifar100", "imagenet")]
    >>> target = TableBenchmark("nasbench201", "cifar10")
    >>> p = target.problem(seed=0, sources=[t.regret_table() for t in tables])
    >>> h = mixture_search(p, 8)
    >>> round(float(target.incumbent_regret(h.configs, h.values)[-1]), 4)
    0.0001
    """
    R = _check(problem, budget, flip, coverage, gp_after, repeats, confirm_after)
    X = np.asarray(problem.features, dtype=np.float64)
    hist, rows, cross = History(), [], np.empty((R.shape[1], budget))
    evaluated = np.zeros(R.shape[1], dtype=bool)
    for k in tqdm(range(budget), disable=not progress, desc="mixture", leave=False):
        y = np.asarray(hist.values)
        c = to_confirm(rows, y, repeats) if k >= max(confirm_after, len(warm_start)) else None
        if k < len(warm_start):
            c = problem.index(warm_start[k])
        elif c is None:
            c = _next(R, X, rows, y, cross[:, :k], evaluated, k >= gp_after,
                      dict(flip=flip, coverage=coverage, lengthscale=lengthscale, noise=noise))
        cfg = problem.config(c)
        hist.add(cfg, problem.objective(cfg))
        cross[:, k] = _rbf(X, X[c:c + 1], lengthscale)[:, 0]
        rows.append(c)
        evaluated[c] = True
    return hist


def _next(R, X, rows, y, cross, evaluated, use_gp: bool, kw) -> int:
    """The unevaluated configuration minimising the mixture's acquisition."""
    tables, scores = R, R[:, rows]
    if use_gp:
        table, loo = gp_table(X, rows, y, lengthscale=kw["lengthscale"], noise=kw["noise"], cross=cross)
        tables, scores = np.vstack([R, table]), np.vstack([scores, loo])
    w = ranking_weights(scores, y, kw["flip"])
    b = tables[:, rows].min(1) if rows else np.ones(len(tables))
    a = _acquisition(tables, w, b, kw["coverage"])
    a[evaluated] = np.inf
    return int(np.argmin(a))
