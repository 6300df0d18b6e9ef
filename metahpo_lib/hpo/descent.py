r"""Hypergradient descent: the one outer loop of the library (notebook 07).

:func:`descend` is the loop that every gradient-based outer optimisation runs: meta-training a
meta-optimiser over task batches (:meth:`metahpo_lib.meta.SharedSetting.meta_train`), tuning one
task's hyperparameters by their hypergradient (:func:`hypergradient_descent`), and the
exercises of notebook 07. With ``x`` the hyperparameters (or meta-parameters), ``g_k`` the
gradient that ``value_and_grad`` returns and :math:`\Pi` the clipping to ``bounds``,

.. math::  x_{k+1} = \Pi\big(x_k - \texttt{meta\_lr}\cdot d_k\big),
           \qquad d_k = g_k \ (\texttt{"gd"}) \quad\text{or the Adam direction of } g_0..g_k \ (\texttt{"adam"}).

The step is one of the library's optimiser objects (:class:`metahpo_lib.inner.GD`,
:class:`metahpo_lib.inner.Adam`), used here on the outer variables.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from .. import _validate as V
from ..inner.optimizers import GD, Adam
from .search import Float, History, check_objective, check_space

__all__ = ["Descent", "descend", "hypergradient_descent"]

#: the step rules :func:`descend` knows, by name
OPTIMIZERS = {"gd": GD, "adam": Adam}


class Descent(NamedTuple):
    """The result of :func:`descend`: the final ``hparams`` (a dict like the start) and the
    ``values`` that ``value_and_grad`` returned, one per iteration.

    >>> from metahpo_lib.hpo import Descent
    >>> Descent({}, [1.0, 0.5]).values
    [1.0, 0.5]
    """

    hparams: dict
    values: list


def _check_bounds(bounds, start: dict) -> dict:
    if bounds is None:
        return {}
    if not isinstance(bounds, Mapping) or not set(bounds) <= set(start):
        raise ValueError(f"bounds must be a dict {{key of start: (low, high)}}, keys among {sorted(start)}, "
                         f"got {bounds!r}")
    out = {}
    for k, b in bounds.items():
        if not (isinstance(b, (tuple, list)) and len(b) == 2):
            raise ValueError(f"bounds[{k!r}] must be a pair (low, high), got {b!r}")
        low, high = (torch.as_tensor(v, dtype=start[k].dtype, device=start[k].device) for v in b)
        if bool((low > high).any()):
            raise ValueError(f"bounds[{k!r}] must have low <= high, got {b!r}")
        out[k] = (low, high)
    return out


def _checked_step(value, grads, start: dict, k: int):
    """``(float value, grads as tensors like start)``; raise on a wrong key set or a non-finite number."""
    if not isinstance(grads, Mapping) or set(grads) != set(start):
        raise ValueError(f"value_and_grad must return (value, grads) with grads keyed {sorted(start)}, "
                         f"got {type(grads).__name__} {sorted(grads) if isinstance(grads, Mapping) else ''}")
    grads = {key: torch.as_tensor(g, dtype=start[key].dtype, device=start[key].device).detach()
             for key, g in grads.items()}
    value = float(value)
    if not math.isfinite(value) or not all(bool(torch.isfinite(g).all()) for g in grads.values()):
        raise ValueError(f"descend diverged at iteration {k}: value {value}, or a gradient is not finite; "
                         f"lower meta_lr")
    return value, grads


def descend(value_and_grad: Callable, start: dict, *, iterations: int, meta_lr: float, optimizer: str = "adam",
            bounds: dict | None = None, progress: bool = False, desc: str = "descent") -> Descent:
    r"""Minimise by first-order steps on ``start``:
    :math:`x_{k+1} = \Pi(x_k - \texttt{meta\_lr}\, d_k)` (module docstring), ``iterations`` times.

    ``value_and_grad(x) -> (value, grads)``: a float to log and a dict of gradients like ``x``
    (it may draw a random task batch at each call). ``optimizer``: ``"adam"`` or ``"gd"``;
    ``bounds``: ``{key: (low, high)}`` (numbers or tensors that broadcast) to clip to after each
    step. Inputs are not modified. Introduced in notebook 07.

    >>> import torch
    >>> from metahpo_lib.hpo import descend
    >>> f = lambda x: (float((x["a"] - 3) ** 2), {"a": 2 * (x["a"] - 3)})
    >>> run = descend(f, {"a": torch.tensor(0.0)}, iterations=50, meta_lr=0.25, optimizer="gd")
    >>> round(float(run.hparams["a"]), 4), run.values[0]
    (3.0, 9.0)
    >>> descend(f, {"a": torch.tensor(0.0)}, iterations=5, meta_lr=1.0, bounds={"a": (-1.0, 1.0)}).hparams
    {'a': tensor(1.)}
    """
    if not callable(value_and_grad):
        raise TypeError(f"value_and_grad must be callable x -> (value, grads), got {type(value_and_grad).__name__}")
    x = {k: v.detach().clone() for k, v in V.tensor_dict(start, "start").items()}
    V.positive_int(iterations, "iterations")
    opt = OPTIMIZERS[V.choice(optimizer, "optimizer", set(OPTIMIZERS))](lr=V.positive_float(meta_lr, "meta_lr"))
    bounds = _check_bounds(bounds, x)
    state, values = opt.init(x), []
    for k in tqdm(range(iterations), disable=not progress, desc=desc):
        value, grads = _checked_step(*value_and_grad(x), x, k)
        values.append(value)
        x, state = opt.step(x, grads, state, {}, k)
        x = {key: torch.clamp(v, *bounds[key]) if key in bounds else v for key, v in x.items()}
    return Descent(x, values)


def hypergradient_descent(objective: Callable, space, budget: int, *, gradient: Callable, start: dict | None = None,
                          meta_lr: float = 0.3) -> History:
    r"""Tune one task by hypergradient descent (Adam on the hyperparameters, clipped to ``space``),
    as a search: each iteration evaluates ``objective(config)`` (one trial of the budget) and
    steps along ``gradient(config) -> {name: dL_val/d name}``. Returns the :class:`History`.

    ``space``: :class:`Float` dimensions on a linear scale; ``start``: a configuration (default:
    the middle of ``space``). Introduced in notebook 07 (``predictor+hgd``).

    >>> from metahpo_lib.hpo import Float, hypergradient_descent
    >>> h = hypergradient_descent(lambda c: (c["x"] - 1) ** 2, {"x": Float(-4.0, 4.0)}, 30,
    ...                           gradient=lambda c: {"x": 2 * (c["x"] - 1)}, start={"x": -3.0})
    >>> len(h), round(h.best_config["x"], 1)
    (30, 1.0)
    """
    check_objective(objective)
    space = check_space(space)
    V.positive_int(budget, "budget")
    for name, dim in space.items():
        if type(dim) is not Float or dim.log:
            raise ValueError(f"hypergradient_descent needs Float dimensions on a linear scale, got space[{name!r}] = {dim}")
    if not callable(gradient):
        raise TypeError(f"gradient must be callable config -> dict of derivatives, got {type(gradient).__name__}")
    start = {k: d.grid(1)[0] for k, d in space.items()} if start is None else start
    if not isinstance(start, Mapping) or set(start) != set(space):
        raise ValueError(f"start must be a configuration with keys {sorted(space)}, got {start!r}")
    hist = History()

    def value_and_grad(x):
        cfg = {k: float(v) for k, v in x.items()}
        hist.add(cfg, objective(cfg))
        return hist.values[-1], {k: float(g) for k, g in gradient(cfg).items()}

    x0 = {k: torch.tensor(float(start[k]), dtype=torch.float64) for k in space}
    descend(value_and_grad, x0, iterations=budget, meta_lr=meta_lr,
            bounds={k: (d.low, d.high) for k, d in space.items()})
    return hist
