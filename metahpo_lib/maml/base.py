r"""The learner core of the MAML family (notebook 06): one task, a batch of tasks, the meta-gradient.

A learner holds the meta-parameters (the initialisation :math:`\theta`, and for Meta-SGD the
inner learning rates) as a ``dict[str, Tensor]`` of leaf tensors. It runs ``model`` through
``torch.func.functional_call``; a batch of tasks ``[tasks, shots, ...]`` is processed with
``torch.vmap`` (no Python loop over tasks): parameters get a leading task dimension (a
broadcast view of :math:`\theta`), the model runs on all tasks at once, and one
``torch.autograd.grad`` of the summed task losses gives every task's inner gradient (each
task's loss depends only on its own slice). ``create_graph=True`` keeps the inner steps
differentiable for the second-order meta-gradient. The inner step is
:meth:`metahpo_lib.inner.GD.step`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from .. import _validate as V
from .. import inner
from ..tasks import TaskBatch, check_batch

__all__ = ["MetaLearner", "check_model", "check_learner", "LOSSES"]

Params = dict[str, torch.Tensor]


def _mse(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if pred.shape != y.shape:
        raise ValueError(f"loss='mse': the model's output for one task has shape {tuple(pred.shape)} but the targets "
                         f"have shape {tuple(y.shape)}; give targets shaped like the output (e.g. [tasks, shots, 1])")
    return ((pred - y) ** 2).mean()


#: the built-in task losses, ``(prediction, target) -> scalar`` for one task
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": _mse,
    "cross_entropy": lambda pred, y: F.cross_entropy(pred, y),
}


def _loss_fn(loss) -> tuple[str, Callable]:
    if isinstance(loss, str):
        return V.choice(loss, "loss", set(LOSSES)), LOSSES[loss]
    if not callable(loss):
        raise TypeError(f"loss must be 'mse', 'cross_entropy' or a function (pred, target) -> scalar, "
                        f"got {type(loss).__name__}")
    return getattr(loss, "__name__", "custom"), lambda pred, y: V.scalar_loss(loss(pred, y), "loss")


def check_model(model) -> nn.Module:
    """Return ``model`` if it can be adapted per task in a vmapped functional call, else raise.

    BatchNorm with running statistics updates its buffers in place during every forward pass,
    which is shared state across tasks (and impossible under ``torch.vmap``). Notebook 06.

    >>> from torch import nn
    >>> check_model(nn.Sequential(nn.Linear(1, 8), nn.BatchNorm1d(8)))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: model: 1 (BatchNorm1d) tracks running statistics, ...
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


def check_learner(learner) -> "MetaLearner":
    """Return ``learner`` if it is a :class:`MetaLearner`, else raise ``TypeError`` (notebook 06).

    >>> check_learner("MAML")
    Traceback (most recent call last):
    ...
    TypeError: learner must be a maml.MetaLearner such as maml.MAML(model), got str
    """
    if not isinstance(learner, MetaLearner):
        raise TypeError(f"learner must be a maml.MetaLearner such as maml.MAML(model), got {type(learner).__name__}")
    return learner


def _expand(params: Params, tasks: int) -> Params:
    """Give every tensor a leading task dimension (a broadcast view: gradients sum over tasks)."""
    return {k: v.expand(tasks, *v.shape) for k, v in params.items()}


def _fresh(W: Params) -> Params:
    """Detached copies that require grad (an inner step that is not differentiated)."""
    return {k: v.detach().requires_grad_(True) for k, v in W.items()}


class MetaLearner:
    r"""The machinery every learner of the family shares (notebook 06).

    ``model``: any ``nn.Module`` (its current parameters are copied as the initial
    meta-parameters); ``lr``: the inner step size :math:`\alpha > 0`; ``steps``: inner steps
    during meta-training (an int >= 0); ``loss``: ``"mse"``, ``"cross_entropy"`` or a function
    ``(prediction, target) -> scalar`` for one task; ``first_order``: treat the inner gradients
    as constants (no Hessian-vector products). The meta-objective over a batch of :math:`T` tasks is

    .. math:: \frac1T \sum_i L_{Q_i}(\phi_i), \qquad \phi_i = \text{steps of } \phi \leftarrow \phi - \alpha \nabla L_{S_i}(\phi) \text{ from } \theta.

    A new learner overrides a few of these methods (each takes and returns dicts, no hidden state):

    - ``_inner_setup(meta) -> (start params, inner optimiser)`` (Meta-SGD: a per-entry rate);
    - ``_inner_grads(W, start, x, y, create_graph)``: the direction of an inner step (iMAML: a proximal term);
    - ``_outer_loss(meta, batch)``: the differentiable meta-loss (pretrained baseline: pooled loss);
    - ``_outer_grad(meta, batch) -> (grads, loss)`` (Reptile, iMAML: not the gradient of ``_outer_loss``);
    - the attribute ``adapted_keys``: the parameters the inner loop changes (ANIL: the head).

    Device and dtype follow the meta-parameters (:meth:`to`); a batch on another device or
    dtype is refused with a clear message.

    >>> import torch
    >>> from torch import nn
    >>> from metahpo_lib.maml import MetaLearner
    >>> class Frozen(MetaLearner):      # a new learner: adapt only the bias of the last layer
    ...     def __init__(self, model, **kw):
    ...         super().__init__(model, **kw)
    ...         self.adapted_keys = ["2.bias"]
    >>> learner = Frozen(nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1)), lr=0.1).to(dtype=torch.float64)
    >>> learner.dtype, sorted(learner.meta_parameters())
    (torch.float64, ['0.bias', '0.weight', '2.bias', '2.weight'])
    """

    name = "base"

    def __init__(self, model: nn.Module, *, lr: float = 0.01, steps: int = 1, loss="mse", first_order: bool = False):
        self.model = check_model(model)
        self.loss_name, self.loss_fn = _loss_fn(loss)
        self.lr = V.positive_float(lr, "lr")
        self.steps = V.positive_int(steps, "steps", 0)
        self.first_order = bool(first_order)
        self._meta: Params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
        self.buffers: Params = {k: v.detach().clone() for k, v in model.named_buffers()}
        self.param_keys = list(self._meta)
        self.adapted_keys = list(self._meta)
        self._batched_loss = vmap(self.task_loss, randomness="different")
        self._batched_forward = vmap(self.forward, randomness="different")

    # ---- meta-parameters, device and dtype
    def meta_parameters(self) -> Params:
        """The tensors meta-training updates (leaf tensors with ``requires_grad``), by name."""
        return dict(self._meta)

    @property
    def params(self) -> Params:
        """The initialisation :math:`\\theta`: the model's entries of :meth:`meta_parameters`."""
        return {k: self._meta[k] for k in self.param_keys}

    def to(self, device=None, dtype=None) -> "MetaLearner":
        """Move the meta-parameters (and buffers) to ``device`` / ``dtype``; returns ``self``."""
        def mv(t):
            return t.detach().to(device=device, dtype=dtype if t.is_floating_point() else None)
        self._meta = {k: mv(v).requires_grad_(True) for k, v in self._meta.items()}
        self.buffers = {k: mv(v) for k, v in self.buffers.items()}
        return self

    @property
    def device(self) -> torch.device:
        """Device of the meta-parameters."""
        return next(iter(self._meta.values())).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the meta-parameters."""
        return next(iter(self._meta.values())).dtype

    def __repr__(self) -> str:
        n = sum(v.numel() for v in self.params.values())
        fo = ", first_order=True" if self.first_order else ""
        return (f"{type(self).__name__}({type(self.model).__name__} with {n} parameters, loss={self.loss_name}, "
                f"lr={self.lr:g}, steps={self.steps}{fo}, {self.dtype}, {self.device})")

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

    # ---- the inner loop (override points: _inner_setup, _inner_grads, adapted_keys)
    def _inner_setup(self, meta: Params) -> tuple[Params, inner.InnerOptimizer]:
        """(start of the inner loop, inner optimiser) from the meta-parameters."""
        return {k: meta[k] for k in self.param_keys}, inner.GD(self.lr)

    def _inner_grads(self, W: Params, start: Params, x, y, create_graph: bool) -> Params:
        """Per-task gradients of the support loss w.r.t. the adapted keys of task-batched ``W``."""
        keys = self.adapted_keys
        with torch.enable_grad():
            loss = self._batched_loss(W, x, y).sum()
            gs = torch.autograd.grad(loss, [W[k] for k in keys], create_graph=create_graph,
                                     allow_unused=True, materialize_grads=True)
        return dict(zip(keys, gs))

    def inner_path(self, meta: Params, x, y, steps: int, create_graph: bool = False) -> Iterator[Params]:
        """Yield the task-batched params after 0, 1, ..., ``steps`` inner steps on the support set
        ``(x, y)`` from the meta-parameters ``meta`` (no input checks: :meth:`adapt` is the checked entry).

        >>> from torch import nn
        >>> from metahpo_lib.maml import MAML
        >>> from metahpo_lib.tasks import Sinusoid
        >>> learner, b = MAML(nn.Linear(1, 1)), Sinusoid().sample(3, 5, seed=0)
        >>> len(list(learner.inner_path(learner.meta_parameters(), b.x_support, b.y_support, steps=4)))
        5
        """
        start, opt = self._inner_setup(meta)
        W = _expand(start, x.shape[0])
        W = W if create_graph else _fresh(W)
        state = opt.init({k: W[k] for k in self.adapted_keys})
        yield W
        for t in range(steps):
            g = self._inner_grads(W, start, x, y, create_graph and not self.first_order)
            new, state = opt.step({k: W[k] for k in g}, g, state, {}, t)
            W = {**W, **new} if create_graph else _fresh({**W, **new})
            yield W

    def _adapt(self, meta: Params, x, y, steps: int, create_graph: bool) -> Params:
        for W in self.inner_path(meta, x, y, steps, create_graph):   # keeps only the latest W
            pass
        return W

    # ---- the meta-objective (override points: _outer_loss, _outer_grad)
    def _outer_loss(self, meta: Params, batch: TaskBatch) -> torch.Tensor:
        xs, ys, xq, yq = batch
        W = self._adapt(meta, xs, ys, self.steps, create_graph=True)
        return self._batched_loss(W, xq, yq).mean()

    def _outer_grad(self, meta: Params, batch: TaskBatch) -> tuple[Params, torch.Tensor]:
        leaves = {k: v if v.requires_grad else v.detach().requires_grad_(True) for k, v in meta.items()}
        with torch.enable_grad():
            loss = self._outer_loss(leaves, batch)
            gs = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True, materialize_grads=True)
        return dict(zip(leaves, gs)), loss.detach()

    # ---- public entries: check once, then call the algorithm
    def check_batch(self, batch, name: str = "batch") -> TaskBatch:
        """:func:`metahpo_lib.tasks.check_batch`, plus: on the meta-parameters' device and dtype."""
        batch = check_batch(batch, name)
        if batch.x_support.device != self.device:
            raise ValueError(f"{name} is on {batch.x_support.device} but the meta-parameters are on {self.device}: "
                             f"sample on the same device or call learner.to(device)")
        if batch.x_support.dtype != self.dtype:
            raise TypeError(f"{name} is {batch.x_support.dtype} but the meta-parameters are {self.dtype}: "
                            f"sample with dtype={self.dtype} or call learner.to(dtype={batch.x_support.dtype})")
        return batch

    def _checked_meta(self, meta) -> Params:
        return self.meta_parameters() if meta is None else V.tensor_dict(meta, "meta", self._meta)

    def adapt(self, params: Params | None, support, steps: int | None = None, *, create_graph: bool = False) -> Params:
        """Adapt ``params`` (None: the learned initialisation) to each task of ``support``.

        ``support``: ``(x_support, y_support)`` shaped ``[tasks, shots, ...]`` (or a whole
        :class:`~metahpo_lib.tasks.TaskBatch`); ``steps``: default ``self.steps``. Returns params
        with a leading ``[tasks]`` dimension, detached unless ``create_graph`` (then
        differentiable w.r.t. ``params``).

        >>> import torch
        >>> from torch import nn
        >>> from metahpo_lib.maml import MAML
        >>> from metahpo_lib.tasks import Sinusoid
        >>> learner, b = MAML(nn.Linear(1, 1), lr=0.1), Sinusoid().sample(3, 5, seed=0)
        >>> W = learner.adapt(None, b, steps=2)             # 3 tasks, 2 inner steps each
        >>> W["weight"].shape, learner.predict(W, b.x_query).shape
        (torch.Size([3, 1, 1]), torch.Size([3, 5, 1]))
        """
        steps = self.steps if steps is None else V.positive_int(steps, "steps", 0)
        if not isinstance(support, (tuple, list)) or len(support) not in (2, 4):
            raise TypeError("support must be a pair (x_support, y_support) of tensors [tasks, shots, ...]")
        xs, ys = self.check_batch((*support[:2], *support[:2]), "support")[:2]
        meta = self.meta_parameters()
        if params is not None:
            meta = {**meta, **V.tensor_dict(params, "params", self.params)}
        W = self._adapt(meta, xs, ys, steps, create_graph=create_graph)
        return W if create_graph else {k: v.detach() for k, v in W.items()}

    def meta_loss(self, batch, meta: Params | None = None) -> torch.Tensor:
        """Mean over tasks of the query loss after ``self.steps`` inner steps on the support set
        (differentiable w.r.t. the meta-parameters, or ``meta`` keyed like them).

        >>> import torch
        >>> from torch import nn
        >>> from metahpo_lib.maml import MAML
        >>> from metahpo_lib.tasks import Sinusoid
        >>> learner = MAML(nn.Linear(1, 1))
        >>> learner.meta_loss(Sinusoid().sample(3, 5, seed=0)).requires_grad
        True
        """
        return self._outer_loss(self._checked_meta(meta), self.check_batch(batch))

    def meta_grad(self, batch, meta: Params | None = None) -> tuple[Params, torch.Tensor]:
        """(meta-gradient keyed like :meth:`meta_parameters`, the meta-loss, detached) on ``batch``.

        >>> import torch
        >>> from torch import nn
        >>> from metahpo_lib.maml import MAML
        >>> from metahpo_lib.tasks import Sinusoid
        >>> grads, loss = MAML(nn.Linear(1, 1)).meta_grad(Sinusoid().sample(3, 5, seed=0))
        >>> {k: tuple(g.shape) for k, g in grads.items()}, loss.requires_grad
        ({'weight': (1, 1), 'bias': (1,)}, False)
        """
        return self._outer_grad(self._checked_meta(meta), self.check_batch(batch))
