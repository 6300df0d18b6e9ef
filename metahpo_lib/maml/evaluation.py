r"""Evaluation of a meta-learned initialisation on new tasks (notebook 06): :func:`evaluate`.

For each of ``tasks`` test tasks, adapt with 0, 1, ..., ``steps`` inner steps on the support
set and measure the query metric; report its mean over tasks and the Student-t 95% confidence
interval :math:`\bar m \pm t_{0.975,\,n-1}\, s/\sqrt n` (:func:`metahpo_lib.stats.mean_ci`).
:func:`support_curvature` measures the largest Hessian eigenvalue :math:`L` of each task's
support loss, which bounds the stable inner learning rate (:math:`\alpha < 2/L`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch.func import vmap

from .. import _validate as V
from .. import linalg
from ..stats import MeanCI, mean_ci
from ..tasks import check_sampler
from .base import MetaLearner, Params, check_learner

__all__ = ["Evaluation", "evaluate", "support_curvature"]


@dataclass
class Evaluation:
    """Query metric after 0..N adaptation steps over ``tasks`` test tasks.

    ``mean[k]`` and ``half_width[k]`` (of the 95% confidence interval) after ``k`` steps;
    ``per_task``: ``[tasks, N+1]``. ``metric`` is ``"mse"`` (regression) or ``"accuracy"``
    (classification, in [0, 1]); ``loss_mean`` / ``loss_half_width`` hold the query loss in
    both cases. Notebook 06.

    >>> import torch
    >>> ev = Evaluation.from_tables(torch.tensor([[2.0, 1.0], [4.0, 1.0]]), torch.tensor([[2.0, 1.0], [4.0, 1.0]]), "mse")
    >>> ev.at(0).mean, ev.steps, ev.tasks
    (3.0, [0, 1], 2)
    """

    steps: list[int]
    mean: list[float]
    half_width: list[float]
    metric: str
    tasks: int
    per_task: torch.Tensor
    loss_mean: list[float]
    loss_half_width: list[float]

    @classmethod
    def from_tables(cls, losses: torch.Tensor, metrics: torch.Tensor, metric: str) -> "Evaluation":
        """From per-task tables ``[tasks, steps + 1]`` of query losses and metrics."""
        m, lo = mean_ci(metrics, dim=0), mean_ci(losses, dim=0)
        return cls(steps=list(range(metrics.shape[1])), mean=m.mean.tolist(), half_width=m.half_width.tolist(),
                   metric=metric, tasks=metrics.shape[0], per_task=metrics.cpu(), loss_mean=lo.mean.tolist(),
                   loss_half_width=lo.half_width.tolist())

    def at(self, k: int) -> MeanCI:
        """Mean and 95% CI half-width after ``k`` steps."""
        return MeanCI(self.mean[k], self.half_width[k])

    def __repr__(self) -> str:
        cells = ", ".join(f"{k}: {m:.4g}±{c:.2g}" for k, m, c in zip(self.steps, self.mean, self.half_width))
        return f"Evaluation({self.metric} over {self.tasks} tasks after steps {{{cells}}})"


def _metric(learner: MetaLearner, W: Params, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task query loss and metric (the loss itself, or accuracy for cross-entropy)."""
    with torch.no_grad():
        pred = learner.predict(W, x)
        loss = vmap(learner.loss_fn)(pred, y)
        if learner.loss_name == "cross_entropy":
            return loss, (pred.argmax(-1) == y).to(pred.dtype).mean(-1)
        return loss, loss


def _trajectory(learner: MetaLearner, batch, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Query loss and metric ``[tasks, steps + 1]`` after 0..steps inner steps."""
    meta = {k: v.detach() for k, v in learner.meta_parameters().items()}
    xs, ys, xq, yq = batch
    out = [_metric(learner, W, xq, yq) for W in learner.inner_path(meta, xs, ys, steps)]
    return torch.stack([o[0] for o in out], 1), torch.stack([o[1] for o in out], 1)


def _warn_if_diverged(learner: MetaLearner, losses: torch.Tensor) -> None:
    bad = (~torch.isfinite(losses)).any(0)
    if bool(bad.any()):
        k = int(bad.nonzero()[0])
        warnings.warn(f"evaluate({learner.name}): the query loss is not finite (NaN/inf) on some tasks after {k} "
                      f"adaptation step(s): the inner updates diverge (learning rate too large for that many steps; "
                      f"it was meta-trained for {learner.steps}). Those steps report NaN.", RuntimeWarning, stacklevel=3)


def evaluate(learner: MetaLearner, sampler, *, shots: int = 10, query: int | None = 100, tasks: int = 600,
             steps: int = 10, batch_size: int = 200, seed=12345, progress: bool = False) -> Evaluation:
    """Query MSE (regression) or accuracy (classification) of ``learner`` over ``tasks`` test tasks
    from ``sampler`` after 0..``steps`` adaptation steps, with 95% confidence intervals.

    Tasks are drawn ``batch_size`` at a time with one generator from ``seed`` (int or
    ``torch.Generator``): the same ``seed`` gives every learner the same test tasks (a paired
    comparison). Steps where some task's loss is not finite are reported as NaN, with a warning.
    Notebook 06.

    >>> import torch
    >>> from torch import nn
    >>> from metahpo_lib import maml
    >>> from metahpo_lib.tasks import Sinusoid
    >>> _ = torch.manual_seed(0)
    >>> learner = maml.MAML(nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1)).double(), lr=0.02)
    >>> ev = maml.evaluate(learner, Sinusoid(dtype=torch.float64), shots=10, tasks=50, steps=2, seed=0)
    >>> ev
    Evaluation(mse over 50 tasks after steps {0: 4.899±1, 1: 4.559±1, 2: 4.418±1})
    >>> print(ev.at(2))   # mean ± half-width of the 95% confidence interval
    4.418 ± 1
    """
    from tqdm.auto import tqdm

    check_learner(learner)
    V.positive_int(tasks, "tasks", 2)
    V.positive_int(batch_size, "batch_size")
    V.positive_int(steps, "steps", 0)
    check_sampler(sampler)
    g = V.generator(seed)
    losses, metrics = [], []
    with tqdm(total=tasks, desc=f"evaluating {learner.name}", disable=not progress) as bar:
        for start in range(0, tasks, batch_size):
            n = min(batch_size, tasks - start)
            batch = learner.check_batch(sampler.sample(n, shots, query, seed=g))
            lo, me = _trajectory(learner, batch, steps)
            losses.append(lo)
            metrics.append(me)
            bar.update(n)
    losses, metrics = torch.cat(losses), torch.cat(metrics)
    _warn_if_diverged(learner, losses)
    return Evaluation.from_tables(losses, metrics, "accuracy" if learner.loss_name == "cross_entropy" else learner.loss_name)


def support_curvature(learner: MetaLearner, support, *, iters: int = 50, seed=0) -> torch.Tensor:
    r"""Largest Hessian eigenvalue :math:`L_i` of each task's support loss at the learned
    initialisation, w.r.t. the parameters the inner loop adapts, by power iteration (``iters``
    Hessian-vector products, all tasks at once). Notebook 06.

    On a quadratic, gradient descent with step :math:`\alpha` shrinks the error along the top
    eigenvector by :math:`|1 - \alpha L|` per step: it is stable only for
    :math:`\alpha < 2 / L` (the inner-loop stability limit). Returns a tensor ``[tasks]``
    (the Rayleigh quotient :math:`v^\top H v` of the dominant direction; negative if that
    direction has negative curvature).

    >>> import torch
    >>> from torch import nn
    >>> from metahpo_lib import maml
    >>> from metahpo_lib.tasks import Sinusoid
    >>> learner = maml.MAML(nn.Linear(1, 1, bias=False).double())
    >>> b = Sinusoid(dtype=torch.float64).sample(3, 5, seed=0)
    >>> L = maml.support_curvature(learner, b)         # MSE of w*x: L = 2 mean(x^2)
    >>> torch.allclose(L, 2 * (b.x_support ** 2).mean((1, 2)))
    True
    """
    check_learner(learner)
    V.positive_int(iters, "iters")
    if not isinstance(support, (tuple, list)) or len(support) not in (2, 4):
        raise TypeError("support must be a pair (x_support, y_support) of tensors [tasks, shots, ...]")
    xs, ys = learner.check_batch((*support[:2], *support[:2]), "support")[:2]
    g = V.generator(seed)
    meta = {k: v.detach() for k, v in learner.meta_parameters().items()}
    W = next(learner.inner_path(meta, xs, ys, 0))
    keys = learner.adapted_keys
    batched = vmap(learner.task_loss, randomness="different")
    H = linalg.hvp(lambda p: batched({**W, **p}, xs, ys).sum(), {k: W[k] for k in keys})
    v = {k: torch.randn(W[k].shape, generator=g, dtype=torch.float64).to(W[k]) for k in keys}
    lam = torch.zeros(xs.shape[0], dtype=xs.dtype, device=xs.device)

    def per_task(d):   # sum over every dimension but the task one
        return sum(t.flatten(1).sum(1) for t in d.values())
    for _ in range(iters):
        norm = per_task({k: t ** 2 for k, t in v.items()}).sqrt().clamp_min(1e-30)
        v = {k: t / norm.view(-1, *[1] * (t.ndim - 1)) for k, t in v.items()}
        Hv = {k: t.detach() for k, t in H(v).items()}
        lam = per_task({k: v[k] * Hv[k] for k in keys})
        v = Hv
    return lam.detach()
