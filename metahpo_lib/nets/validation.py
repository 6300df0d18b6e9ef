r"""Validation that does not lie: k-fold cross-validation and early stopping of the outer loop (notebook 05).

With many hyperparameters the outer loop fits the validation set. Two remedies:

- **k-fold cross-validation** (:func:`kfold`, :func:`fold_problems`, :func:`cv_hypergradient`):
  pool the training and validation data, split it into k folds, train on k-1 and validate on
  the remaining one, and descend on the mean of the k validation losses,
  :math:`L_{cv}(\lambda) = \frac1k\sum_{i=1}^k L_{val,i}(\theta^{(-i)}_T(\lambda))`, whose hypergradient
  is the mean of the k fold hypergradients;
- **early stopping** (:func:`outer_descent` with ``monitor``): watch a second held-out split
  during the outer loop and keep the hyperparameters where it was best (stop after ``patience``
  iterations without improvement).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from .. import _validate as V
from .. import inner
from ..hypergrad import HypergradResult
from .problem import NetProblem
from .train import check_net, unrolled

TensorDict = dict[str, torch.Tensor]

__all__ = ["kfold", "fold_problems", "cv_hypergradient", "OuterRun", "outer_descent"]


def kfold(n: int, k: int, *, seed=0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``k`` (train indices, validation indices) pairs: a seeded permutation of ``range(n)`` cut into
    ``k`` folds of sizes differing by at most one; fold i validates on part i.

    >>> from metahpo_lib import nets
    >>> [(len(tr), va.tolist()) for tr, va in nets.kfold(5, 2, seed=0)]
    [(2, [4, 0, 1]), (3, [3, 2])]
    """
    V.positive_int(n, "n")
    if V.positive_int(k, "k", 2) > n:
        raise ValueError(f"k must be <= n ({n}), got {k}")
    perm = torch.randperm(n, generator=V.generator(seed))
    parts = torch.tensor_split(perm, k)
    return [(torch.cat([p for j, p in enumerate(parts) if j != i]), parts[i]) for i in range(k)]


def fold_problems(net: NetProblem, k: int, *, seed=0) -> list[NetProblem]:
    """``net`` on each of the ``k`` folds of its pooled training + validation data (:func:`kfold`).

    >>> from torch import nn
    >>> from metahpo_lib import data, nets
    >>> s = data.load("iris")
    >>> net = nets.network(nn.Linear(4, 3), s.X_train, s.y_train, s.X_val, s.y_val, batch_size=16)
    >>> [tuple(f.X_val.shape) for f in nets.fold_problems(net, 3)]
    [(40, 4), (40, 4), (40, 4)]
    """
    check_net(net)
    X, y = torch.cat([net.X_train, net.X_val]), torch.cat([net.y_train, net.y_val])
    idx = kfold(X.shape[0], k, seed=seed)
    return [net.with_data(X[tr], y[tr], X[va], y[va]) for tr, va in idx]


def cv_hypergradient(folds, hparams, *, seed=0, truncate: int | None = None) -> HypergradResult:
    r"""The hypergradient of the cross-validation loss, :math:`\frac1k\sum_i dL_{val,i}/d\lambda`
    (each fold's :func:`~metahpo_lib.nets.unrolled` from the same ``seed``). ``.info["outer_loss"]``:
    the mean validation loss over the folds.

    >>> from torch import nn
    >>> from metahpo_lib import data, nets
    >>> s = data.load("iris")
    >>> net = nets.network(nn.Linear(4, 3), s.X_train, s.y_train, s.X_val, s.y_val, steps=10, batch_size=16)
    >>> g = nets.cv_hypergradient(nets.fold_problems(net, 3), net.init_hparams())
    >>> sorted(g), g.info["folds"]
    (['log_lr', 'log_wd'], 3)
    """
    folds = list(folds)
    if not folds:
        raise ValueError("folds must hold at least one NetProblem (see nets.fold_problems)")
    grads = [unrolled(f, hparams, seed=seed, truncate=truncate) for f in folds]
    mean = {key: sum(g[key] for g in grads) / len(grads) for key in grads[0]}
    return HypergradResult(mean, {"method": "nets.cv_hypergradient", "folds": len(folds),
                                  "outer_loss": sum(g.info["outer_loss"] for g in grads) / len(grads)})


class OuterRun(NamedTuple):
    """The result of :func:`outer_descent`: final ``hparams``, the ``best`` ones by the monitor (the
    final ones without a monitor), the outer ``values``, the ``monitored`` values and ``stopped_at``
    (the iteration where patience ran out, or None).

    >>> from metahpo_lib import nets
    >>> nets.OuterRun({}, {}, [1.0], [], None).values
    [1.0]
    """

    hparams: dict
    best: dict
    values: list
    monitored: list
    stopped_at: int | None


def outer_descent(hypergradient: Callable, start: TensorDict, *, iterations: int, meta_lr: float,
                  monitor: Callable | None = None, patience: int | None = None, keys=None) -> OuterRun:
    r"""Adam on the hyperparameters with (noisy) hypergradients,
    :math:`\lambda_{k+1} = \lambda_k - \texttt{meta\_lr}\cdot\mathrm{Adam}(g_0..g_k)`, where
    ``hypergradient(hparams, k) -> HypergradResult`` (its ``.info["outer_loss"]`` is logged).
    ``monitor(hparams) -> float`` is evaluated before each step and at the end (a second held-out
    split: early stopping keeps the best, and stops after ``patience`` iterations without improvement).
    ``keys``: the entries to update (default: all).

    >>> import torch
    >>> from metahpo_lib import hypergrad, nets
    >>> f = lambda h, k: hypergrad.HypergradResult({"a": 2 * (h["a"] - 3)}, {"outer_loss": float((h["a"] - 3) ** 2)})
    >>> run = nets.outer_descent(f, {"a": torch.tensor(0.0)}, iterations=100, meta_lr=0.3)
    >>> round(float(run.hparams["a"]), 1)
    3.0
    """
    if not callable(hypergradient):
        raise TypeError(f"hypergradient must be callable (hparams, iteration) -> HypergradResult, got "
                        f"{type(hypergradient).__name__}")
    h = {k: v.detach().clone() for k, v in V.tensor_dict(start, "start").items()}
    V.positive_int(iterations, "iterations")
    if patience is not None:
        V.positive_int(patience, "patience")
    keys = list(h) if keys is None else [V.choice(k, "keys", set(h)) for k in keys]
    opt = inner.Adam(lr=V.positive_float(meta_lr, "meta_lr"))
    state, values, monitored = opt.init({k: h[k] for k in keys}), [], []
    best, best_value, stopped = dict(h), float("inf"), None
    for it in range(iterations + 1):
        if monitor is not None:
            monitored.append(float(monitor(h)))
            if monitored[-1] < best_value:
                best, best_value = dict(h), monitored[-1]
            elif patience is not None and it - monitored.index(best_value) >= patience:
                stopped = it
                break
        if it == iterations:
            break
        g = hypergradient(h, it)
        values.append(float(g.info["outer_loss"]))
        new, state = opt.step({k: h[k] for k in keys}, {k: g[k].detach() for k in keys}, state, {}, it)
        h = {**h, **new}
    return OuterRun(h, best if monitor is not None else h, values, monitored, stopped)
