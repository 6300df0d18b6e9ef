r"""Three meta-optimisers: ``meta_train`` on a set of tasks, then ``meta_test`` on a new task
(notebook 07, part 1). Each is meta-trained by the library's one outer loop ``hpo.descend``
(Adam) on hypergradients through whole trainings, over random batches of tasks and run seeds.

- :class:`SharedSetting`: one vector :math:`\lambda` for the whole family (Franceschi et al.,
  2018), :math:`\min_\lambda \frac1B\sum_{i\in\text{batch}} L^{(i)}_{val}(\theta_T(\lambda))`.
  A new task costs one training.
- :class:`HyperPredictor`: :math:`\lambda(\phi) = \Pi(b + W\phi)` from the task's standardised
  meta-features :math:`\phi`; same objective. A new task costs one training.
- :class:`MetaHGD` (MAML-style, Finn et al., 2017; step sizes as in Meta-SGD, Li et al., 2017):
  meta-learns the start :math:`\lambda_0` *and* per-hyperparameter step sizes
  :math:`\alpha = e^{a}` of k steps of per-task hypergradient descent on cheap trainings
  (:data:`~metahpo_lib.meta.CHEAP_STEPS` steps),

  .. math:: \lambda_{j+1} = \Pi\big(\lambda_j - \alpha \odot \nabla_\lambda \tilde L_{val}(\lambda_j)\big),
            \qquad \min_{\lambda_0, a}\ \frac1B\sum_i L^{(i)}_{val}\big(\theta_T(\lambda_k)\big),

  differentiating through the k steps (second order) or treating each
  :math:`\nabla_\lambda\tilde L_{val}` as a constant (``first_order=True``). A new task costs k
  cheap hypergradients plus one training (:func:`maml_meta_gradient` is the meta-gradient of one task).
"""

from __future__ import annotations

import math

import torch

from .. import _validate as V
from ..hpo.descent import descend
from .tasks import Task
from .training import (CAP, CHEAP_STEPS, DEFAULT, DIVERGED, KEYS, STEPS, HIGH, LOW, clamp, evaluate, hypergradient,
                       to_config,
                       to_vector, val_loss)

__all__ = ["check_tasks", "SharedSetting", "HyperPredictor", "MetaHGD", "maml_meta_gradient"]


def check_tasks(tasks, name: str = "tasks") -> list[Task]:
    """Return ``tasks`` as a list if it holds at least two :class:`~metahpo_lib.meta.Task` (a
    family to learn from), else raise an error naming ``name``.

    >>> from metahpo_lib import meta
    >>> meta.check_tasks([])
    Traceback (most recent call last):
        ...
    ValueError: tasks is empty: meta-training needs at least two tasks (a family to learn from), got 0
    """
    tasks = list(tasks) if not isinstance(tasks, Task) else [tasks]
    if len(tasks) < 2:
        what = "is empty" if not tasks else "holds a single task"
        raise ValueError(f"{name} {what}: meta-training needs at least two tasks (a family to learn from), "
                         f"got {len(tasks)}")
    for i, t in enumerate(tasks):
        if not isinstance(t, Task):
            raise TypeError(f"{name}[{i}] must be a meta.Task, got {type(t).__name__}")
    return tasks


def _batches(tasks, batch: int, seed: int):
    """An endless stream of (task, run seed) batches drawn with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    while True:
        idx = torch.randperm(len(tasks), generator=g)[:batch]
        yield [(tasks[int(i)], int(torch.randint(0, 2**31, (), generator=g))) for i in idx]


def _watcher(model, x_key_map, monitor, every: int):
    """A function ``watch(x)`` for ``value_and_grad``: every ``every`` calls, record in
    ``model.monitor`` the mean validation loss (run seed 0) of ``model``'s configurations for the
    ``monitor`` tasks, with the meta-parameters ``x``."""
    monitor = [] if monitor is None else check_tasks(monitor, "monitor")
    V.positive_int(every, "monitor_every")
    calls = [0]

    def watch(x, final: bool = False):
        if monitor and (final or calls[0] % every == 0):
            vs = [model.configure(t, 0, **{a: x[b] for a, b in x_key_map.items()}) for t in monitor]
            loss = sum(float(evaluate(t, v[None], 0)[0][0]) for t, v in zip(monitor, vs)) / len(monitor)
            model.monitor.append((len(model.curve) + calls[0], loss))
        calls[0] += 0 if final else 1

    return watch


def _check_train_args(tasks, iterations, batch, meta_lr):
    tasks = check_tasks(tasks)
    V.positive_int(iterations, "iterations")
    V.positive_int(batch, "batch")
    V.positive_float(meta_lr, "meta_lr")
    return tasks


class SharedSetting:
    """One hyperparameter vector for the whole family (module docstring); ``curve``: the mean
    validation loss of each meta-training batch; ``hypergradients``: how many it took.

    >>> from metahpo_lib import meta
    >>> tasks = meta.make_tasks(meta.sample_specs(["wine", "blobs"], 2, seed=0))
    >>> m = meta.SharedSetting(steps=20).meta_train(tasks, iterations=1, batch=2)
    >>> len(m.curve), m.hypergradients, sorted(m.meta_test(tasks[0])) == sorted(meta.KEYS)
    (1, 2, True)
    """

    cost = 1.0  #: trainings per new task

    def __init__(self, start: dict | None = None, *, steps: int = STEPS):
        self.v = to_vector(DEFAULT if start is None else start)
        self.steps, self.curve, self.hypergradients, self.monitor = steps, [], 0, []

    def configure(self, task: Task, seed: int = 0, v=None) -> torch.Tensor:
        """The hyperparameter vector for ``task`` (with the meta-parameters ``v``, default the learned ones)."""
        return self.v if v is None else v

    def meta_train(self, tasks, *, iterations: int = 40, batch: int = 4, meta_lr: float = 0.1, seed: int = 0,
                   progress: bool = False, monitor=None, monitor_every: int = 5):
        """Adam on the batch-mean hypergradient, ``iterations`` times (batches of ``batch`` tasks);
        ``monitor``: tasks on which to record the mean validation loss every ``monitor_every`` iterations."""
        tasks = _check_train_args(tasks, iterations, batch, meta_lr)
        stream = _batches(tasks, batch, seed)
        watch = _watcher(self, {"v": "v"}, monitor, monitor_every)

        def value_and_grad(x):
            watch(x)
            out = [hypergradient(t, x["v"], s, steps=self.steps) for t, s in next(stream)]
            return sum(o[0] for o in out) / len(out), {"v": sum(o[1] for o in out) / len(out)}

        run = descend(value_and_grad, {"v": self.v}, iterations=iterations, meta_lr=meta_lr,
                      bounds={"v": (LOW, HIGH)}, progress=progress, desc="shared setting")
        watch(run.hparams, final=True)
        self.v, self.curve = run.hparams["v"], self.curve + run.values
        self.hypergradients += iterations * min(batch, len(tasks))
        return self

    def meta_test(self, task: Task, seed: int = 0) -> dict:
        """The shared configuration (the same for every task)."""
        if not isinstance(task, Task):
            raise TypeError(f"task must be a meta.Task, got {type(task).__name__}")
        return to_config(self.v)


class HyperPredictor(SharedSetting):
    r"""A linear map from standardised meta-features to hyperparameters, :math:`\lambda = \Pi(b + W\phi)`
    (module docstring), started at ``W = 0``, ``b`` = ``start``; ``weight_decay`` on ``W``.

    >>> from metahpo_lib import meta
    >>> tasks = meta.make_tasks(meta.sample_specs(["wine", "blobs"], 2, seed=0))
    >>> m = meta.HyperPredictor(steps=20).meta_train(tasks, iterations=1, batch=2)
    >>> m.W.shape, len(m.curve)
    (torch.Size([25, 5]), 1)
    """

    def __init__(self, start: dict | None = None, *, steps: int = STEPS, weight_decay: float = 1e-2):
        super().__init__(start, steps=steps)
        self.W = torch.zeros(len(KEYS), 5, dtype=torch.float64)
        self.mu, self.sd = torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
        self.weight_decay = V.positive_float(weight_decay, "weight_decay", allow_zero=True)

    def configure(self, task: Task, seed: int = 0, W=None, b=None) -> torch.Tensor:
        """The predicted vector for ``task`` (with meta-parameters ``W``, ``b``, default the learned ones)."""
        return self.predict(task.features, W, b)

    def predict(self, features: torch.Tensor, W=None, b=None) -> torch.Tensor:
        """:math:`\\Pi(b + W\\phi)` for the raw meta-features ``features`` (5,)."""
        W, b = (self.W if W is None else W), (self.v if b is None else b)
        return clamp(b + W @ ((features - self.mu) / self.sd))

    def meta_train(self, tasks, *, iterations: int = 40, batch: int = 4, meta_lr: float = 0.05, seed: int = 0,
                   progress: bool = False, monitor=None, monitor_every: int = 5):
        """Standardise the meta-features over ``tasks``, then Adam on ``(W, b)`` as :class:`SharedSetting`."""
        tasks = _check_train_args(tasks, iterations, batch, meta_lr)
        F = torch.stack([t.features for t in tasks])
        self.mu, self.sd = F.mean(0), F.std(0).clamp(min=1e-3)
        stream = _batches(tasks, batch, seed)
        watch = _watcher(self, {"W": "W", "b": "b"}, monitor, monitor_every)

        def value_and_grad(x):
            watch(x)
            vals, gW, gb = [], torch.zeros_like(x["W"]), torch.zeros_like(x["b"])
            for t, s in next(stream):
                z = (t.features - self.mu) / self.sd
                raw = x["b"] + x["W"] @ z
                val, g, _ = hypergradient(t, clamp(raw), s, steps=self.steps)
                g = g * ((raw > LOW) & (raw < HIGH))  # the clipping passes no gradient
                vals.append(val)
                gW, gb = gW + torch.outer(g, z), gb + g
            n = len(vals)
            return sum(vals) / n, {"W": gW / n + self.weight_decay * x["W"], "b": gb / n}

        run = descend(value_and_grad, {"W": self.W, "b": self.v}, iterations=iterations, meta_lr=meta_lr,
                      progress=progress, desc="predictor")
        watch(run.hparams, final=True)
        self.W, self.v = run.hparams["W"], run.hparams["b"]
        self.curve, self.hypergradients = self.curve + run.values, self.hypergradients + iterations * min(batch, len(tasks))
        return self

    def meta_test(self, task: Task, seed: int = 0) -> dict:
        """The predicted configuration for ``task`` (from its meta-features only)."""
        if not isinstance(task, Task):
            raise TypeError(f"task must be a meta.Task, got {type(task).__name__}")
        return to_config(self.predict(task.features))


def maml_meta_gradient(task: Task, init: torch.Tensor, log_step: torch.Tensor, *, k: int, seed: int,
                       first_order: bool = False, steps: int = STEPS, cheap_steps: int = CHEAP_STEPS):
    r"""The MAML-style meta-gradient of one task: ``(L_val(θ_T(λ_k)), {"init": d/dλ_0, "log_step": d/da})``
    with :math:`\lambda_{j+1} = \Pi(\lambda_j - e^{a}\odot\nabla_\lambda \tilde L_{val}(\lambda_j))` on
    ``cheap_steps``-step trainings, all runs from ``seed`` (module docstring). ``first_order``: each
    inner hypergradient is a constant (no second derivatives).

    >>> import torch
    >>> from metahpo_lib import meta
    >>> t = meta.make_task(meta.TaskSpec("wine", 3, 80, 0.0, "none", 1.0, 0.0, seed=1))
    >>> v0 = meta.to_vector(meta.DEFAULT)
    >>> loss, g = meta.maml_meta_gradient(t, v0, torch.full((25,), -2.0, dtype=torch.float64), k=1, seed=0,
    ...                                   steps=20)
    >>> g["init"].shape, g["log_step"].shape
    (torch.Size([25]), torch.Size([25]))
    """
    V.positive_int(k, "k", minimum=0)
    with torch.enable_grad():
        x0 = init.detach().clone().requires_grad_(True)
        a = log_step.detach().clone().requires_grad_(True)
        lam = x0
        for _ in range(k):
            inner, _ = val_loss(task, lam, seed, steps=cheap_steps)
            g = torch.autograd.grad(inner, lam, create_graph=not first_order)[0] if torch.isfinite(inner) else None
            if g is None or not bool(torch.isfinite(g).all()):
                g = DIVERGED.to(lam)
            lam = clamp(lam - a.exp() * g)
        outer, _ = val_loss(task, lam, seed, steps=steps)
        if not torch.isfinite(outer):
            return math.inf, {"init": torch.zeros_like(x0), "log_step": torch.zeros_like(a)}
        gi, ga = torch.autograd.grad(outer, (x0, a), allow_unused=True)
    zero = torch.zeros_like(x0)
    return float(outer.detach()), {"init": zero if gi is None else gi.detach(), "log_step": zero if ga is None else ga.detach()}


class MetaHGD:
    r"""MAML-style meta-learning of per-task hypergradient descent (module docstring): the start
    ``init`` :math:`\lambda_0` and the per-hyperparameter log step sizes ``log_step`` :math:`a`
    of ``k`` cheap hypergradient steps, second order or ``first_order``.
    ``cheap_cost(ratio)``: the trainings a new task costs, given the measured cost ``ratio`` of
    one cheap hypergradient in full trainings.

    >>> import torch
    >>> from metahpo_lib import meta
    >>> tasks = meta.make_tasks(meta.sample_specs(["wine", "blobs"], 2, seed=0))
    >>> m = meta.MetaHGD(k=1, steps=20).meta_train(tasks, iterations=1, batch=2)
    >>> len(m.adapt(tasks[0], seed=0)), m.cheap_cost(0.5)
    (2, 1.5)
    """

    def __init__(self, start: dict | None = None, *, k: int = 2, step: float = 3.0, first_order: bool = False,
                 steps: int = STEPS, cheap_steps: int = CHEAP_STEPS):
        self.init = to_vector(DEFAULT if start is None else start)
        self.log_step = torch.full((len(KEYS),), math.log(V.positive_float(step, "step")), dtype=torch.float64)
        self.k, self.first_order = V.positive_int(k, "k", minimum=0), bool(first_order)
        self.steps, self.cheap_steps, self.curve, self.hypergradients, self.monitor = steps, cheap_steps, [], 0, []

    def configure(self, task: Task, seed: int = 0, init=None, log_step=None) -> torch.Tensor:
        """The adapted vector for ``task`` (:meth:`adapt`, with meta-parameters ``init``, ``log_step`` when given)."""
        return self.adapt(task, seed, init=init, log_step=log_step)[-1]

    def cheap_cost(self, ratio: float, k: int | None = None) -> float:
        """Trainings per new task: ``k`` cheap hypergradients of cost ``ratio`` each, plus the final training."""
        return 1.0 + (self.k if k is None else k) * V.positive_float(ratio, "ratio", allow_zero=True)

    def meta_train(self, tasks, *, iterations: int = 30, batch: int = 4, meta_lr: float = 0.1, seed: int = 0,
                   progress: bool = False, monitor=None, monitor_every: int = 5):
        """Adam on the batch mean of :func:`maml_meta_gradient` over ``(init, log_step)`` (``monitor`` as
        :meth:`SharedSetting.meta_train`, after adaptation)."""
        tasks = _check_train_args(tasks, iterations, batch, meta_lr)
        stream = _batches(tasks, batch, seed)
        watch = _watcher(self, {"init": "init", "log_step": "log_step"}, monitor, monitor_every)

        def value_and_grad(x):
            watch(x)
            out = [maml_meta_gradient(t, x["init"], x["log_step"], k=self.k, seed=s, first_order=self.first_order,
                                      steps=self.steps, cheap_steps=self.cheap_steps) for t, s in next(stream)]
            ok = [o for o in out if math.isfinite(o[0])] or [(CAP, {key: torch.zeros_like(v) for key, v in x.items()})]
            return (sum(o[0] for o in ok) / len(ok),
                    {key: sum(o[1][key] for o in ok) / len(ok) for key in ("init", "log_step")})

        run = descend(value_and_grad, {"init": self.init, "log_step": self.log_step}, iterations=iterations,
                      meta_lr=meta_lr, bounds={"init": (LOW, HIGH), "log_step": (-4.0, 8.0)}, progress=progress,
                      desc="MAML-style" + (" (first order)" if self.first_order else ""))
        watch(run.hparams, final=True)
        self.init, self.log_step = run.hparams["init"], run.hparams["log_step"]
        self.curve = self.curve + run.values
        self.hypergradients += iterations * min(batch, len(tasks)) * (self.k + 1)
        return self

    def adapt(self, task: Task, seed: int = 0, k: int | None = None, *, init=None, log_step=None) -> list[torch.Tensor]:
        """``[λ_0, ..., λ_k]``: ``k`` (default ``self.k``) cheap hypergradient steps on ``task`` from ``init``."""
        if not isinstance(task, Task):
            raise TypeError(f"task must be a meta.Task, got {type(task).__name__}")
        k = self.k if k is None else V.positive_int(k, "k", minimum=0)
        out, step = [self.init if init is None else init], (self.log_step if log_step is None else log_step).exp()
        for _ in range(k):
            _, g, _ = hypergradient(task, out[-1], seed, steps=self.cheap_steps)
            out.append(clamp(out[-1] - step * g))
        return out

    def meta_test(self, task: Task, seed: int = 0, k: int | None = None) -> dict:
        """The configuration after ``k`` adaptation steps on ``task`` (:meth:`adapt`)."""
        return to_config(self.adapt(task, seed, k)[-1])
