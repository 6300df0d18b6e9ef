"""Search spaces, the trial history, grid search and random search (notebook 01).

An objective is any ``f(config: dict) -> float`` to minimise; a search space is a dict
``name -> Float | Int | Categorical``. Every search returns a :class:`History` with every
trial and the best-so-far curve, so that methods compare at equal budgets.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .. import _validate as V

__all__ = ["Float", "Int", "Categorical", "History", "check_space", "grid_configs", "grid_search",
           "random_search", "int_seed", "check_objective", "SearchProblem"]


def int_seed(seed, name: str = "seed") -> int:
    """An int for consumers that take one (Python's ``random``, NumPy, Optuna) from ``seed``.

    ``seed`` is an ``int`` (returned as it is) or a ``torch.Generator`` (one int is drawn from
    it, so consecutive calls differ), as everywhere in the library (``_validate.generator``).

    >>> import torch
    >>> from metahpo_lib.hpo import int_seed
    >>> int_seed(7)
    7
    >>> g = torch.Generator().manual_seed(0)
    >>> int_seed(g) != int_seed(g)
    True
    """
    gen = V.generator(seed, name)
    if gen is not seed:
        return int(seed)
    return int(torch.randint(2**31 - 1, (1,), generator=gen))


def _integral(x, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, float)) and not hasattr(x, "__index__"):
        raise TypeError(f"{what} must be an integer, got {type(x).__name__}")
    if not math.isfinite(float(x)) or not float(x).is_integer():
        raise ValueError(f"{what} must be an integer (the grid and the samples are integers inside "
                         f"[low, high]), got {x!r}")
    return int(x)


@dataclass(frozen=True)
class Float:
    """A real hyperparameter in ``[low, high]``; ``log=True`` samples and grids on a log scale.

    >>> from metahpo_lib.hpo import Float
    >>> Float(0.0, 1.0).grid(3)
    [0.0, 0.5, 1.0]
    >>> [round(v, 6) for v in Float(1e-2, 1e2, log=True).grid(3)]
    [0.01, 1.0, 100.0]
    """

    low: float
    high: float
    log: bool = False

    def __post_init__(self):
        kind = type(self).__name__
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"{kind}: need finite low < high, got low={self.low!r}, high={self.high!r}")
        if self.log and self.low <= 0:
            raise ValueError(f"{kind}: log scale needs low > 0, got low={self.low!r}")

    def _to(self, u: float) -> float:
        """Map u in [0, 1] to the range (log-uniformly when ``log``)."""
        if self.log:
            return math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return self.low + u * (self.high - self.low)

    def grid(self, k: int) -> list:
        """``k`` evenly spaced values from ``low`` to ``high`` (the midpoint when ``k = 1``)."""
        return [self._to(0.5)] if k == 1 else [self._to(i / (k - 1)) for i in range(k)]

    def sample(self, rng: random.Random):
        """One value drawn uniformly (log-uniformly when ``log``) with ``rng``."""
        return self._to(rng.random())


@dataclass(frozen=True)
class Int(Float):
    """An integer hyperparameter in ``[low, high]`` (inclusive); ``low`` and ``high`` must be
    integers, so that every grid point and sample lies inside the bounds.

    >>> from metahpo_lib.hpo import Int
    >>> Int(1, 9).grid(3)
    [1, 5, 9]
    >>> Int(0.5, 3.5)
    Traceback (most recent call last):
    ...
    ValueError: Int low must be an integer (the grid and the samples are integers inside [low, high]), got 0.5
    """

    def __post_init__(self):
        object.__setattr__(self, "low", _integral(self.low, "Int low"))
        object.__setattr__(self, "high", _integral(self.high, "Int high"))
        super().__post_init__()

    def grid(self, k: int) -> list:
        """Up to ``k`` distinct integers from ``low`` to ``high``, evenly spaced, both ends included."""
        return sorted({int(round(v)) for v in super().grid(min(k, self.high - self.low + 1))})

    def sample(self, rng: random.Random):
        """One integer drawn uniformly (log-uniformly over ``[low, high + 1)``, floored, when ``log``)."""
        if self.log:
            return min(self.high, int(math.exp(math.log(self.low) + rng.random()
                                               * (math.log(self.high + 1) - math.log(self.low)))))
        return rng.randint(self.low, self.high)


@dataclass(frozen=True)
class Categorical:
    """One of a fixed, non-empty list of choices.

    >>> from metahpo_lib.hpo import Categorical
    >>> Categorical(["relu", "tanh"]).grid(5)
    ['relu', 'tanh']
    """

    choices: tuple

    def __init__(self, choices):
        object.__setattr__(self, "choices", tuple(choices))
        if len(self.choices) == 0:
            raise ValueError("Categorical needs at least one choice, got choices=()")

    def grid(self, k: int) -> list:
        """Every choice (a categorical dimension is never subsampled)."""
        return list(self.choices)

    def sample(self, rng: random.Random):
        """One choice drawn uniformly with ``rng``."""
        return self.choices[rng.randrange(len(self.choices))]


@dataclass
class History:
    """Every trial of a search, in order: ``configs[i]`` scored ``values[i]`` (the only
    ``History`` of the library).

    >>> from metahpo_lib.hpo import History
    >>> h = History()
    >>> for x in [3.0, 1.0, 2.0]:
    ...     h.add({"x": x}, x)
    >>> h.best_so_far, h.best_config, len(h)
    ([3.0, 1.0, 1.0], {'x': 1.0}, 3)
    """

    configs: list[dict] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, config: dict, value: float) -> None:
        """Record one trial."""
        self.configs.append(dict(config))
        self.values.append(float(value))

    def extend(self, other: History) -> History:
        """Append the trials of ``other`` (in place) and return ``self``."""
        for c, v in zip(other.configs, other.values):
            self.add(c, v)
        return self

    @property
    def best_so_far(self) -> list[float]:
        """``best_so_far[i]`` = min of ``values[: i + 1]`` (NaN trials are ignored)."""
        out, best = [], math.inf
        for v in self.values:
            best = min(best, v) if not math.isnan(v) else best
            out.append(best)
        return out

    @property
    def best_index(self) -> int:
        """Index of the best finite trial (the first one on ties)."""
        finite = [(v, i) for i, v in enumerate(self.values) if not math.isnan(v)]
        if not finite:
            raise ValueError("no finite trial in this history")
        return min(finite)[1]

    @property
    def best_config(self) -> dict:
        """The configuration of the best trial."""
        return self.configs[self.best_index]

    @property
    def best_value(self) -> float:
        """The value of the best trial."""
        return self.values[self.best_index]

    def __len__(self) -> int:
        return len(self.values)


def check_space(space) -> dict:
    """Raise a clear error unless ``space`` is a non-empty dict of dimensions; return it as a dict.

    >>> from metahpo_lib.hpo import Float, check_space
    >>> check_space({"lr": Float(0.0, 1.0)})
    {'lr': Float(low=0.0, high=1.0, log=False)}
    """
    if not isinstance(space, Mapping) or len(space) == 0:
        raise ValueError(f"space must be a non-empty dict name -> Float | Int | Categorical, got {space!r}")
    for name, dim in space.items():
        if not isinstance(dim, (Float, Categorical)):
            raise TypeError(f"space[{name!r}] must be Float, Int or Categorical, got {type(dim).__name__}")
    return dict(space)


def check_objective(objective) -> Callable:
    """Raise a clear error unless ``objective`` is callable (``config -> float``); return it.

    >>> from metahpo_lib.hpo import check_objective
    >>> check_objective(None)
    Traceback (most recent call last):
    ...
    TypeError: objective must be callable config -> float, got NoneType
    """
    if not callable(objective):
        raise TypeError(f"objective must be callable config -> float, got {type(objective).__name__}")
    return objective


@dataclass(frozen=True)
class SearchProblem:
    """What an HPO method sees of a task: an ``objective(config) -> float`` to minimise over
    ``space``, and optionally its ``gradient(config) -> {name: derivative}``.

    >>> from metahpo_lib.hpo import Float, SearchProblem
    >>> p = SearchProblem(lambda c: c["x"] ** 2, {"x": Float(-1.0, 1.0)})
    >>> p.objective({"x": 0.5})
    0.25
    """

    objective: Callable[[dict], float]
    space: dict
    gradient: Callable[[dict], dict] | None = None

    def __post_init__(self):
        check_objective(self.objective)
        object.__setattr__(self, "space", check_space(self.space))
        if self.gradient is not None and not callable(self.gradient):
            raise TypeError(f"gradient must be callable config -> dict or None, got {type(self.gradient).__name__}")


def _evaluate(objective: Callable, configs, progress: bool, desc: str) -> History:
    hist = History()
    for cfg in tqdm(configs, desc=desc, disable=not progress, leave=False):
        hist.add(cfg, objective(cfg))
    return hist


def grid_configs(space, budget: int) -> list[dict]:
    """The largest full grid with at most ``budget`` points: ``k`` points per numeric dimension
    (``k`` the same for all), every choice of each categorical one; row-major order.

    >>> from metahpo_lib.hpo import Float, Int, grid_configs
    >>> grid_configs({"a": Float(0.0, 1.0), "n": Int(1, 3)}, 5)
    [{'a': 0.0, 'n': 1}, {'a': 0.0, 'n': 3}, {'a': 1.0, 'n': 1}, {'a': 1.0, 'n': 3}]
    """
    space = check_space(space)
    V.positive_int(budget, "budget")
    n_cat = math.prod(len(d.choices) for d in space.values() if isinstance(d, Categorical))
    n_num = sum(not isinstance(d, Categorical) for d in space.values())
    if n_cat > budget:
        raise ValueError(f"budget={budget} is smaller than the {n_cat} combinations of categorical choices")
    k = max(1, int(math.floor((budget / n_cat) ** (1 / n_num) + 1e-9))) if n_num else 1
    axes = [dim.grid(k) for dim in space.values()]
    return [dict(zip(space, combo)) for combo in itertools.product(*axes)]


def grid_search(objective: Callable, space, budget: int, *, progress: bool = False) -> History:
    """Evaluate ``objective`` on :func:`grid_configs` ``(space, budget)``, the largest full grid
    of at most ``budget`` points (notebook 01).

    >>> from metahpo_lib.hpo import Float, grid_search
    >>> grid_search(lambda c: (c["x"] - 0.3) ** 2, {"x": Float(0.0, 1.0)}, 11).best_config
    {'x': 0.3}
    """
    check_objective(objective)
    return _evaluate(objective, grid_configs(space, budget), progress, "grid search")


def random_search(objective: Callable, space, budget: int, *, seed=0, progress: bool = False) -> History:
    """Evaluate ``objective`` on ``budget`` configurations drawn independently from ``space``
    (log-uniform for ``log=True`` dimensions) with ``random.Random(int_seed(seed))`` (notebook 01).

    ``seed``: an int or a ``torch.Generator`` (see :func:`int_seed`).

    >>> from metahpo_lib.hpo import Float, random_search
    >>> h = random_search(lambda c: c["x"] ** 2, {"x": Float(-1.0, 1.0)}, 20, seed=0)
    >>> len(h), round(h.best_value, 4)
    (20, 0.0001)
    """
    check_objective(objective)
    space = check_space(space)
    V.positive_int(budget, "budget")
    rng = random.Random(int_seed(seed))
    configs = [{name: dim.sample(rng) for name, dim in space.items()} for _ in range(budget)]
    return _evaluate(objective, configs, progress, "random search")
