r"""The registry of HPO methods: one name, one function, one signature (notebook 07).

Every method is a function ::

    method(problem, budget, *, seed, warm_start) -> History

- ``problem``: anything with ``space`` (a dict of dimensions) and ``objective(config) ->
  float``; gradient-based methods also need ``gradient(config) -> {name: derivative}``.
  :class:`SearchProblem` wraps a plain function; a :class:`~metahpo_lib.meta.TaskProblem` and
  :meth:`TableBenchmark.problem <metahpo_lib.hpo.TableBenchmark.problem>` are problems;
- ``budget``: the number of evaluations (a method may stop earlier);
- ``seed``: an int or a ``torch.Generator``;
- ``warm_start``: configurations to evaluate first (e.g. suggested by a meta-learned model).

A new HPO baseline plugs in by registering one such function with :func:`register`, as a
new sampler plugs into Optuna. Built in: ``"grid"``, ``"random"`` (:func:`~metahpo_lib.hpo.random_search`),
``"tpe"``, ``"gp"`` (Optuna samplers), ``"hgd"`` (:func:`~metahpo_lib.hpo.hypergradient_descent`),
``"mixture"`` (:func:`~metahpo_lib.hpo.mixture_search`, transfer from other data sets' tables)
and ``"zero_shot"`` (evaluate the warm start in order, nothing else).

:func:`run_method` also reads names that say where a warm start comes from, given a dict
``starts`` of named lists of configurations (a predictor's suggestion, a portfolio):
``"predictor"`` evaluates ``starts["predictor"]`` only (zero-shot), ``"predictor+tpe"`` runs
``"tpe"`` warm-started with it. Both comparisons of notebook 07 (network tasks,
:func:`metahpo_lib.meta.run_search`; HPO tables, :func:`~metahpo_lib.hpo.leave_one_dataset_out`)
go through :func:`run_method`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from .. import _validate as V
from .descent import hypergradient_descent
from .mixture import mixture_search
from .search import History, SearchProblem, grid_search, random_search
from .studies import optuna_search

__all__ = ["METHODS", "SearchProblem", "register", "parse_method", "run_method"]

#: every registered HPO method, by name: ``fn(problem, budget, *, seed, warm_start) -> History``
METHODS: dict[str, Callable[..., History]] = {}


def register(name: str):
    """Decorator: register ``fn(problem, budget, *, seed, warm_start) -> History`` as method ``name``.

    >>> from metahpo_lib.hpo import METHODS, History, register
    >>> @register("first_corner")
    ... def first_corner(problem, budget, *, seed, warm_start):
    ...     '''Evaluate the lower corner of the space (a toy baseline).'''
    ...     cfg = {k: d.low for k, d in problem.space.items()}
    ...     h = History(); h.add(cfg, problem.objective(cfg)); return h
    >>> "first_corner" in METHODS
    True
    >>> del METHODS["first_corner"]
    """
    if not isinstance(name, str) or not name or "+" in name:
        raise ValueError(f"name must be a non-empty string without '+', got {name!r}")

    def decorate(fn):
        if not callable(fn):
            raise TypeError(f"a method must be callable, got {type(fn).__name__}")
        if name in METHODS and METHODS[name] is not fn:
            raise ValueError(f"a method named {name!r} is already registered")
        METHODS[name] = fn
        return fn

    return decorate


def _then(problem, budget: int, warm_start, search: Callable[[int], History]) -> History:
    """Evaluate ``warm_start`` first, then ``search(remaining budget)``."""
    hist = History()
    for cfg in list(warm_start)[:budget]:
        hist.add(cfg, problem.objective(cfg))
    return hist.extend(search(budget - len(hist))) if budget > len(hist) else hist


@register("grid")
def _grid(problem, budget, *, seed, warm_start):
    """The largest full grid within the budget (after the warm start); ``seed`` is unused."""
    return _then(problem, budget, warm_start, lambda b: grid_search(problem.objective, problem.space, b))


@register("random")
def _random(problem, budget, *, seed, warm_start):
    """Random search (:func:`~metahpo_lib.hpo.random_search`) after the warm start."""
    return _then(problem, budget, warm_start, lambda b: random_search(problem.objective, problem.space, b, seed=seed))


@register("tpe")
def _tpe(problem, budget, *, seed, warm_start):
    """Optuna's multivariate TPE; the warm start is enqueued (TPE conditions on it)."""
    return optuna_search(problem.objective, problem.space, budget, sampler="tpe", seed=seed, warm_start=warm_start)


@register("gp")
def _gp(problem, budget, *, seed, warm_start):
    """Optuna's Gaussian-process sampler; the warm start is enqueued."""
    return optuna_search(problem.objective, problem.space, budget, sampler="gp", seed=seed, warm_start=warm_start)


@register("mixture")
def _mixture(problem, budget, *, seed, warm_start):
    """Transfer across tables (:func:`~metahpo_lib.hpo.mixture_search`): needs a problem with
    ``sources`` (``TableBenchmark.problem(seed, sources=...)``); deterministic, ``seed`` is unused."""
    return mixture_search(problem, budget, warm_start=warm_start)


@register("zero_shot")
def _zero_shot(problem, budget, *, seed, warm_start):
    """Evaluate the warm-start configurations in order (at most ``budget``) and nothing else."""
    if not warm_start:
        raise ValueError("method 'zero_shot' evaluates the warm start only: give it configurations")
    return _then(problem, budget, warm_start, lambda b: History())


@register("hgd")
def _hgd(problem, budget, *, seed, warm_start):
    """Hypergradient descent from the first warm-start configuration (else the middle of the space)."""
    if getattr(problem, "gradient", None) is None:
        raise ValueError("method 'hgd' needs a problem with a gradient(config) method")
    start = list(warm_start)[0] if warm_start else None
    return hypergradient_descent(problem.objective, problem.space, budget, gradient=problem.gradient, start=start)


def parse_method(method: str, starts: Mapping | Sequence = (), *, arg: str = "method") -> tuple[str | None, str]:
    """Split a method name into ``(start, search)``: ``"tpe"`` -> ``(None, "tpe")``,
    ``"portfolio"`` -> ``("portfolio", "zero_shot")``, ``"portfolio+tpe"`` -> ``("portfolio", "tpe")``;
    raise a ``ValueError`` naming ``arg`` for a name that neither :data:`METHODS` nor ``starts`` knows.

    >>> from metahpo_lib.hpo import parse_method
    >>> parse_method("predictor+hgd", starts=["predictor"])
    ('predictor', 'hgd')
    """
    start, _, search = method.rpartition("+") if isinstance(method, str) else (None, "", None)
    start = start or None
    if start is None and method in starts and method not in METHODS:
        start, search = method, "zero_shot"
    if search not in METHODS or (start is not None and start not in starts):
        raise ValueError(f"{arg} must be a registered method {sorted(METHODS)}, a start {sorted(starts)} "
                         f"(zero-shot) or 'start+method', got {method!r}")
    return start, search


def run_method(method: str, problem, budget: int, *, seed=0, starts: Mapping | None = None,
               warm_start_size: int | None = None) -> History:
    """Run one HPO method by name on ``problem`` with ``budget`` evaluations (module docstring).

    ``starts``: ``{name: [config, ...]}`` for names such as ``"portfolio"`` or ``"portfolio+tpe"``;
    a search warm-started from a start gets its first ``warm_start_size`` configurations (all
    when None), a zero-shot start all of them.

    >>> from metahpo_lib.hpo import Float, SearchProblem, run_method
    >>> p = SearchProblem(lambda c: (c["x"] - 0.3) ** 2, {"x": Float(0.0, 1.0)})
    >>> run_method("grid", p, 11).best_config
    {'x': 0.3}
    >>> run_method("mine+random", p, 5, starts={"mine": [{"x": 0.25}]}).configs[0]
    {'x': 0.25}
    """
    starts = {} if starts is None else dict(starts)
    start, search = parse_method(method, starts)
    if not hasattr(problem, "space") or not callable(getattr(problem, "objective", None)):
        raise TypeError(f"problem must have a space and an objective(config) method, got {type(problem).__name__}")
    V.positive_int(budget, "budget")
    V.generator(seed)
    warm = [] if start is None else list(starts[start])
    for cfg in warm:
        if not isinstance(cfg, Mapping) or set(cfg) != set(problem.space):
            raise ValueError(f"starts[{start!r}] must hold configurations with keys {sorted(problem.space)}, got {cfg!r}")
    if search != "zero_shot" and warm_start_size is not None:
        warm = warm[:V.positive_int(warm_start_size, "warm_start_size")]
    return METHODS[search](problem, budget, seed=seed, warm_start=warm)
