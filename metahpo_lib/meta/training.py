r"""The 25 hyperparameters of a task's training, and the three ways to use them (notebook 07):
train many configurations at once (:func:`evaluate`), differentiate the validation loss of a
training with respect to them (:func:`val_loss`, :func:`hypergradient`), and a search problem
for the registry ``hpo.run_method`` (:class:`TaskProblem`).

Every task is trained the same way: the MLP :math:`64 \to 32 \to 32 \to 10` (ReLU), SGD with
heavy-ball momentum, :data:`STEPS` = 40 minibatch steps of :data:`BATCH` = 32 examples
(``nets.network``). Its hyperparameters, one flat vector :math:`\lambda \in \mathbb R^{25}`
(:data:`KEYS`, bounds :data:`SPACE`, the same for every method):

- ``log_lr_00 .. log_lr_19``: a piecewise-constant learning-rate schedule of 20 phases (2 steps each),
  :math:`\eta_t = e^{\lambda_{\lfloor t/2 \rfloor}}`;
- ``log_wd_0 .. log_wd_2``: one weight decay per layer, :math:`\tfrac12 e^{\omega_l}\lVert W_l\rVert^2`;
- ``logit_momentum`` (:math:`\beta = \sigma(\cdot)`) and ``logit_smoothing`` (label smoothing
  :math:`\varepsilon = \sigma(\cdot)`).

A *seed* fixes one training run: the minibatch order, then the initialisation (as in
``nets.train``), so that all methods compare configurations on the same runs. A diverged
training scores :data:`CAP` (a validation cross-entropy worse than guessing among 10 classes)
and, as a hypergradient, :data:`DIVERGED` (lower every learning rate): the one rule every
method uses. A *cheap* training has :data:`CHEAP_STEPS` = 20 steps (one per phase of the schedule).
"""

from __future__ import annotations

import math
import random

import torch
from torch import nn

from .. import _validate as V
from .. import nets
from ..hpo.search import Float
from .tasks import CLASSES, WIDTH, Task

__all__ = ["STEPS", "CHEAP_STEPS", "BATCH", "PHASES", "KEYS", "SPACE", "LOW", "HIGH", "DEFAULT", "CAP", "DIVERGED", "to_vector",
           "to_config", "to_hparams", "clamp", "network", "val_loss", "hypergradient", "evaluate", "random_configs",
           "TaskProblem"]

STEPS, CHEAP_STEPS, BATCH, PHASES, HIDDEN = 40, 20, 32, 20, 32
KEYS = tuple(f"log_lr_{i:02d}" for i in range(PHASES)) + ("log_wd_0", "log_wd_1", "log_wd_2", "logit_momentum",
                                                           "logit_smoothing")
SPACE = {**{k: Float(-6.0, 1.0) for k in KEYS[:PHASES]}, **{f"log_wd_{i}": Float(-12.0, -1.0) for i in range(3)},
         "logit_momentum": Float(-2.0, 4.0), "logit_smoothing": Float(-7.0, 0.0)}
#: a common hand setting: lr 0.1 constant, weight decay 1e-4, momentum 0.9, label smoothing 0.01
DEFAULT = {**{k: math.log(0.1) for k in KEYS[:PHASES]}, **{f"log_wd_{i}": math.log(1e-4) for i in range(3)},
           "logit_momentum": math.log(9.0), "logit_smoothing": math.log(0.01 / 0.99)}
CAP = 5.0
LOW = torch.tensor([SPACE[k].low for k in KEYS], dtype=torch.float64)
HIGH = torch.tensor([SPACE[k].high for k in KEYS], dtype=torch.float64)
#: the hypergradient of a diverged training: +1 on every learning rate (a descent step lowers them)
DIVERGED = torch.tensor([1.0] * PHASES + [0.0] * 5, dtype=torch.float64)


def to_vector(config, *, like: torch.Tensor | None = None) -> torch.Tensor:
    """A configuration ``{key: float}`` (keys :data:`KEYS`) as a ``(25,)`` tensor (dtype/device of ``like``).

    >>> from metahpo_lib import meta
    >>> meta.to_vector(meta.DEFAULT).shape
    torch.Size([25])
    """
    if not isinstance(config, dict) or set(config) != set(KEYS):
        raise ValueError(f"config must be a dict with the {len(KEYS)} keys of meta.KEYS, got "
                         f"{sorted(config) if isinstance(config, dict) else type(config).__name__}")
    kw = {} if like is None else dict(dtype=like.dtype, device=like.device)
    return torch.tensor([float(config[k]) for k in KEYS], **({"dtype": torch.float64} | kw))


def to_config(v: torch.Tensor) -> dict:
    """The ``(25,)`` vector ``v`` as a configuration ``{key: float}``.

    >>> from metahpo_lib import meta
    >>> meta.to_config(meta.to_vector(meta.DEFAULT))["logit_momentum"] == meta.DEFAULT["logit_momentum"]
    True
    """
    return {k: float(x) for k, x in zip(KEYS, v.detach().cpu().tolist())}


def to_hparams(v: torch.Tensor) -> dict:
    """The ``(..., 25)`` vector as the ``hparams`` dict of ``nets.network`` (differentiable; a leading batch dim kept).

    >>> from metahpo_lib import meta
    >>> {k: tuple(x.shape) for k, x in meta.to_hparams(meta.to_vector(meta.DEFAULT)).items()}
    {'log_lr': (20,), 'log_wd': (3,), 'logit_momentum': (), 'logit_smoothing': ()}
    """
    return {"log_lr": v[..., :PHASES], "log_wd": v[..., PHASES:PHASES + 3], "logit_momentum": v[..., PHASES + 3],
            "logit_smoothing": v[..., PHASES + 4]}


def clamp(v: torch.Tensor) -> torch.Tensor:
    """``v`` clipped to the bounds of :data:`SPACE` (differentiable inside them).

    >>> import torch
    >>> from metahpo_lib import meta
    >>> float(meta.clamp(torch.full((25,), 9.0))[0])
    1.0
    """
    return torch.clamp(v, LOW.to(v), HIGH.to(v))


def network(task: Task, steps: int = STEPS) -> nets.NetProblem:
    """The task's training problem (``nets.network``: the MLP, momentum SGD, ``steps`` steps), built once per task.

    >>> from metahpo_lib import meta
    >>> t = meta.make_task(meta.TaskSpec("wine", 3, 80, 0.0, "none", 1.0, 0.0, seed=1))
    >>> meta.network(t).steps, sorted(meta.network(t).init_hparams())
    (40, ['log_lr', 'log_wd', 'logit_momentum', 'logit_smoothing'])
    """
    if not isinstance(task, Task):
        raise TypeError(f"task must be a meta.Task (build it with meta.make_task), got {type(task).__name__}")
    cache = task.__dict__.setdefault("networks", {})
    if steps not in cache:
        torch.manual_seed(0)  # only shapes and dtypes of this module are used: init_params draws from seeds
        model = nn.Sequential(nn.Linear(WIDTH, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                              nn.Linear(HIDDEN, CLASSES)).to(dtype=task.X_train.dtype, device=task.X_train.device)
        cache[steps] = nets.network(model, task.X_train, task.y_train, task.X_val, task.y_val, optimizer="momentum",
                                    steps=steps, batch_size=BATCH, lr=0.1, schedule=PHASES, weight_decay=1e-4,
                                    momentum=0.9, label_smoothing=0.01)
    return cache[steps]


def val_loss(task: Task, v: torch.Tensor, seed: int, *, steps: int = STEPS):
    r"""``(L_val(θ_T(λ)), θ_T)``: train ``task`` with the vector ``v`` (:math:`\lambda`) for ``steps``
    steps from the run ``seed``; differentiable with respect to ``v`` (and twice, for MAML).

    >>> import torch
    >>> from metahpo_lib import meta
    >>> t = meta.make_task(meta.TaskSpec("wine", 3, 80, 0.0, "none", 1.0, 0.0, seed=1))
    >>> loss, _ = meta.val_loss(t, meta.to_vector(meta.DEFAULT, like=t.X_train), 0, steps=20)
    >>> bool(loss < 1.0)
    True
    """
    net = network(task, steps)
    g = V.generator(seed)
    batches = net.draw(g)
    p0 = net.init_params(g)
    hp = to_hparams(v.to(task.X_train.dtype))
    params, _ = nets.run_all(net, p0, hp, batches)
    return net.val_loss(params, hp), params


def hypergradient(task: Task, v: torch.Tensor, seed: int, *, steps: int = STEPS):
    r"""``(validation loss, dL_val/dλ (25,), test loss)`` of one training run (reverse mode through it);
    a diverged run gives ``(CAP, DIVERGED, CAP)``.

    >>> from metahpo_lib import meta
    >>> t = meta.make_task(meta.TaskSpec("wine", 3, 80, 0.0, "none", 1.0, 0.0, seed=1))
    >>> val, g, test = meta.hypergradient(t, meta.to_vector(meta.DEFAULT), 0, steps=20)
    >>> g.shape, val < 1.0
    (torch.Size([25]), True)
    """
    x = v.detach().to(task.X_train.dtype).clone().requires_grad_(True)
    with torch.enable_grad():
        loss, params = val_loss(task, x, seed, steps=steps)
        g = torch.autograd.grad(loss, x)[0] if torch.isfinite(loss) else None
    net = network(task, steps)
    test = net.evaluate({k: p.detach() for k, p in params.items()}, {}, task.X_test, task.y_test)[0]
    if g is None or not bool(torch.isfinite(g).all()) or not math.isfinite(test):
        return CAP, DIVERGED.to(v), CAP
    return min(float(loss.detach()), CAP), g.to(v), min(test, CAP)


def evaluate(task: Task, configs: torch.Tensor, seed: int, *, steps: int = STEPS, chunk: int = 100):
    """``(val losses (K,), test losses (K,))`` of K configurations ``(K, 25)`` trained at once
    (``torch.func.vmap``) on the run ``seed``, each capped at :data:`CAP` (a diverged run scores CAP).

    >>> import torch
    >>> from metahpo_lib import meta
    >>> t = meta.make_task(meta.TaskSpec("wine", 3, 80, 0.0, "none", 1.0, 0.0, seed=1))
    >>> val, test = meta.evaluate(t, torch.stack([meta.to_vector(meta.DEFAULT)] * 3), 0, steps=20)
    >>> val.shape, bool(val[0] == val[2])
    (torch.Size([3]), True)
    """
    V.tensor(configs, "configs", ndim=2)
    net = network(task, steps)
    g = V.generator(seed)
    batches = net.draw(g)
    p0 = net.init_params(g)
    vals, tests = [], []
    with torch.no_grad():
        if configs.shape[0] == 1:  # one training: the plain loop (vmap's overhead would double its cost)
            hp = to_hparams(configs[0].to(task.X_train.dtype))
            P = nets.run_all(net, p0, hp, batches)[0]
            vals.append(torch.tensor([net.evaluate(P, hp, task.X_val, task.y_val)[0]]))
            tests.append(torch.tensor([net.evaluate(P, hp, task.X_test, task.y_test)[0]]))
        for H in configs.to(task.X_train.dtype).split(chunk) if configs.shape[0] > 1 else ():
            hp = to_hparams(H)
            P = torch.func.vmap(lambda h: nets.run_all(net, p0, h, batches)[0])(hp)
            vals.append(nets.evaluate_many(net, P, hp, task.X_val, task.y_val)[0])
            tests.append(nets.evaluate_many(net, P, hp, task.X_test, task.y_test)[0])
    fix = lambda x: torch.nan_to_num(torch.cat(x).double(), nan=CAP, posinf=CAP).clamp(max=CAP)
    return fix(vals), fix(tests)


def random_configs(n: int, *, seed: int = 0) -> torch.Tensor:
    """``(n, 25)`` configurations drawn uniformly from :data:`SPACE` (``Float.sample``) with ``seed``.

    >>> from metahpo_lib import meta
    >>> meta.random_configs(4, seed=0).shape
    torch.Size([4, 25])
    """
    rng = random.Random(V.positive_int(seed + 1, "seed") - 1)
    return torch.tensor([[SPACE[k].sample(rng) for k in KEYS] for _ in range(V.positive_int(n, "n"))],
                        dtype=torch.float64)


class TaskProblem:
    """One task on one run ``seed`` as a search problem for ``hpo.run_method``: ``space``
    (:data:`SPACE`), ``objective(config)`` (validation loss of one training) and, with
    ``gradient=True``, ``gradient(config)`` (the hypergradient, computed with the objective in
    one pass). Every evaluation is logged: ``vals``, ``tests``, ``kinds`` (``"train"`` or ``"hypergradient"``).

    >>> from metahpo_lib import hpo, meta
    >>> t = meta.make_task(meta.TaskSpec("wine", 3, 80, 0.0, "none", 1.0, 0.0, seed=1))
    >>> p = meta.TaskProblem(t, 0, steps=20)
    >>> h = hpo.run_method("random", p, 2, seed=0)
    >>> len(p.vals), p.kinds
    (2, ['train', 'train'])
    """

    def __init__(self, task: Task, seed: int, *, gradient: bool = False, steps: int = STEPS):
        network(task, steps)
        self.task, self.seed, self.steps, self.space = task, seed, steps, dict(SPACE)
        self.vals, self.tests, self.kinds, self.configs = [], [], [], []
        self._grad = None
        if gradient:
            self.gradient = self._gradient

    def objective(self, config: dict) -> float:
        """The validation loss of one training with ``config`` (logged with its test loss)."""
        v = to_vector(config, like=self.task.X_train)
        if hasattr(self, "gradient"):
            val, g, test = hypergradient(self.task, v, self.seed, steps=self.steps)
            self._grad, kind = (dict(config), g), "hypergradient"
        else:
            val, test = (float(x[0]) for x in evaluate(self.task, v[None], self.seed, steps=self.steps))
            kind = "train"
        self.vals.append(val), self.tests.append(test), self.kinds.append(kind), self.configs.append(dict(config))
        return val

    def _gradient(self, config: dict) -> dict:
        if self._grad is None or self._grad[0] != config:
            self.objective(config)
        return {k: float(x) for k, x in zip(KEYS, self._grad[1])}
