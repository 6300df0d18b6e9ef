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


# --------------------------------------------------------------------------- the base learner
class MetaLearner:
    """Common machinery; subclasses change the inner update or the meta-gradient.

    ``model``: any ``nn.Module`` (its current parameters are copied as the initial meta-parameters);
    ``loss``: ``"mse"``, ``"cross_entropy"`` or a function ``(prediction, target) -> scalar`` for one task;
    ``inner_lr``: the inner SGD step size :math:`\\alpha` (> 0); ``steps``: inner steps during meta-training.
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
        self.inner_lr = _inner_lr(inner_lr)
        self.steps = _steps(steps)
        self.params: Params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
        self.buffers: Params = {k: v.detach().clone() for k, v in model.named_buffers()}

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

    # ---- pieces for one task (vmapped over tasks)
    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """The model with ``params`` on inputs ``x`` of one task (no task dimension)."""
        return functional_call(self.model, (params, self.buffers), (x,))

    def task_loss(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.forward(params, x), y)

    def _split(self, meta: Params) -> tuple[Params, object]:
        """(initial params, inner learning rate(s)) from the meta-parameters."""
        return meta, self.inner_lr

    def _inner_step(self, params: Params, lr, x, y) -> Params:
        return _sgd(params, grad(self.task_loss)(params, x, y), lr)

    def _adapt_task(self, meta: Params, x, y, steps: int) -> Params:
        params, lr = self._split(meta)
        for _ in range(steps):
            params = self._inner_step(params, lr, x, y)
        return params

    def _task_meta_loss(self, meta: Params, xs, ys, xq, yq) -> torch.Tensor:
        return self.task_loss(self._adapt_task(meta, xs, ys, self.steps), xq, yq)

    # ---- checks
    def _check_batch(self, batch) -> TaskBatch:
        batch = check_batch(batch)
        if batch.x_support.device != self.device:
            raise ValueError(f"batch is on {batch.x_support.device} but the meta-parameters are on {self.device}: "
                             f"sample on the same device or call learner.to(device)")
        if batch.x_support.dtype != self.dtype:
            raise TypeError(f"batch is {batch.x_support.dtype} but the meta-parameters are {self.dtype}: "
                            f"sample with dtype={self.dtype} or call learner.to(dtype={batch.x_support.dtype})")
        return batch

    def _meta(self, meta) -> Params:
        if meta is None:
            return self.meta_parameters()
        return V.tensor_dict(meta, "meta", self.meta_parameters())

    # ---- public API
    def adapt(self, params: Params | None, support, steps: int | None = None) -> Params:
        """Adapt ``params`` (default: the learned initialisation) to each task of ``support``.

        ``support``: ``(x_support, y_support)`` with shapes ``[tasks, shots, ...]`` (or a whole
        :class:`~metahpo_lib.tasks.TaskBatch`). Returns params with a leading ``[tasks]`` dimension.
        """
        steps = self.steps if steps is None else _steps(steps)
        if isinstance(support, TaskBatch):
            support = support[:2]
        if not isinstance(support, (tuple, list)) or len(support) != 2:
            raise TypeError("support must be a pair (x_support, y_support) of tensors [tasks, shots, ...]")
        xs, ys = support
        self._check_batch((xs, ys, xs, ys))
        meta = self.meta_parameters()
        if params is not None:
            given = V.tensor_dict(params, "params", self.params)
            meta = {**meta, **given}
        return vmap(lambda x, y: self._adapt_task(meta, x, y, steps), randomness="different")(xs, ys)

    def predict(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``[tasks, n, ...]`` of task-batched ``params`` (from :meth:`adapt`) on ``x`` ``[tasks, n, ...]``."""
        return vmap(self.forward, randomness="different")(params, x)

    def meta_loss(self, batch, meta: Params | None = None) -> torch.Tensor:
        """Mean over tasks of the query loss after ``self.steps`` inner steps on the support set."""
        batch = self._check_batch(batch)
        return self._meta_loss(self._meta(meta), batch)

    def _meta_loss(self, meta: Params, batch: TaskBatch) -> torch.Tensor:
        per_task = vmap(self._task_meta_loss, in_dims=(None, 0, 0, 0, 0), randomness="different")(meta, *batch)
        return per_task.mean()

    def meta_grad(self, batch, meta: Params | None = None) -> tuple[Params, torch.Tensor]:
        """(gradient of :meth:`meta_loss` w.r.t. the meta-parameters, the meta-loss)."""
        batch = self._check_batch(batch)
        meta = {k: v.detach() for k, v in self._meta(meta).items()}
        return self._meta_grad(meta, batch)

    def _meta_grad(self, meta: Params, batch: TaskBatch) -> tuple[Params, torch.Tensor]:
        return grad_and_value(self._meta_loss)(meta, batch)

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
            grads, loss = self._meta_grad({k: v.detach() for k, v in leaves.items()}, batch)
            for k, p in leaves.items():
                p.grad = grads[k]
            opt.step()
            losses.append(loss.detach())
            if progress and (it % 100 == 0 or it == iterations - 1):
                bar.set_postfix(meta_loss=f"{float(loss):.4f}")
        history.iterations = list(range(1, iterations + 1))
        history.loss = torch.stack(losses).tolist()
        history.seconds = time.perf_counter() - t0
        for p in leaves.values():
            p.grad = None
        return history

    # ---- evaluation
    def _trajectory(self, meta: Params, xs, ys, xq, yq, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Query loss and metric after 0..steps inner steps, for one task."""
        params, lr = self._split(meta)
        losses, metrics = [], []
        for k in range(steps + 1):
            if k > 0:
                params = self._inner_step(params, lr, xs, ys)
            pred = self.forward(params, xq)
            loss = self.loss_fn(pred, yq)
            losses.append(loss)
            if self.loss_name == "cross_entropy":
                metrics.append((pred.argmax(-1) == yq).to(pred.dtype).mean())
            else:
                metrics.append(loss)
        return torch.stack(losses), torch.stack(metrics)

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
        g = make_generator(seed)
        meta = {k: v.detach() for k, v in self.meta_parameters().items()}
        losses, metrics = [], []
        done = 0
        with tqdm(total=tasks, desc=f"evaluating {type(self).__name__}", disable=not progress) as bar:
            while done < tasks:
                n = min(batch_size, tasks - done)
                batch = self._check_batch(sampler.sample(n, shots, query, generator=g))
                with torch.no_grad():
                    lo, me = vmap(lambda *b: self._trajectory(meta, *b, steps), randomness="different")(*batch)
                losses.append(lo)
                metrics.append(me)
                done += n
                bar.update(n)
        lo, me = torch.cat(losses), torch.cat(metrics)
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

    def _inner_step(self, params, lr, x, y):
        g = grad(self.task_loss)(params, x, y)
        return _sgd(params, {k: v.detach() for k, v in g.items()}, lr)


class MetaSGD(MetaLearner):
    r"""Meta-SGD (Li et al. 2017): a learned learning rate per parameter entry,
    :math:`\phi = \theta - \alpha \odot \nabla L_S(\theta)`; :math:`\theta` and :math:`\alpha` are
    meta-learned together. ``inner_lr`` is the initial value of every entry of :math:`\alpha`;
    meta-parameter keys are the model's names and ``"lr." + name``."""

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
    with plain SGD at rate :math:`\epsilon`: :math:`\theta \leftarrow \theta + \epsilon(\bar\phi - \theta)`).
    With ``steps=1`` it reduces to training on all tasks pooled; use several steps."""

    name = "Reptile"
    second_order = False

    def __init__(self, model, *, loss="mse", inner_lr: float = 0.01, steps: int = 5):
        super().__init__(model, loss=loss, inner_lr=inner_lr, steps=steps)

    def _meta_grad(self, meta, batch):
        xs, ys, xq, yq = batch

        def one(x, y, x2, y2):
            phi = self._adapt_task(meta, x, y, self.steps)
            return {k: v.detach() for k, v in phi.items()}, self.task_loss(phi, x2, y2).detach()

        phi, loss = vmap(one, randomness="different")(xs, ys, xq, yq)
        return {k: meta[k] - phi[k].mean(0) for k in meta}, loss.mean()


class ANIL(MetaLearner):
    r"""ANIL, "almost no inner loop" (Raghu et al. 2020): only the head (by default the last module
    with parameters) is adapted in the inner loop; the body is meta-learned through the
    second-order meta-gradient. ``head``: parameter-name prefixes of the head."""

    name = "ANIL"

    def __init__(self, model, *, loss="mse", inner_lr: float = 0.01, steps: int = 1, head=None):
        super().__init__(model, loss=loss, inner_lr=inner_lr, steps=steps)
        if head is None:
            owners = [n for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
            head = (owners[-1] + "." if owners[-1] else "",)
        elif isinstance(head, str):
            head = (head,)
        def in_head(k):
            return any(h == "" or k == h or k.startswith(h.rstrip(".") + ".") for h in head)

        self.head_keys = [k for k in self.params if in_head(k)]
        if not self.head_keys:
            raise ValueError(f"head {head!r} matches no parameter; parameter names are {sorted(self.params)}")

    def _inner_step(self, params, lr, x, y):
        body = {k: v for k, v in params.items() if k not in self.head_keys}
        head = {k: params[k] for k in self.head_keys}
        g = grad(lambda h: self.task_loss({**body, **h}, x, y))(head)
        return {**body, **_sgd(head, g, lr)}


class IMAML(MetaLearner):
    r"""Implicit MAML (Rajeswaran et al. 2019). Inner problem (proximal), for each task:
    :math:`\phi^* = \arg\min_\phi L_S(\phi) + \tfrac{\lambda}{2}\|\phi - \theta\|^2`, approximated by
    ``steps`` gradient steps of size ``inner_lr`` from :math:`\theta`. Meta-gradient by the implicit
    function theorem: :math:`g_i = (I + \nabla^2 L_{S_i}(\phi_i^*)/\lambda)^{-1} \nabla L_{Q_i}(\phi_i^*)`,
    the linear systems of all tasks solved together (block-diagonal) by
    :func:`metahpo_lib.linalg.cg` with ``cg_iters`` Hessian-vector products. No graph is kept
    through the inner loop, so memory does not grow with ``steps``.
    """

    name = "iMAML"

    def __init__(self, model, *, loss="mse", inner_lr: float = 0.01, steps: int = 10, lam: float = 1.0,
                 cg_iters: int = 5, cg_tol: float = 1e-10):
        super().__init__(model, loss=loss, inner_lr=inner_lr, steps=steps)
        self.lam = V.positive_float(lam, "lam")
        self.cg_iters = V.positive_int(cg_iters, "cg_iters")
        self.cg_tol = V.positive_float(cg_tol, "cg_tol")
        self.last_solve = None

    def _adapt_task(self, meta, x, y, steps):
        theta = {k: v.detach() for k, v in meta.items()}
        lam, lr = self.lam, self.inner_lr
        params = theta
        for _ in range(steps):
            g = grad(self.task_loss)(params, x, y)
            params = {k: (params[k] - lr * (g[k] + lam * (params[k] - theta[k]))).detach() for k in params}
        return params

    def _trajectory(self, meta, xs, ys, xq, yq, steps):
        theta = meta
        lam, lr = self.lam, self.inner_lr
        params, losses, metrics = theta, [], []
        for k in range(steps + 1):
            if k > 0:
                g = grad(self.task_loss)(params, xs, ys)
                params = {n: params[n] - lr * (g[n] + lam * (params[n] - theta[n])) for n in params}
            pred = self.forward(params, xq)
            loss = self.loss_fn(pred, yq)
            losses.append(loss)
            metrics.append((pred.argmax(-1) == yq).to(pred.dtype).mean() if self.loss_name == "cross_entropy" else loss)
        return torch.stack(losses), torch.stack(metrics)

    def _meta_grad(self, meta, batch):
        from . import linalg

        xs, ys, xq, yq = batch
        with torch.no_grad():
            phi = vmap(lambda x, y: self._adapt_task(meta, x, y, self.steps), randomness="different")(xs, ys)
            gq, lq = vmap(grad_and_value(self.task_loss), randomness="different")(phi, xq, yq)

        def hvp_task(p, x, y, v):
            return jvp(lambda q: grad(self.task_loss)(q, x, y), (p,), (v,))[1]

        batched_hvp = vmap(hvp_task, randomness="different")
        lam = self.lam

        def matvec(v):
            hv = batched_hvp(phi, xs, ys, v)
            return {k: v[k] + hv[k] / lam for k in v}

        sol = linalg.cg(matvec, gq, iters=self.cg_iters, tol=self.cg_tol)
        self.last_solve = sol
        return {k: sol.x[k].mean(0) for k in meta}, lq.mean()


class Pretrained(MetaLearner):
    r"""Baseline: one network trained on all tasks pooled (support and query points together,
    no adaptation during training), then fine-tuned with ``steps`` SGD steps of size ``inner_lr``
    on each test task's support set (Finn et al. 2017's "pretrained" baseline)."""

    name = "pretrained"
    second_order = False

    def _task_meta_loss(self, meta, xs, ys, xq, yq):
        return self.task_loss(meta, torch.cat([xs, xq]), torch.cat([ys, yq]))
