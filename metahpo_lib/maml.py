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
:mod:`metahpo_lib.tasks`) is processed with ``torch.vmap`` (no Python loop over tasks):
parameters get a leading task dimension, the model runs on all tasks at once, and one
``torch.autograd.grad`` of the summed task losses gives every task's inner gradient
(``create_graph=True`` keeps it differentiable for the second-order meta-gradient).
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

import contextlib
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

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


@contextlib.contextmanager
def _silent_stderr():
    """Silence file descriptor 2 (the C++ profiler prints start/stop lines there), then restore it."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def peak_memory(fn: Callable[[], object], device=None, *, repeat: int = 3) -> int:
    """Peak number of bytes allocated by torch while running ``fn()``, above what was allocated before.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the profiler's allocation records
    (``profile_memory=True``), summed in time order (the profiler's console messages are
    silenced while it runs). ``fn`` runs ``repeat`` times and the largest peak is returned:
    under heavy load the profiler occasionally drops records, which can only lower a
    measurement. Used in notebook 05 to show that iMAML's memory does not grow with the
    number of inner steps.
    """
    V.positive_int(repeat, "repeat")
    device = torch.device(device) if device is not None else torch.device("cpu")
    return max(_peak_memory_once(fn, device) for _ in range(repeat))


def _peak_memory_once(fn, device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    with _silent_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = sorted(((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                      if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU),
                     key=lambda r: r[0])   # stable: records with equal time stamps keep their order
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


def _sgd(params: Params, grads: Params, lr) -> Params:
    """``params - lr * grads`` key by key; ``lr`` a number or a dict of tensors (Meta-SGD)."""
    if isinstance(lr, Mapping):
        return {k: params[k] - lr[k] * grads[k] for k in params}
    return {k: params[k] - lr * grads[k] for k in params}


# --------------------------------------------------------------------------- the base learner
def _expand(params: Params, tasks: int) -> Params:
    """Give every tensor a leading task dimension (a broadcast view: gradients sum over tasks)."""
    return {k: v.expand(tasks, *v.shape) for k, v in params.items()}


def _fresh(W: Params) -> Params:
    """Detached copies that require grad (start of an inner loop that is not differentiated)."""
    return {k: v.detach().requires_grad_(True) for k, v in W.items()}


class MetaLearner:
    """Common machinery; subclasses change the inner update or the meta-gradient.

    ``model``: any ``nn.Module`` (its current parameters are copied as the initial meta-parameters);
    ``loss``: ``"mse"``, ``"cross_entropy"`` or a function ``(prediction, target) -> scalar`` for one task;
    ``inner_lr``: the inner SGD step size :math:`\\alpha` (> 0); ``steps``: inner steps during meta-training.

    How the task batch is computed: parameters get a leading task dimension (``[tasks, ...]``,
    a broadcast view of the meta-parameters), the model runs on all tasks at once with
    ``torch.vmap(functional_call)``, and the inner gradients of all tasks come from one
    ``torch.autograd.grad`` of the summed task losses with respect to the task-batched
    parameters (each task's loss depends only on its own slice, so slice ``i`` is task ``i``'s
    gradient). ``create_graph=True`` keeps the inner steps differentiable (second order).
    """

    name = "base"
    second_order = True

    def __init__(self, model: nn.Module, *, loss="mse", inner_lr: float = 0.01, steps: int = 1):
        self.model = check_model(model)
        if isinstance(loss, str):
            V.choice(loss, "loss", set(LOSSES))
            self.loss_name, self.loss_fn = loss, LOSSES[loss]
        elif callable(loss):
            self.loss_name, self.loss_fn = getattr(loss, "__name__", "custom"), loss
        else:
            raise TypeError(f"loss must be 'mse', 'cross_entropy' or a function (pred, target) -> scalar, "
                            f"got {type(loss).__name__}")
        self.inner_lr = V.positive_float(inner_lr, "inner_lr")
        self.steps = _steps(steps)
        self.params: Params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
        self.buffers: Params = {k: v.detach().clone() for k, v in model.named_buffers()}
        self._batched_loss = vmap(self.task_loss, randomness="different")
        self._batched_forward = vmap(self.forward, randomness="different")

    # ---- meta-parameters and their device / dtype
    def meta_parameters(self) -> Params:
        """The tensors meta-training updates (leaf tensors with ``requires_grad``)."""
        return dict(self.params)

    def _set_meta(self, meta: Params) -> None:
        self.params = {k: meta[k] for k in self.params}

    def to(self, device=None, dtype=None) -> "MetaLearner":
        """Move the meta-parameters (and buffers) to ``device`` / ``dtype``; returns ``self``."""
        def mv(t):
            return t.detach().to(device=device, dtype=dtype if t.is_floating_point() else None)
        self._set_meta({k: mv(v).requires_grad_(True) for k, v in self.meta_parameters().items()})
        self.buffers = {k: mv(v) for k, v in self.buffers.items()}
        return self

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.params.values())).dtype

    def __repr__(self) -> str:
        n = sum(v.numel() for v in self.params.values())
        return (f"{type(self).__name__}({type(self.model).__name__} with {n} parameters, loss={self.loss_name}, "
                f"inner_lr={self.inner_lr:g}, steps={self.steps}, {self.dtype}, {self.device})")

    # ---- one task, and all tasks at once
    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """The model with ``params`` on inputs ``x`` of one task (no task dimension)."""
        if self.buffers:
            return functional_call(self.model, (params, self.buffers), (x,))
        return functional_call(self.model, params, (x,))

    def task_loss(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss of one task (no task dimension)."""
        return self.loss_fn(self.forward(params, x), y)

    def predict(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``[tasks, n, ...]`` of task-batched ``params`` (from :meth:`adapt`) on ``x`` ``[tasks, n, ...]``."""
        return self._batched_forward(params, x)

    def _split(self, meta: Params) -> tuple[Params, object]:
        """(initial params, inner learning rate(s)) from the meta-parameters."""
        return meta, self.inner_lr

    def _adapted_keys(self) -> list[str]:
        return list(self.params)

    def _inner_grads(self, W: Params, x, y, create_graph: bool) -> Params:
        """Per-task gradients of the support loss w.r.t. the adapted (task-batched) parameters."""
        keys = self._adapted_keys()
        with torch.enable_grad():
            loss = self._batched_loss(W, x, y).sum()
            gs = torch.autograd.grad(loss, [W[k] for k in keys], create_graph=create_graph,
                                     allow_unused=True, materialize_grads=True)
        return dict(zip(keys, gs))

    def _inner_step(self, W: Params, lr, x, y, create_graph: bool) -> Params:
        g = self._inner_grads(W, x, y, create_graph)
        out = dict(W)
        out.update(_sgd({k: W[k] for k in g}, g, lr))
        return out

    def _adapt_batched(self, meta: Params, x, y, steps: int, create_graph: bool) -> Params:
        """Adapted parameters ``[tasks, ...]`` after ``steps`` inner steps on support ``(x, y)``."""
        params, lr = self._split(meta)
        W = _expand(params, x.shape[0])
        if not create_graph:
            W = _fresh(W)
        for _ in range(steps):
            W = self._inner_step(W, lr, x, y, create_graph)
            if not create_graph:
                W = _fresh(W)
        return W

    def _meta_loss(self, meta: Params, batch: TaskBatch) -> torch.Tensor:
        xs, ys, xq, yq = batch
        W = self._adapt_batched(meta, xs, ys, self.steps, create_graph=True)
        return self._batched_loss(W, xq, yq).mean()

    # ---- checks
    def _check_batch(self, batch, name: str = "batch") -> TaskBatch:
        batch = check_batch(batch, name)
        if batch.x_support.device != self.device:
            raise ValueError(f"{name} is on {batch.x_support.device} but the meta-parameters are on {self.device}: "
                             f"sample on the same device or call learner.to(device)")
        if batch.x_support.dtype != self.dtype:
            raise TypeError(f"{name} is {batch.x_support.dtype} but the meta-parameters are {self.dtype}: "
                            f"sample with dtype={self.dtype} or call learner.to(dtype={batch.x_support.dtype})")
        return batch

    def _meta(self, meta) -> Params:
        if meta is None:
            return self.meta_parameters()
        return V.tensor_dict(meta, "meta", self.meta_parameters())

    # ---- public API
    def adapt(self, params: Params | None, support, steps: int | None = None, *, create_graph: bool = False) -> Params:
        """Adapt ``params`` (None: the learned initialisation) to each task of ``support``.

        ``support``: ``(x_support, y_support)`` with shapes ``[tasks, shots, ...]`` (or a whole
        :class:`~metahpo_lib.tasks.TaskBatch`). Returns params with a leading ``[tasks]``
        dimension, detached unless ``create_graph`` (then differentiable w.r.t. ``params``).
        """
        steps = self.steps if steps is None else _steps(steps)
        if isinstance(support, TaskBatch):
            support = support[:2]
        if not isinstance(support, (tuple, list)) or len(support) != 2:
            raise TypeError("support must be a pair (x_support, y_support) of tensors [tasks, shots, ...]")
        xs, ys = support
        self._check_batch((xs, ys, xs, ys), "support")
        meta = self.meta_parameters()
        if params is not None:
            meta = {**meta, **V.tensor_dict(params, "params", self.params)}
        W = self._adapt_batched(meta, xs, ys, steps, create_graph=create_graph)
        return W if create_graph else {k: v.detach() for k, v in W.items()}

    def meta_loss(self, batch, meta: Params | None = None) -> torch.Tensor:
        """Mean over tasks of the query loss after ``self.steps`` inner steps on the support set
        (differentiable w.r.t. the meta-parameters: ``.backward()`` gives the meta-gradient)."""
        batch = self._check_batch(batch)
        return self._meta_loss(self._meta(meta), batch)

    def meta_grad(self, batch, meta: Params | None = None) -> tuple[Params, torch.Tensor]:
        """(gradient of :meth:`meta_loss` w.r.t. the meta-parameters, the meta-loss, detached)."""
        batch = self._check_batch(batch)
        return self._meta_grad(self._meta(meta), batch)

    def _meta_grad(self, meta: Params, batch: TaskBatch) -> tuple[Params, torch.Tensor]:
        leaves = {k: v if v.requires_grad else v.detach().requires_grad_(True) for k, v in meta.items()}
        with torch.enable_grad():
            loss = self._meta_loss(leaves, batch)
            gs = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True, materialize_grads=True)
        return dict(zip(leaves, gs)), loss.detach()

    def _optimizer(self, optimizer, lr):
        leaves = list(self.meta_parameters().values())
        if callable(optimizer) and not isinstance(optimizer, str):
            return optimizer(leaves)
        V.choice(optimizer, "optimizer", {"adam", "sgd"})
        lr = V.positive_float(lr, "lr")
        return torch.optim.Adam(leaves, lr=lr) if optimizer == "adam" else torch.optim.SGD(leaves, lr=lr)

    def meta_train(self, sampler, iterations: int, *, meta_batch: int = 25, shots: int = 10,
                   query: int | None = None, lr: float = 1e-3, optimizer="adam", seed: int = 0,
                   progress: bool = True) -> History:
        """Meta-train for ``iterations`` steps: sample ``meta_batch`` tasks from ``sampler``
        (anything with ``sample(tasks, shots, query, generator=...)``), compute :meth:`meta_grad`,
        take an optimizer step (``"adam"``, ``"sgd"`` or a function ``list_of_tensors -> torch.optim.Optimizer``).
        Returns the :class:`History` of meta-losses.
        """
        from tqdm.auto import tqdm

        V.positive_int(iterations, "iterations")
        V.positive_int(meta_batch, "meta_batch")
        if not hasattr(sampler, "sample"):
            raise TypeError(f"sampler must have a sample(tasks, shots, query, generator=...) method, "
                            f"got {type(sampler).__name__}")
        g = make_generator(seed)
        opt = self._optimizer(optimizer, lr)
        leaves = self.meta_parameters()
        history, losses = History(), []
        t0 = time.perf_counter()
        bar = tqdm(range(iterations), desc=f"{type(self).__name__} meta-training", disable=not progress)
        for it in bar:
            batch = sampler.sample(meta_batch, shots, query, generator=g)
            if it == 0:
                batch = self._check_batch(batch)
            grads, loss = self._meta_grad(leaves, batch)
            for k, p in leaves.items():
                p.grad = grads[k]
            opt.step()
            losses.append(loss)
            if progress and (it % 100 == 0 or it == iterations - 1):
                bar.set_postfix(meta_loss=f"{float(loss):.4f}")
        history.iterations = list(range(1, iterations + 1))
        history.loss = torch.stack(losses).tolist()
        history.seconds = time.perf_counter() - t0
        for p in leaves.values():
            p.grad = None
        return history

    # ---- evaluation
    def _metric(self, W: Params, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-task query loss and metric (the loss itself, or accuracy for cross-entropy)."""
        with torch.no_grad():
            pred = self._batched_forward(W, x)
            loss = vmap(self.loss_fn)(pred, y)
            if self.loss_name == "cross_entropy":
                return loss, (pred.argmax(-1) == y).to(pred.dtype).mean(-1)
            return loss, loss

    def _trajectory(self, meta: Params, xs, ys, xq, yq, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Query loss and metric ``[tasks, steps + 1]`` after 0..steps inner steps."""
        params, lr = self._split(meta)
        W = _fresh(_expand(params, xs.shape[0]))
        out = [self._metric(W, xq, yq)]
        for _ in range(steps):
            W = _fresh(self._inner_step(W, lr, xs, ys, create_graph=False))
            out.append(self._metric(W, xq, yq))
        return torch.stack([o[0] for o in out], 1), torch.stack([o[1] for o in out], 1)

    def evaluate(self, sampler, *, shots: int = 10, query: int | None = 100, tasks: int = 600, steps: int = 10,
                 batch_size: int = 200, seed: int = 12345, progress: bool = False) -> Evaluation:
        """Query MSE (regression) or accuracy (classification) over ``tasks`` test tasks after
        0..``steps`` adaptation steps, with 95% confidence intervals (:func:`mean_ci95`).

        The same ``seed`` gives every learner the same test tasks (a paired comparison).
        """
        from tqdm.auto import tqdm

        V.positive_int(tasks, "tasks", 2)
        V.positive_int(batch_size, "batch_size")
        steps = _steps(steps)
        if not hasattr(sampler, "sample"):
            raise TypeError(f"sampler must have a sample(tasks, shots, query, generator=...) method, "
                            f"got {type(sampler).__name__}")
        g = make_generator(seed)
        meta = {k: v.detach() for k, v in self.meta_parameters().items()}
        losses, metrics = [], []
        done = 0
        with tqdm(total=tasks, desc=f"evaluating {type(self).__name__}", disable=not progress) as bar:
            while done < tasks:
                n = min(batch_size, tasks - done)
                batch = self._check_batch(sampler.sample(n, shots, query, generator=g))
                lo, me = self._trajectory(meta, *batch, steps)
                losses.append(lo.detach())
                metrics.append(me.detach())
                done += n
                bar.update(n)
        lo, me = torch.cat(losses), torch.cat(metrics)
        bad = (~torch.isfinite(lo)).any(0)
        if bool(bad.any()):
            k = int(bad.nonzero()[0])
            warnings.warn(f"{type(self).__name__}.evaluate: the query loss is not finite (NaN/inf) on some tasks after {k} "
                          f"adaptation step(s): the inner updates diverge (learning rate too large for that many steps; "
                          f"it was meta-trained for {self.steps}). Those steps report NaN.", RuntimeWarning, stacklevel=2)
        m, c = mean_ci95(me)
        lm, lc = mean_ci95(lo)
        return Evaluation(steps=list(range(steps + 1)), mean=m.tolist(), ci95=c.tolist(),
                          metric="accuracy" if self.loss_name == "cross_entropy" else self.loss_name,
                          tasks=tasks, per_task=me.cpu(), loss_mean=lm.tolist(), loss_ci95=lc.tolist())


# --------------------------------------------------------------------------- the family
class MAML(MetaLearner):
    r"""Second-order MAML (Finn et al. 2017): :math:`\phi = \theta - \alpha \nabla L_S(\theta)`
    (``steps`` times), meta-gradient through the whole inner loop (Hessian-vector products included)."""

    name = "MAML"


class FOMAML(MAML):
    r"""First-order MAML: the inner gradients are treated as constants, so the meta-gradient is
    :math:`\frac1T \sum_i \nabla L_{Q_i}(\phi_i)`, the query gradient at the adapted weights."""

    name = "FOMAML"
    second_order = False

    def _inner_step(self, W, lr, x, y, create_graph):
        g = self._inner_grads(W, x, y, create_graph=False)   # constants: no graph through the gradient
        out = dict(W)
        out.update(_sgd({k: W[k] for k in g}, g, lr))
        return out


class MetaSGD(MetaLearner):
    r"""Meta-SGD (Li et al. 2017): a learned learning rate per parameter entry,
    :math:`\phi = \theta - \alpha \odot \nabla L_S(\theta)`; :math:`\theta` and :math:`\alpha` are
    meta-learned together (the inner learning rate becomes a meta-learned hyperparameter).
    ``inner_lr`` is the initial value of every entry of :math:`\alpha`; meta-parameter keys are
    the model's names and ``"lr." + name``."""

    name = "Meta-SGD"

    def __init__(self, model, *, loss="mse", inner_lr: float = 0.01, steps: int = 1):
        super().__init__(model, loss=loss, inner_lr=inner_lr, steps=steps)
        self.lrs: Params = {k: torch.full_like(v, self.inner_lr).detach().requires_grad_(True)
                            for k, v in self.params.items()}

    def meta_parameters(self) -> Params:
        return {**self.params, **{"lr." + k: v for k, v in self.lrs.items()}}

    def _set_meta(self, meta):
        self.params = {k: meta[k] for k in self.params}
        self.lrs = {k: meta["lr." + k] for k in self.params}

    def _split(self, meta):
        return {k: meta[k] for k in self.params}, {k: meta["lr." + k] for k in self.params}


class Reptile(MetaLearner):
    r"""Reptile (Nichol et al. 2018): adapt with ``steps`` SGD steps on the support set, then move
    :math:`\theta` towards the adapted weights. ``meta_grad`` returns the pseudo-gradient
    :math:`\theta - \frac1T \sum_i \phi_i` (an optimizer step on it is the Reptile update;
    with plain SGD at rate :math:`\epsilon`: :math:`\theta \leftarrow \theta + \epsilon(\bar\phi - \theta)`)
    and the query loss after adaptation. With ``steps=1`` it is training on all tasks pooled; use several steps."""

    name = "Reptile"
    second_order = False

    def __init__(self, model, *, loss="mse", inner_lr: float = 0.01, steps: int = 5):
        super().__init__(model, loss=loss, inner_lr=inner_lr, steps=steps)

    def _meta_grad(self, meta, batch):
        xs, ys, xq, yq = batch
        theta = {k: v.detach() for k, v in meta.items()}
        W = self._adapt_batched(theta, xs, ys, self.steps, create_graph=False)
        loss = self._metric(W, xq, yq)[0].mean()
        return {k: theta[k] - W[k].detach().mean(0) for k in theta}, loss


class ANIL(MetaLearner):
    r"""ANIL, "almost no inner loop" (Raghu et al. 2020): only the head (by default the last module
    with parameters) is adapted in the inner loop; the body is meta-learned through the
    second-order meta-gradient. ``head``: parameter-name prefixes of the head."""

    name = "ANIL"

    def __init__(self, model, *, loss="mse", inner_lr: float = 0.01, steps: int = 1, head=None):
        super().__init__(model, loss=loss, inner_lr=inner_lr, steps=steps)
        if head is None:
            owners = [n for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
            head = (owners[-1],)
        elif isinstance(head, str):
            head = (head,)

        def in_head(k):
            return any(h == "" or k == h or k.startswith(h.rstrip(".") + ".") for h in head)

        self.head_keys = [k for k in self.params if in_head(k)]
        if not self.head_keys:
            raise ValueError(f"head {head!r} matches no parameter; parameter names are {sorted(self.params)}")

    def _adapted_keys(self):
        return self.head_keys


class IMAML(MetaLearner):
    r"""Implicit MAML (Rajeswaran et al. 2019). Inner problem (proximal), for each task:
    :math:`\phi^* = \arg\min_\phi L_S(\phi) + \tfrac{\lambda}{2}\|\phi - \theta\|^2`, approximated by
    ``steps`` gradient steps of size ``inner_lr`` from :math:`\theta`. Meta-gradient by the implicit
    function theorem: :math:`g_i = (I + \nabla^2 L_{S_i}(\phi_i^*)/\lambda)^{-1} \nabla L_{Q_i}(\phi_i^*)`,
    averaged over tasks; the linear systems of all tasks are solved together (block-diagonal) by
    :func:`metahpo_lib.linalg.cg` with at most ``cg_iters`` Hessian-vector products. No graph is
    kept through the inner loop, so memory does not grow with ``steps``.

    When :math:`\phi^*` is far from a minimum the matrix can be indefinite; CG then stops at the
    last good iterate (``cg_on_failure="warn"``, truncated CG: warned once, then counted in
    ``cg_failures`` out of ``solves``) or raises (``"raise"``). The last solve is kept in
    ``last_solve``. ``meta_loss`` is the query loss at :math:`\phi^*` (for monitoring: it is not
    differentiated, use ``meta_grad``).
    """

    name = "iMAML"
    second_order = True

    def __init__(self, model, *, loss="mse", inner_lr: float = 0.01, steps: int = 10, lam: float = 1.0,
                 cg_iters: int = 5, cg_tol: float = 1e-10, cg_on_failure: str = "warn"):
        super().__init__(model, loss=loss, inner_lr=inner_lr, steps=steps)
        self.lam = V.positive_float(lam, "lam")
        self.cg_iters = V.positive_int(cg_iters, "cg_iters")
        self.cg_tol = V.positive_float(cg_tol, "cg_tol")
        self.cg_on_failure = V.choice(cg_on_failure, "cg_on_failure", {"warn", "raise"})
        self.last_solve = None
        self.solves = 0          # CG solves done
        self.cg_failures = 0     # of which stopped early (non-positive curvature)
        self._quiet_cg = False

    def _inner_step(self, W, lr, x, y, create_graph):
        theta = self._theta
        g = self._inner_grads(W, x, y, create_graph=False)
        return {k: W[k] - lr * (g[k] + self.lam * (W[k] - theta[k])) for k in W}

    def _adapt_batched(self, meta, x, y, steps, create_graph):
        if create_graph:
            raise ValueError("IMAML.adapt does not keep a graph (create_graph=True): its meta-gradient "
                             "comes from the implicit function theorem, not from backpropagating through adapt")
        self._theta = {k: v.detach() for k, v in meta.items()}
        return super()._adapt_batched(self._theta, x, y, steps, create_graph=False)

    def _trajectory(self, meta, xs, ys, xq, yq, steps):
        self._theta = {k: v.detach() for k, v in meta.items()}
        return super()._trajectory(meta, xs, ys, xq, yq, steps)

    def _meta_loss(self, meta, batch):
        xs, ys, xq, yq = batch
        W = self._adapt_batched(meta, xs, ys, self.steps, create_graph=False)
        return self._metric(W, xq, yq)[0].mean()

    def _meta_grad(self, meta, batch):
        from . import linalg

        xs, ys, xq, yq = batch
        W = self._adapt_batched(meta, xs, ys, self.steps, create_graph=False)
        keys = list(W)
        with torch.enable_grad():
            lq = self._batched_loss(W, xq, yq)
            gq = dict(zip(keys, torch.autograd.grad(lq.sum(), [W[k] for k in keys], allow_unused=True,
                                                    materialize_grads=True)))
            gs = torch.autograd.grad(self._batched_loss(W, xs, ys).sum(), [W[k] for k in keys], create_graph=True,
                                     allow_unused=True, materialize_grads=True)
        lam = self.lam

        def matvec(v):   # (I + H/lam) v for every task at once (H block-diagonal over tasks)
            hv = torch.autograd.grad(gs, [W[k] for k in keys], grad_outputs=[v[k] for k in keys],
                                     retain_graph=True, allow_unused=True, materialize_grads=True)
            return {k: v[k] + h / lam for k, h in zip(keys, hv)}

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sol = linalg.cg(matvec, gq, iters=self.cg_iters, tol=self.cg_tol, on_failure=self.cg_on_failure)
        self.last_solve = sol
        self.solves += 1
        if caught:
            self.cg_failures += 1
            if self.cg_failures == 1 or not self._quiet_cg:
                warnings.warn(f"iMAML: {caught[0].message} -- the CG solve stopped early at the last good iterate "
                              "(truncated CG); a larger lam or more inner steps make the system better conditioned. "
                              "Further occurrences are counted in learner.cg_failures.", RuntimeWarning, stacklevel=3)
                self._quiet_cg = True
        return {k: sol.x[k].detach().mean(0) for k in keys}, lq.detach().mean()


class Pretrained(MetaLearner):
    r"""Baseline: one network trained on all tasks pooled (support and query points together,
    no adaptation during training), then fine-tuned with ``steps`` SGD steps of size ``inner_lr``
    on each test task's support set (Finn et al. 2017's "pretrained" baseline)."""

    name = "pretrained"
    second_order = False

    def _meta_loss(self, meta, batch):
        xs, ys, xq, yq = batch
        return vmap(self.task_loss, in_dims=(None, 0, 0), randomness="different")(
            meta, torch.cat([xs, xq], 1), torch.cat([ys, yq], 1)).mean()
