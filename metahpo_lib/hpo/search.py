"""Search spaces, grid search and random search with a fixed budget (notebook 01).

An objective is any ``f(config: dict) -> float`` to minimise; a search space is a dict
``name -> Float | Int | Categorical``. Both searches return a :class:`History` with every
trial and the best-so-far curve, so that methods compare at equal budgets.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .. import _validate as V
from tqdm.auto import tqdm


@dataclass(frozen=True)
class Float:
    """A real hyperparameter in [low, high]; ``log=True`` samples and grids on a log scale."""

    low: float
    high: float
    log: bool = False

    def _check(self, name):
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"search space {name!r}: need finite low < high, got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ValueError(f"search space {name!r}: log scale needs low > 0, got {self.low}")

    def _to(self, u: float) -> float:
        """Map u in [0, 1] to the range (log-uniformly when ``log``)."""
        if self.log:
            return math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return self.low + u * (self.high - self.low)

    def grid(self, k: int) -> list:
        return [self._to(0.5)] if k == 1 else [self._to(i / (k - 1)) for i in range(k)]

    def sample(self, rng: random.Random):
        return self._to(rng.random())


@dataclass(frozen=True)
class Int(Float):
    """An integer hyperparameter in [low, high] (inclusive)."""

    def grid(self, k: int) -> list:
        return sorted({int(round(v)) for v in super().grid(min(k, int(self.high - self.low) + 1))})

    def sample(self, rng: random.Random):
        lo, hi = int(self.low), int(self.high)
        if self.log:  # log-uniform over [lo, hi + 1), floored
            return min(hi, int(math.exp(math.log(lo) + rng.random() * (math.log(hi + 1) - math.log(lo)))))
        return rng.randint(lo, hi)


@dataclass(frozen=True)
class Categorical:
    """One of a fixed list of choices."""

    choices: tuple

    def __init__(self, choices):
        object.__setattr__(self, "choices", tuple(choices))

    def _check(self, name):
        if len(self.choices) == 0:
            raise ValueError(f"search space {name!r}: Categorical needs at least one choice")

    def grid(self, k: int) -> list:
        return list(self.choices)

    def sample(self, rng: random.Random):
        return self.choices[rng.randrange(len(self.choices))]


@dataclass
class History:
    """Every trial of a search, in order: ``configs[i]`` scored ``values[i]``."""

    configs: list[dict] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, config: dict, value: float) -> None:
        self.configs.append(dict(config))
        self.values.append(float(value))

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
        finite = [(v, i) for i, v in enumerate(self.values) if not math.isnan(v)]
        if not finite:
            raise ValueError("no finite trial in this history")
        return min(finite)[1]

    @property
    def best_config(self) -> dict:
        return self.configs[self.best_index]

    @property
    def best_value(self) -> float:
        return self.values[self.best_index]

    def __len__(self) -> int:
        return len(self.values)


def check_space(space) -> dict:
    """Raise a clear error unless ``space`` is a non-empty dict of valid dimensions."""
    if not isinstance(space, Mapping) or len(space) == 0:
        raise ValueError(f"space must be a non-empty dict name -> Float | Int | Categorical, got {space!r}")
    for name, dim in space.items():
        if not isinstance(dim, (Float, Categorical)):
            raise TypeError(f"space[{name!r}] must be Float, Int or Categorical, got {type(dim).__name__}")
        dim._check(name)
    return dict(space)


def _run(objective: Callable, configs, progress: bool, desc: str) -> History:
    if not callable(objective):
        raise TypeError(f"objective must be callable config -> float, got {type(objective).__name__}")
    hist = History()
    for cfg in tqdm(configs, desc=desc, disable=not progress, leave=False):
        hist.add(cfg, objective(cfg))
    return hist


def grid_configs(space, budget: int) -> list[dict]:
    """The largest full grid with at most ``budget`` points: k points per numeric dimension
    (k the same for all), every choice of each categorical one; row-major order."""
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
    """Evaluate ``objective`` on the largest full grid of at most ``budget`` points."""
    return _run(objective, grid_configs(space, budget), progress, "grid search")


def random_search(objective: Callable, space, budget: int, *, seed: int = 0, progress: bool = False) -> History:
    """Evaluate ``objective`` on ``budget`` configurations drawn independently from ``space``
    (log-uniform for ``log=True`` dimensions), with a seeded ``random.Random(seed)``."""
    space = check_space(space)
    V.positive_int(budget, "budget")
    rng = random.Random(seed)
    configs = [{name: dim.sample(rng) for name, dim in space.items()} for _ in range(budget)]
    return _run(objective, configs, progress, "random search")
