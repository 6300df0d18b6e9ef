r"""Multi-fidelity search: successive halving and Hyperband (notebook 01, "Black-box HPO").

A *fidelity* (``budget``) is how much a trial may spend: training steps, epochs, data points.
A cheap, low-fidelity score is a noisy preview of the full one, so these methods start many
configurations at a small budget and give more budget only to the best ones:

- :func:`successive_halving` (Jamieson & Talwalkar, 2016): rung :math:`i = 0, \dots, s` evaluates
  :math:`n_i = \lfloor n / \eta^i \rfloor` configurations at budget :math:`r_i = R\,\eta^{i - s}` and
  keeps the best :math:`1/\eta` of them for the next rung;
- :func:`hyperband` (Li et al., 2018): several successive-halving brackets, from "many
  configurations, small starting budget" to "few configurations, full budget", because which one
  wins depends on how well the cheap scores predict the full ones.

An objective here is ``objective(config, budget) -> float`` (to minimise). Both return a
:class:`MultiFidelityResult`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from .. import _validate as V
from .search import History, check_objective, check_space, int_seed

__all__ = ["Rung", "MultiFidelityResult", "rung_budgets", "successive_halving", "hyperband"]


@dataclass
class Rung:
    """One rung of a successive-halving bracket: ``configs[i]`` scored ``values[i]`` at ``budget``.

    >>> from metahpo_lib.hpo.multifidelity import Rung
    >>> Rung(3, [{"x": 1.0}], [0.5]).budget
    3
    """

    budget: float
    configs: list[dict] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


@dataclass
class MultiFidelityResult:
    """The brackets of a multi-fidelity search (each a list of :class:`Rung`), every evaluation in
    order in ``history`` (its configs carry the ``"budget"`` they were scored at), and the best
    configuration among those scored at the largest budget.

    >>> from metahpo_lib.hpo import Float
    >>> from metahpo_lib.hpo.multifidelity import successive_halving
    >>> res = successive_halving(lambda c, b: c["x"] ** 2, {"x": Float(-1.0, 1.0)}, 9, 1, 9, eta=3)
    >>> [len(r.configs) for r in res.brackets[0]], res.cost   # 9 x 1 + 3 x 3 + 1 x 9
    ([9, 3, 1], 27)
    """

    brackets: list[list[Rung]]
    history: History

    def _final(self) -> list[tuple[float, dict]]:
        top = max(b[-1].budget for b in self.brackets)
        return [(v, c) for b in self.brackets if b[-1].budget == top for c, v in zip(b[-1].configs, b[-1].values)
                if not math.isnan(v)]

    @property
    def best_value(self) -> float:
        """The smallest value scored at the largest budget."""
        return min(self._final(), key=lambda t: t[0])[0]

    @property
    def best_config(self) -> dict:
        """The configuration of :attr:`best_value`."""
        return dict(min(self._final(), key=lambda t: t[0])[1])

    @property
    def cost(self) -> float:
        """Total budget spent, the sum of the budgets of every evaluation."""
        return sum(c["budget"] for c in self.history.configs)


def rung_budgets(min_budget, max_budget, eta: int = 3) -> list:
    r"""The budgets :math:`r_i = R\,\eta^{i - s}`, :math:`i = 0..s`, :math:`s = \lfloor\log_\eta(R / r)\rfloor`,
    of a bracket from ``min_budget`` r to ``max_budget`` R (integers when both bounds are integers).

    >>> from metahpo_lib.hpo.multifidelity import rung_budgets
    >>> rung_budgets(1, 81), rung_budgets(10, 100), rung_budgets(0.1, 1.0, eta=2)
    ([1, 3, 9, 27, 81], [11, 33, 100], [0.125, 0.25, 0.5, 1.0])
    """
    integral = all(isinstance(b, int) and not isinstance(b, bool) for b in (min_budget, max_budget))
    lo, hi = V.positive_float(min_budget, "min_budget"), V.positive_float(max_budget, "max_budget")
    if lo > hi:
        raise ValueError(f"min_budget must be <= max_budget, got {min_budget!r} > {max_budget!r}")
    eta = V.positive_int(eta, "eta", minimum=2)
    s = int(math.floor(math.log(hi / lo) / math.log(eta) + 1e-9))
    budgets = [hi * eta ** (i - s) for i in range(s + 1)]
    return [max(int(min_budget), int(round(b))) for b in budgets] if integral else budgets


def _halving(objective, configs, budgets, eta, hist, bar) -> list[Rung]:
    """Successive halving of ``configs`` over ``budgets``; records every evaluation in ``hist``."""
    rungs = []
    for i, budget in enumerate(budgets):
        rung = Rung(budget)
        for cfg in configs:
            value = float(objective(dict(cfg), budget))
            rung.configs.append(dict(cfg))
            rung.values.append(value)
            hist.add({**cfg, "budget": budget}, value)
            bar.update(1)
        rungs.append(rung)
        keep = max(1, len(configs) // eta)
        order = sorted(range(len(configs)), key=lambda j: (math.isnan(rung.values[j]), rung.values[j], j))
        configs = [configs[j] for j in order[:keep]]
    return rungs


def _check(objective, space, min_budget, max_budget, eta):
    check_objective(objective)
    space = check_space(space)
    if "budget" in space:
        raise ValueError("space must not have a dimension named 'budget': it is the fidelity")
    return space, rung_budgets(min_budget, max_budget, eta)


def successive_halving(objective: Callable, space, n_configs: int, min_budget, max_budget, *, eta: int = 3,
                       seed=0, progress: bool = False) -> MultiFidelityResult:
    r"""Successive halving (Jamieson & Talwalkar, 2016) of ``n_configs`` random configurations of ``space``.

    Rung :math:`i = 0..s` scores the survivors with ``objective(config, r_i)``, budgets
    :math:`r_i` from :func:`rung_budgets` ``(min_budget, max_budget, eta)``, and keeps the best
    :math:`\lfloor n_i / \eta \rfloor` (at least one). Total cost :math:`\approx (s + 1)\, n\, r_0`,
    against :math:`n R` for scoring every configuration at the full budget ``R``.
    ``seed``: an int or a ``torch.Generator`` (configurations drawn like :func:`~metahpo_lib.hpo.random_search`).

    >>> from metahpo_lib.hpo import Float
    >>> from metahpo_lib.hpo.multifidelity import successive_halving
    >>> res = successive_halving(lambda c, b: (c["x"] - 0.3) ** 2 + 1 / b, {"x": Float(0.0, 1.0)}, 27, 1, 27)
    >>> [r.budget for r in res.brackets[0]], [len(r.configs) for r in res.brackets[0]]
    ([1, 3, 9, 27], [27, 9, 3, 1])
    >>> round(res.best_config["x"], 2), res.cost, 27 * 27   # a quarter of the full-budget cost
    (0.3, 108, 729)
    """
    space, budgets = _check(objective, space, min_budget, max_budget, eta)
    V.positive_int(n_configs, "n_configs")
    rng = random.Random(int_seed(seed))
    configs = [{name: dim.sample(rng) for name, dim in space.items()} for _ in range(n_configs)]
    hist = History()
    total = sum(max(1, n_configs // eta ** i) for i in range(len(budgets)))
    with tqdm(total=total, desc="successive halving", disable=not progress, leave=False) as bar:
        return MultiFidelityResult([_halving(objective, configs, budgets, eta, hist, bar)], hist)


def hyperband(objective: Callable, space, min_budget, max_budget, *, eta: int = 3, seed=0,
              progress: bool = False) -> MultiFidelityResult:
    r"""Hyperband (Li et al., 2018): successive-halving brackets :math:`b = s_{max}, \dots, 0`, bracket
    :math:`b` starting :math:`n_b = \lceil \frac{s_{max} + 1}{b + 1} \eta^b \rceil` random configurations
    at budget :math:`R\,\eta^{-b}`, :math:`s_{max} = \lfloor \log_\eta (R / r) \rfloor`. Every bracket
    costs about the same, :math:`(s_{max} + 1) R`; the last one is plain random search at full budget.

    >>> from metahpo_lib.hpo import Float
    >>> from metahpo_lib.hpo.multifidelity import hyperband
    >>> res = hyperband(lambda c, b: (c["x"] - 0.3) ** 2 + 1 / b, {"x": Float(0.0, 1.0)}, 1, 9, seed=0)
    >>> [[len(r.configs) for r in b] for b in res.brackets]
    [[9, 3, 1], [5, 1], [3]]
    >>> [b[0].budget for b in res.brackets], round(res.best_config["x"], 2)
    ([1, 3, 9], 0.3)
    """
    space, budgets = _check(objective, space, min_budget, max_budget, eta)
    rng = random.Random(int_seed(seed))
    s_max = len(budgets) - 1
    plan = [(b, math.ceil((s_max + 1) / (b + 1) * eta ** b)) for b in range(s_max, -1, -1)]
    total = sum(max(1, n // eta ** i) for b, n in plan for i in range(b + 1))
    hist, brackets = History(), []
    with tqdm(total=total, desc="hyperband", disable=not progress, leave=False) as bar:
        for b, n in plan:
            configs = [{name: dim.sample(rng) for name, dim in space.items()} for _ in range(n)]
            brackets.append(_halving(objective, configs, budgets[s_max - b:], eta, hist, bar))
    return MultiFidelityResult(brackets, hist)
