r"""The hyperparameter predictor: meta-learned from a family of tasks (notebook 07, part 1).

The outer loop averages over a batch of tasks, as MAML does:

.. math::  \min_\phi \frac1B \sum_{\tau \in \text{batch}} L^\tau_{val}\big(w^*_\tau(h_\phi(m_\tau))\big),
           \qquad h_\phi(m) = b + W^\top \frac{m - \mu}{\sigma},

where :math:`m_\tau` are the task's meta-features (:func:`~metahpo_lib.meta.meta_features`) and
the gradient of each term is the exact hypergradient (:func:`metahpo_lib.hypergrad.exact`)
chained through :math:`h_\phi`. (a) ``kind="shared"`` keeps :math:`W = 0`: one setting for the
family; (b) ``kind="predictor"``: a linear predictor from meta-features to hyperparameters.
The loop itself is :func:`metahpo_lib.hpo.descend`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .. import _validate as V
from ..hpo.descent import descend
from ..hypergrad import exact
from .family import HPARAM_KEYS, SPACE, Task

__all__ = ["HyperPredictor", "predict", "meta_gradient", "meta_train"]


@dataclass(frozen=True)
class HyperPredictor:
    r""":math:`h(m) = b + W^\top (m - \mu)/\sigma`: meta-features ``(K,)`` -> the two
    hyperparameters. ``weights = {"W": (K, 2), "b": (2,)}`` (``kind="shared"`` has W = 0);
    ``losses``: the mean batch validation loss at each meta-training iteration.

    >>> import torch
    >>> from metahpo_lib.meta import HyperPredictor, TaskSpec, make_task
    >>> task = make_task(TaskSpec("synthetic", 60, 3, 0.1, 0.5, seed=0))
    >>> kw = dict(dtype=torch.float64)
    >>> p = HyperPredictor({"W": torch.zeros(6, 2, **kw), "b": torch.tensor([-3.0, 5.0], **kw)},
    ...                    mu=torch.zeros(6, **kw), sd=torch.ones(6, **kw), kind="shared")
    >>> p.config(task)   # clipped to SPACE
    {'log_alpha': -3.0, 'scale_power': 3.0}
    """

    weights: dict
    mu: torch.Tensor
    sd: torch.Tensor
    kind: str = "predictor"
    losses: tuple = ()

    def __call__(self, task: Task) -> dict:
        """The predicted hyperparameters of ``task``, a dict of 0-d tensors."""
        return predict(self.weights, task.features, self.mu, self.sd)

    def config(self, task: Task) -> dict:
        """The predicted hyperparameters as a config dict of floats, clipped to :data:`SPACE`."""
        h = self(task)
        return {k: float(min(max(float(h[k]), SPACE[k].low), SPACE[k].high)) for k in HPARAM_KEYS}


def predict(weights: dict, features: torch.Tensor, mu: torch.Tensor, sd: torch.Tensor) -> dict:
    r"""Functional predictor :math:`b + W^\top (m - \mu)/\sigma`:
    ``{"log_alpha": (), "scale_power": ()}`` from ``features (K,)``.

    >>> import torch
    >>> from metahpo_lib.meta import predict
    >>> w = {"W": torch.tensor([[1.0, 0.0]]), "b": torch.tensor([-2.0, 1.0])}
    >>> predict(w, torch.tensor([3.0]), mu=torch.tensor([1.0]), sd=torch.tensor([2.0]))
    {'log_alpha': tensor(-1.), 'scale_power': tensor(1.)}
    """
    out = weights["b"] + ((features - mu) / sd) @ weights["W"]
    return {k: out[i] for i, k in enumerate(HPARAM_KEYS)}


def _check_tasks(tasks, minimum: int = 1) -> list:
    if isinstance(tasks, Task) or not isinstance(tasks, Sequence) or len(tasks) < minimum \
            or not all(isinstance(t, Task) for t in tasks):
        raise ValueError(f"tasks must be a list of at least {minimum} Task"
                         + (" (meta-features are standardised over them)" if minimum > 1 else "")
                         + f", got {type(tasks).__name__} of length {len(tasks) if hasattr(tasks, '__len__') else '?'}")
    return list(tasks)


def meta_gradient(tasks: Sequence[Task], hparams: dict) -> dict:
    r"""The outer-loop gradient of one shared setting over a batch of tasks:
    :math:`\frac1B\sum_\tau \nabla_h L^\tau_{val}(w^*_\tau(h))` (exact hypergradients).

    >>> import torch
    >>> from metahpo_lib.meta import make_tasks, meta_gradient, sample_specs
    >>> tasks = make_tasks(sample_specs(["synthetic"], 2, seed=0))
    >>> g = meta_gradient(tasks, {"log_alpha": torch.tensor(-2.0, dtype=torch.float64),
    ...                           "scale_power": torch.tensor(1.0, dtype=torch.float64)})
    >>> sorted(g), g["log_alpha"].shape
    (['log_alpha', 'scale_power'], torch.Size([]))
    """
    tasks = _check_tasks(tasks)
    gs = [t.hypergrad(hparams) for t in tasks]
    return {k: torch.stack([g[k] for g in gs]).mean() for k in HPARAM_KEYS}


def _batch_value_and_grad(tasks, mu, sd, batch_size: int, weight_decay: float, gen: torch.Generator):
    """``phi -> (mean batch validation loss, d/dphi)`` on a fresh random batch at each call: each
    task's exact hypergradient back-propagated through the predictor, plus the L2 term on W."""
    zeros = torch.zeros(len(mu), 2, dtype=mu.dtype, device=mu.device)

    def value_and_grad(phi):
        idx = torch.randperm(len(tasks), generator=gen)[: min(batch_size, len(tasks))].tolist()
        leaves = {k: v.detach().requires_grad_(True) for k, v in phi.items()}
        weights = {"W": leaves.get("W", zeros), "b": leaves["b"]}
        total = 0.0
        for i in idx:
            h = predict(weights, tasks[i].features, mu, sd)
            lam = tasks[i].expand(h)["log_alpha"]
            g = exact(tasks[i].problem, {"log_alpha": lam.detach()})["log_alpha"]
            lam.backward(g / len(idx))  # chain rule: dL/dphi = dL/dlam . dlam/dphi
            total += tasks[i].val_loss({k: v.detach() for k, v in h.items()})
        grads = {k: v.grad for k, v in leaves.items()}
        if "W" in grads:
            grads["W"] = grads["W"] + weight_decay * leaves["W"].detach()
        return total / len(idx), grads

    return value_and_grad


def meta_train(tasks: Sequence[Task], *, kind: str = "predictor", iterations: int = 300, batch_size: int = 8,
               meta_lr: float = 0.05, weight_decay: float = 1e-2, seed=0, init=(-2.0, 1.0),
               progress: bool = False) -> HyperPredictor:
    """Meta-train a :class:`HyperPredictor`: ``iterations`` Adam steps of size ``meta_lr``
    (:func:`~metahpo_lib.hpo.descend`) on the mean validation loss of random batches of
    ``batch_size`` tasks (module docstring), from ``b = init``, ``W = 0``; ``b`` stays in
    :data:`SPACE`. ``weight_decay`` is an L2 penalty on ``W``; ``seed`` (an int or a
    ``torch.Generator``) draws the batches.

    >>> from metahpo_lib.meta import make_tasks, meta_train, sample_specs
    >>> tasks = make_tasks(sample_specs(["synthetic"], 4, seed=0, n_range=(60, 100), d_max=5))
    >>> p = meta_train(tasks, kind="predictor", iterations=20, batch_size=4, seed=0)
    >>> len(p.losses), round(p.losses[0], 4), round(p.losses[-1], 4)   # mean validation loss of the batch
    (20, 0.2332, 0.1641)
    """
    V.choice(kind, "kind", {"predictor", "shared"})
    tasks = _check_tasks(tasks, minimum=2)
    V.positive_int(iterations, "iterations")
    V.positive_int(batch_size, "batch_size")
    V.positive_float(meta_lr, "meta_lr")
    V.positive_float(weight_decay, "weight_decay", allow_zero=True)
    F = torch.stack([t.features for t in tasks])
    mu, sd = F.mean(0), F.std(0).clamp_min(1e-6)
    kw = dict(dtype=F.dtype, device=F.device)
    start = {"b": torch.tensor(init, **kw)} | ({"W": torch.zeros(F.shape[1], 2, **kw)} if kind == "predictor" else {})
    low, high = (torch.tensor([getattr(SPACE[k], e) for k in HPARAM_KEYS], **kw) for e in ("low", "high"))
    run = descend(_batch_value_and_grad(tasks, mu, sd, batch_size, weight_decay, V.generator(seed)), start,
                  iterations=iterations, meta_lr=meta_lr, bounds={"b": (low, high)}, progress=progress,
                  desc=f"meta-train ({kind})")
    W = run.hparams.get("W", torch.zeros(F.shape[1], 2, **kw))
    return HyperPredictor({"W": W, "b": run.hparams["b"]}, mu, sd, kind, tuple(run.values))
