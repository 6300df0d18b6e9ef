r"""MAML and its family, batched over tasks with ``torch.func`` (notebook 05).

MAML is a bilevel problem whose *hyperparameter* is the initialisation :math:`\theta`
(and, for Meta-SGD, the inner learning rates :math:`\alpha`). For each task :math:`i`
with support set :math:`S_i` and query set :math:`Q_i`:

.. math::

    \min_\theta \; \frac1T \sum_i L_{Q_i}(\phi_i(\theta)), \qquad
    \phi_i(\theta) = \theta - \alpha \nabla L_{S_i}(\theta) \quad \text{(one inner step; ``steps`` of them)}

The meta-gradient :math:`(I - \alpha \nabla^2 L_{S_i}(\theta))\,\nabla L_{Q_i}(\phi_i)` is
second order (:class:`MAML`); :class:`FOMAML` drops the Hessian term; :class:`MetaSGD`
learns a per-parameter :math:`\alpha`; :class:`Reptile` moves :math:`\theta` towards the
adapted weights; :class:`ANIL` adapts only the head; :class:`IMAML` replaces the unrolled
inner loop by a proximal inner problem and the implicit function theorem,
:math:`(I + \nabla^2 L_{S_i}(\phi_i)/\lambda)^{-1} \nabla L_{Q_i}(\phi_i)`, solved with
:func:`metahpo_lib.linalg.cg` (memory independent of the number of inner steps).
:class:`Pretrained` is the baseline: one network trained on all tasks pooled, fine-tuned
with SGD at test time.

Any ``torch.nn.Module`` works: parameters are a ``dict[str, Tensor]`` used through
``torch.func.functional_call``, and a batch of tasks ``[tasks, shots, ...]`` (see
:mod:`metahpo_lib.tasks`) is processed with ``torch.vmap`` (no Python loop over tasks).
Every learner has the same methods:

- ``adapt(params, support, steps)`` -> adapted params, each with a leading ``[tasks]`` dimension;
- ``meta_loss(batch)`` -> mean query loss after adaptation (a scalar);
- ``meta_grad(batch)`` -> (dict of meta-gradients keyed like ``meta_parameters()``, loss);
- ``meta_train(sampler, iterations, ...)`` -> :class:`History` (progress bar, ``progress=False``);
- ``evaluate(sampler, ...)`` -> :class:`Evaluation`: mean and 95% confidence interval of the
  query MSE (regression) or accuracy (classification) over many test tasks after
  0, 1, ..., N adaptation steps.

Device and dtype follow the model's parameters (``learner.to(device, dtype)``); a batch on
another device or dtype is refused with a clear message.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value, jvp, vmap

from . import _validate as V
from .tasks import TaskBatch, check_batch, make_generator

__all__ = ["MetaLearner", "MAML", "FOMAML", "MetaSGD", "Reptile", "ANIL", "IMAML", "Pretrained",
           "History", "Evaluation", "mean_ci95", "peak_memory", "check_model"]

Params = dict[str, torch.Tensor]

LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": lambda pred, y: ((pred - y) ** 2).mean(),
    "cross_entropy": lambda pred, y: F.cross_entropy(pred, y),
}


# --------------------------------------------------------------------------- small helpers
def mean_ci95(values: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Mean and half-width of the normal 95% confidence interval, :math:`1.96\, s / \sqrt{n}`
    (``s`` the sample standard deviation), along ``dim``."""
    V.tensor(values, "values", finite=False)
    n = values.shape[dim]
    if n < 2:
        raise ValueError(f"values needs at least 2 entries along dim {dim} for a confidence interval, got {n}")
    return values.mean(dim), 1.96 * values.std(dim, unbiased=True) / math.sqrt(n)


def check_model(model) -> nn.Module:
    """Refuse what cannot be adapted per task in a vmapped functional call.

    BatchNorm with running statistics updates its buffers in place during every forward pass,
    which is shared state across tasks (and impossible under ``torch.vmap``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            raise ValueError(
                f"model: {name or type(model).__name__} ({type(m).__name__}) tracks running statistics, which are "
                "updated in place at every forward pass and would be shared (and overwritten) across tasks. Fix: "
                f"build it with {type(m).__name__}(..., track_running_stats=False) so each task normalises with its "
                "own batch statistics (as in Finn et al.'s MAML code), or use nn.LayerNorm / nn.GroupNorm, or call "
                "torch.func.replace_all_batch_norm_modules_(model)")
    if not any(True for _ in model.parameters()):
        raise ValueError("model has no parameters to meta-learn")
    return model


def peak_memory(fn: Callable[[], object], device=None) -> int:
    """Peak number of bytes allocated by torch while running ``fn()``, above what was allocated before.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the profiler's allocation records
    (``profile_memory=True``), summed in time order. Used in notebook 05 to show that
    iMAML's memory does not grow with the number of inner steps.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    peak = cur = 0
    for _, nbytes in records:
        cur += nbytes
        peak = max(peak, cur)
    return int(peak)


@dataclass
class History:
    """What ``meta_train`` did: meta-loss (query loss after adaptation) per iteration."""

    iterations: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def smoothed(self, window: int = 100) -> list[float]:
        """Running mean of ``loss`` over ``window`` iterations (for plots)."""
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
        return f"History({len(self.loss)} iterations in {self.seconds:.1f} s{last})"


@dataclass
class Evaluation:
    """Query metric after 0..N adaptation steps over ``tasks`` test tasks.

    ``mean[k]`` and ``ci95[k]`` (half-width) after ``k`` steps; ``per_task``: ``[tasks, N+1]``.
    ``metric`` is ``"mse"`` (regression) or ``"accuracy"`` (classification, in [0, 1]);
    ``loss_mean`` / ``loss_ci95`` hold the query loss in both cases.
    """

    steps: list[int]
    mean: list[float]
    ci95: list[float]
    metric: str
    tasks: int
    per_task: torch.Tensor
    loss_mean: list[float]
    loss_ci95: list[float]

    def at(self, k: int) -> tuple[float, float]:
        """(mean, 95% CI half-width) after ``k`` steps."""
        return self.mean[k], self.ci95[k]

    def __repr__(self) -> str:
        cells = ", ".join(f"{k}: {m:.4g}±{c:.2g}" for k, m, c in zip(self.steps, self.mean, self.ci95))
        return f"Evaluation({self.metric} over {self.tasks} tasks after steps {{{cells}}})"


def _steps(steps, name: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise TypeError(f"{name} must be an int >= 0, got {type(steps).__name__}")
    if steps < 0:
        raise ValueError(f"{name} must be an integer >= 0 (number of inner adaptation steps), got {steps}")
    return steps


def _inner_lr(lr, name: str = "inner_lr") -> float:
    try:
        v = float(lr)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(lr).__name__}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0 (the inner SGD step size), got {lr!r}")
    return v


def _sgd(params: Params, grads: Params, lr) -> Params:
    """``params - lr * grads`` key by key; ``lr`` a number or a dict of tensors (Meta-SGD)."""
    if isinstance(lr, Mapping):
        return {k: params[k] - lr[k] * grads[k] for k in params}
    return {k: params[k] - lr * grads[k] for k in params}


