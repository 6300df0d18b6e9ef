r"""The outer loop of the MAML family (notebook 06): :func:`meta_train` and its :class:`LossCurve`.

Each iteration samples ``meta_batch`` tasks, asks the learner for its meta-gradient and takes
one step of a ``torch.optim`` optimiser on the meta-parameters:

.. math:: \theta \leftarrow \theta - \beta\, \widehat{\nabla}_\theta \frac1T \sum_i L_{Q_i}(\phi_i(\theta))

(``meta_lr`` :math:`\beta`; with Adam the step is Adam's). The learner is separate from this
loop: any :class:`~metahpo_lib.maml.base.MetaLearner` is trained the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .. import _validate as V
from ..inner import DivergenceError
from ..tasks import check_sampler
from .base import MetaLearner, check_learner

__all__ = ["LossCurve", "meta_train"]


@dataclass
class LossCurve:
    """What :func:`meta_train` did: the meta-loss (query loss after adaptation) per iteration.

    ``iterations``: 1, 2, ...; ``loss``: floats; ``seconds``: wall time. Notebook 06.

    >>> curve = LossCurve([1, 2, 3, 4], [4.0, 2.0, 2.0, 0.0])
    >>> curve.smoothed(2)
    [4.0, 3.0, 2.0, 1.0]
    """

    iterations: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def smoothed(self, window: int = 100) -> list[float]:
        """Running mean of ``loss`` over the last ``window`` iterations (for plots)."""
        V.positive_int(window, "window")
        out, acc = [], 0.0
        for i, v in enumerate(self.loss):
            acc += v
            if i >= window:
                acc -= self.loss[i - window]
            out.append(acc / min(i + 1, window))
        return out

    def __repr__(self) -> str:
        last = f", last smoothed loss {self.smoothed()[-1]:.4g}" if self.loss else ""
        return f"LossCurve({len(self.loss)} iterations in {self.seconds:.1f} s{last})"


def _optimizer(optimizer, meta_lr, leaves: list[torch.Tensor]) -> torch.optim.Optimizer:
    if callable(optimizer) and not isinstance(optimizer, str):
        if meta_lr is not None:
            raise ValueError("meta_lr is ignored when optimizer is a function (it sets its own learning rate): "
                             "leave meta_lr out, or pass optimizer='adam' or 'sgd'")
        return optimizer(leaves)
    V.choice(optimizer, "optimizer", {"adam", "sgd"})
    meta_lr = V.positive_float(1e-3 if meta_lr is None else meta_lr, "meta_lr")
    return torch.optim.Adam(leaves, lr=meta_lr) if optimizer == "adam" else torch.optim.SGD(leaves, lr=meta_lr)


def _diverged(learner: MetaLearner, it: int, loss: torch.Tensor, meta_lr) -> DivergenceError:
    return DivergenceError(
        f"meta_train: the meta-loss became {float(loss)} at iteration {it} ({learner.name}): the inner or outer "
        f"steps diverge. Try a smaller lr (inner step size, now {learner.lr:g}) or a smaller meta_lr "
        f"(outer step size, now {1e-3 if meta_lr is None else meta_lr:g}), or fewer inner steps (now {learner.steps})")


def meta_train(learner: MetaLearner, sampler, *, iterations: int, meta_batch: int = 25, shots: int = 10,
               query: int | None = None, meta_lr: float | None = None, optimizer="adam", seed=0,
               progress: bool = True) -> LossCurve:
    """Meta-train ``learner`` for ``iterations`` outer steps on tasks from ``sampler``.

    Each iteration draws ``meta_batch`` tasks (``sampler.sample(meta_batch, shots, query, seed=g)``
    with one generator ``g`` from ``seed``), computes ``learner.meta_grad`` and takes a step of
    ``optimizer``: ``"adam"`` or ``"sgd"`` at ``meta_lr`` (default 1e-3), or a function
    ``list_of_tensors -> torch.optim.Optimizer`` (then leave ``meta_lr`` out). The first
    iteration whose meta-loss is NaN or inf raises :class:`metahpo_lib.inner.DivergenceError`
    naming it (before its optimiser step). Notebook 06.

    >>> import torch
    >>> from torch import nn
    >>> from metahpo_lib import maml
    >>> from metahpo_lib.tasks import Sinusoid
    >>> _ = torch.manual_seed(0)
    >>> learner = maml.MAML(nn.Sequential(nn.Linear(1, 32), nn.ReLU(), nn.Linear(32, 1)), lr=0.01)
    >>> curve = maml.meta_train(learner, Sinusoid(), iterations=50, meta_batch=5, meta_lr=1e-2, progress=False)
    >>> len(curve.loss), curve.smoothed(10)[-1] < curve.smoothed(10)[9]
    (50, True)
    """
    from tqdm.auto import tqdm

    check_learner(learner)
    V.positive_int(iterations, "iterations")
    V.positive_int(meta_batch, "meta_batch")
    check_sampler(sampler)
    g = V.generator(seed)
    leaves = learner.meta_parameters()
    opt = _optimizer(optimizer, meta_lr, list(leaves.values()))
    losses = []
    t0 = time.perf_counter()
    bar = tqdm(range(1, iterations + 1), desc=f"{learner.name} meta-training", disable=not progress)
    for it in bar:
        batch = sampler.sample(meta_batch, shots, query, seed=g)
        grads, loss = learner.meta_grad(batch)
        if not bool(torch.isfinite(loss)):
            raise _diverged(learner, it, loss, meta_lr)
        for k, p in leaves.items():
            p.grad = grads[k]
        opt.step()
        losses.append(loss)
        if progress and (it % 100 == 1 or it == iterations):
            bar.set_postfix(meta_loss=f"{float(loss):.4f}")
    for p in leaves.values():
        p.grad = None
    return LossCurve(list(range(1, iterations + 1)), torch.stack(losses).tolist(), time.perf_counter() - t0)
