r"""The MAML family (notebook 06): each learner is :class:`~metahpo_lib.maml.base.MetaLearner`
with at most a few methods changed. From :math:`\theta`, ``steps`` inner steps, then:

- :class:`MAML`: :math:`\phi \leftarrow \phi - \alpha \nabla L_S(\phi)`; meta-gradient through the
  inner loop (second order), or :math:`\nabla L_Q(\phi)` with ``first_order=True`` (FOMAML);
- :class:`MetaSGD`: :math:`\phi \leftarrow \phi - \alpha \odot \nabla L_S(\phi)`, :math:`\theta` and :math:`\alpha` meta-learned;
- :class:`ANIL`: only the head is adapted;
- :class:`Reptile`: the pseudo-gradient :math:`\theta - \bar\phi`;
- :class:`IMAML`: :math:`\phi^* \approx \arg\min_\phi L_S(\phi) + \frac\lambda2 \|\phi-\theta\|^2`, meta-gradient
  :math:`(I + \nabla^2 L_S(\phi^*)/\lambda)^{-1} \nabla L_Q(\phi^*)` by a linear solver passed in (``solve``);
- :class:`Pretrained`: no adaptation while training, the gradient of the pooled loss.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.func import vmap

from .. import _validate as V
from .. import inner, linalg
from .base import MetaLearner, Params

__all__ = ["MAML", "MetaSGD", "ANIL", "Reptile", "IMAML", "Pretrained"]


class MAML(MetaLearner):
    r"""MAML (Finn et al. 2017): ``steps`` inner steps :math:`\phi \leftarrow \phi - \alpha \nabla L_S(\phi)`
    from :math:`\theta`, and the meta-gradient through the whole inner loop,
    :math:`\nabla_\theta L_Q(\phi) = (I - \alpha \nabla^2 L_S(\theta))\, \nabla L_Q(\phi)` for one step.

    ``first_order=True`` is first-order MAML (FOMAML): the inner gradients are constants, so
    the meta-gradient is :math:`\frac1T \sum_i \nabla L_{Q_i}(\phi_i)`, the query gradient at the
    adapted weights. Arguments: :class:`~metahpo_lib.maml.base.MetaLearner`. Notebook 06.

    >>> import torch
    >>> from torch import nn
    >>> from metahpo_lib import maml
    >>> from metahpo_lib.tasks import Sinusoid
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    >>> batch = Sinusoid(dtype=torch.float64).sample(5, 10, seed=0)     # 5 tasks, 10 shots each
    >>> grads, loss = maml.MAML(net, lr=0.05).meta_grad(batch)
    >>> sorted(grads), round(float(loss), 4)
    (['0.bias', '0.weight', '2.bias', '2.weight'], 7.4493)
    >>> fo, _ = maml.MAML(net, lr=0.05, first_order=True).meta_grad(batch)   # FOMAML
    >>> torch.allclose(fo["2.weight"], grads["2.weight"])    # the Hessian term matters
    False
    >>> learner = maml.MAML(net, lr=0.05)
    >>> learner.adapt(None, batch, steps=3)["0.weight"].shape          # one adapted copy per task
    torch.Size([5, 16, 1])
    """

    @property
    def name(self) -> str:
        """``"MAML"``, or ``"FOMAML"`` with ``first_order=True``."""
        return "FOMAML" if self.first_order else "MAML"


class MetaSGD(MetaLearner):
    r"""Meta-SGD (Li et al. 2017): a learned learning rate per parameter entry,
    :math:`\phi = \theta - \alpha \odot \nabla L_S(\theta)`; :math:`\theta` and :math:`\alpha` are
    meta-learned together (the inner learning rate becomes a meta-learned hyperparameter).

    ``lr`` is the initial value of every entry of :math:`\alpha`; meta-parameter keys are the
    model's names and ``"lr." + name`` (:attr:`lrs`). The inner step is
    ``inner.GD(lr=dict of rates)``. Notebook 06.

    >>> import torch
    >>> from torch import nn
    >>> from metahpo_lib import maml
    >>> from metahpo_lib.tasks import Sinusoid
    >>> learner = maml.MetaSGD(nn.Linear(1, 1).double(), lr=0.01)
    >>> sorted(learner.meta_parameters())
    ['bias', 'lr.bias', 'lr.weight', 'weight']
    >>> grads, _ = learner.meta_grad(Sinusoid(dtype=torch.float64).sample(4, 5, seed=0))
    >>> grads["lr.weight"].shape
    torch.Size([1, 1])
    """

    name = "Meta-SGD"

    def __init__(self, model: nn.Module, *, lr: float = 0.01, steps: int = 1, loss="mse", first_order: bool = False):
        super().__init__(model, lr=lr, steps=steps, loss=loss, first_order=first_order)
        self._meta.update({"lr." + k: torch.full_like(v, self.lr).detach().requires_grad_(True)
                           for k, v in self.params.items()})

    @property
    def lrs(self) -> Params:
        """The learned inner learning rates :math:`\\alpha`, keyed like :attr:`params`."""
        return {k: self._meta["lr." + k] for k in self.param_keys}

    def _inner_setup(self, meta):
        return {k: meta[k] for k in self.param_keys}, inner.GD({k: meta["lr." + k] for k in self.param_keys})


def _head_keys(model: nn.Module, head, keys: list[str]) -> list[str]:
    """Parameter names under the prefixes ``head`` (default: the last module that owns parameters)."""
    if head is None:
        head = [n for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))][-1:]
    elif isinstance(head, str):
        head = [head]
    found = [k for k in keys if any(h == "" or k == h or k.startswith(h.rstrip(".") + ".") for h in head)]
    if not found:
        raise ValueError(f"head {head!r} matches no parameter; parameter names are {sorted(keys)}")
    return found


class ANIL(MetaLearner):
    r"""ANIL, "almost no inner loop" (Raghu et al. 2020): only the head is adapted in the inner
    loop, :math:`\phi_{head} \leftarrow \phi_{head} - \alpha \nabla_{head} L_S`; the body is
    meta-learned through the second-order meta-gradient. ``head``: parameter-name prefixes of the
    head (default: the last module with parameters); the adapted names are ``adapted_keys``. Notebook 06.

    >>> from torch import nn
    >>> from metahpo_lib import maml
    >>> maml.ANIL(nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1))).adapted_keys
    ['2.weight', '2.bias']
    """

    name = "ANIL"

    def __init__(self, model: nn.Module, *, lr: float = 0.01, steps: int = 1, loss="mse", first_order: bool = False,
                 head=None):
        super().__init__(model, lr=lr, steps=steps, loss=loss, first_order=first_order)
        self.adapted_keys = _head_keys(model, head, self.param_keys)


class Reptile(MetaLearner):
    r"""Reptile (Nichol et al. 2018): adapt with ``steps`` SGD steps on the support set, then move
    :math:`\theta` towards the adapted weights. ``meta_grad`` returns the pseudo-gradient
    :math:`\theta - \frac1T \sum_i \phi_i` (an optimiser step on it is the Reptile update; with
    plain SGD at rate :math:`\epsilon`: :math:`\theta \leftarrow \theta + \epsilon(\bar\phi - \theta)`)
    and the query loss after adaptation. With ``steps=1`` it is training on all tasks pooled;
    use several steps. Notebook 06.

    >>> import torch
    >>> from torch import nn
    >>> from metahpo_lib import maml
    >>> from metahpo_lib.tasks import Sinusoid
    >>> learner = maml.Reptile(nn.Linear(1, 1).double(), lr=0.1, steps=5)
    >>> step, _ = learner.meta_grad(Sinusoid(dtype=torch.float64).sample(4, 5, seed=0))
    >>> step["weight"].shape
    torch.Size([1, 1])
    """

    name = "Reptile"

    def __init__(self, model: nn.Module, *, lr: float = 0.01, steps: int = 5, loss="mse"):
        super().__init__(model, lr=lr, steps=steps, loss=loss, first_order=True)

    def _outer_grad(self, meta, batch):
        xs, ys, xq, yq = batch
        theta = {k: v.detach() for k, v in meta.items()}
        W = self._adapt(theta, xs, ys, self.steps, create_graph=False)
        with torch.no_grad():
            loss = self._batched_loss(W, xq, yq).mean()
        return {k: theta[k] - W[k].detach().mean(0) for k in theta}, loss


class IMAML(MetaLearner):
    r"""Implicit MAML (Rajeswaran et al. 2019). Inner problem (proximal), for each task:
    :math:`\phi^* = \arg\min_\phi L_S(\phi) + \tfrac{\lambda}{2}\|\phi - \theta\|^2`, approximated by
    ``steps`` gradient steps of size ``lr`` from :math:`\theta`. Meta-gradient by the implicit
    function theorem (notebook 04), averaged over tasks:

    .. math:: g_i = (I + \nabla^2 L_{S_i}(\phi_i^*)/\lambda)^{-1}\, \nabla L_{Q_i}(\phi_i^*).

    The systems of all tasks are solved together (block-diagonal) by ``solve(matvec, b) ->
    linalg.SolveResult``, default ``functools.partial(linalg.cg, iters=5, on_failure="warn")``:
    truncated CG, which stops at the last good iterate and warns when the matrix is indefinite
    (:math:`\phi^*` far from a minimum). The last report is kept in ``last_solve``. No graph is
    kept through the inner loop, so memory does not grow with ``steps``. ``meta_loss`` is the
    query loss at :math:`\phi^*` (for monitoring, not differentiable). Notebook 06.

    >>> import functools, torch
    >>> from torch import nn
    >>> from metahpo_lib import linalg, maml
    >>> from metahpo_lib.tasks import Sinusoid
    >>> solve = functools.partial(linalg.cg, iters=50, tol=1e-12)
    >>> learner = maml.IMAML(nn.Linear(1, 1).double(), lr=0.1, steps=100, lam=1.0, solve=solve)
    >>> grads, _ = learner.meta_grad(Sinusoid(dtype=torch.float64).sample(4, 5, seed=0))
    >>> learner.last_solve.converged
    True
    """

    name = "iMAML"

    def __init__(self, model: nn.Module, *, lr: float = 0.01, steps: int = 10, lam: float = 1.0, solve=None,
                 loss="mse"):
        super().__init__(model, lr=lr, steps=steps, loss=loss)
        self.lam = V.positive_float(lam, "lam")
        self.solve = functools.partial(linalg.cg, iters=5, on_failure="warn") if solve is None else solve
        if not callable(self.solve):
            raise TypeError(f"solve must be a function (matvec, b) -> linalg.SolveResult, got {type(solve).__name__}")
        self.last_solve = None

    def _inner_grads(self, W, start, x, y, create_graph):
        g = super()._inner_grads(W, start, x, y, create_graph)
        return {k: g[k] + self.lam * (W[k] - start[k]) for k in g}

    def _outer_loss(self, meta, batch):
        xs, ys, xq, yq = batch
        W = self._adapt(meta, xs, ys, self.steps, create_graph=False)
        with torch.no_grad():
            return self._batched_loss(W, xq, yq).mean()

    def _outer_grad(self, meta, batch):
        xs, ys, xq, yq = batch
        W = self._adapt({k: v.detach() for k, v in meta.items()}, xs, ys, self.steps, create_graph=False)
        with torch.enable_grad():
            lq = self._batched_loss(W, xq, yq)
            gq = torch.autograd.grad(lq.sum(), list(W.values()), allow_unused=True, materialize_grads=True)
        hvp = linalg.hvp(lambda p: self._batched_loss(p, xs, ys).sum(), W)   # block-diagonal over tasks
        sol = self.solve(lambda v: {k: v[k] + hv / self.lam for k, hv in hvp(v).items()}, dict(zip(W, gq)))
        if not hasattr(sol, "x"):
            raise TypeError(f"solve must return a linalg.SolveResult (with .x), got {type(sol).__name__}")
        self.last_solve = sol
        return {k: sol.x[k].detach().mean(0) for k in W}, lq.detach().mean()


class Pretrained(MetaLearner):
    r"""Baseline: one network trained on all tasks pooled (support and query points together,
    no adaptation during training: the meta-loss is :math:`\frac1T\sum_i L_{S_i \cup Q_i}(\theta)`),
    then fine-tuned with SGD steps of size ``lr`` on each test task's support set (Finn et al.
    2017's "pretrained" baseline). Notebook 06.

    >>> import torch
    >>> from torch import nn
    >>> from metahpo_lib import maml
    >>> from metahpo_lib.tasks import Sinusoid
    >>> grads, loss = maml.Pretrained(nn.Linear(1, 1).double()).meta_grad(Sinusoid(dtype=torch.float64).sample(4, 5, seed=0))
    >>> sorted(grads)
    ['bias', 'weight']
    """

    name = "pretrained"

    def _outer_loss(self, meta, batch):
        xs, ys, xq, yq = batch
        pooled = vmap(self.task_loss, in_dims=(None, 0, 0), randomness="different")
        return pooled({k: meta[k] for k in self.param_keys}, torch.cat([xs, xq], 1), torch.cat([ys, yq], 1)).mean()
