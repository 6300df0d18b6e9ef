r"""Hypergradient descent (Baydin et al., 2018, "Online learning rate adaptation with
hypergradient descent"), notebook 03.

The learning rate α is itself updated by gradient descent on the training loss, using the
hypergradient of the loss after one step, :math:`\partial f(\theta_t)/\partial\alpha = -\nabla f(\theta_t)\cdot u_{t-1}`
(u the previous update direction); then the parameters are updated with the new α:

- **SGD-HD**:  :math:`\alpha_t = \alpha_{t-1} + \beta\, g_t \cdot g_{t-1}`, then :math:`\theta_t = \theta_{t-1} - \alpha_t g_t`
- **Adam-HD**: :math:`\alpha_t = \alpha_{t-1} + \beta\, g_t \cdot \hat u_{t-1}`, with
  :math:`\hat u = \hat m / (\sqrt{\hat v} + \epsilon)` the previous Adam direction, then
  :math:`\theta_t = \theta_{t-1} - \alpha_t \hat u_t`

(β is ``meta_lr``, the outer step size; the dot product runs over all parameters of a param group; α is one
number per group, kept in ``param_groups[i]["lr"]`` so it can be logged.) Both are ordinary
``torch.optim.Optimizer`` subclasses: ``loss.backward(); opt.step()``. The parameter update
itself is the step of an inner optimiser object (:class:`metahpo_lib.inner.GD` /
:class:`~metahpo_lib.inner.Adam`), whose direction at unit learning rate is :math:`u_t`; any
other :class:`~metahpo_lib.inner.InnerOptimizer` works with :class:`HypergradientDescent`.
"""

from __future__ import annotations

import math

import torch

from . import _validate as V
from . import inner

__all__ = ["HypergradientDescent", "SGDHD", "AdamHD", "fit"]


class HypergradientDescent(torch.optim.Optimizer):
    r"""Any inner optimiser with its learning rate adapted online by hypergradient descent:
    :math:`\alpha_t = \alpha_{t-1} + \beta\, g_t \cdot u_{t-1}`, then :math:`\theta_t = \theta_{t-1} - \alpha_t u_t`,
    with :math:`u_t` the direction ``optimizer`` moves at unit learning rate.

    ``optimizer``: an :class:`~metahpo_lib.inner.InnerOptimizer` whose ``lr`` is a number (the
    initial α); ``meta_lr``: β; ``weight_decay``: L2 added to the gradient.
    ``param_groups[i]["lr"]`` holds the current α.

    >>> import torch
    >>> from metahpo_lib import inner, optim
    >>> w = torch.tensor([1.0, -2.0], requires_grad=True)
    >>> opt = optim.HypergradientDescent([w], inner.GD(lr=0.1), meta_lr=0.01)
    >>> for _ in range(3):
    ...     opt.zero_grad(); (w ** 2).sum().backward(); opt.step()
    >>> round(opt.param_groups[0]["lr"], 4)   # successive gradients aligned: the rate grew
    0.3214
    """

    def __init__(self, params, optimizer: inner.InnerOptimizer, meta_lr: float, weight_decay: float = 0.0):
        if not isinstance(optimizer, inner.InnerOptimizer) or isinstance(optimizer.lr, (str, dict, torch.Tensor)):
            raise TypeError("optimizer must be an inner optimiser object with a number as lr, such as "
                            f"inner.GD(lr=0.01), got {optimizer!r}")
        V.positive_float(meta_lr, "meta_lr", allow_zero=True)
        V.positive_float(weight_decay, "weight_decay", allow_zero=True)
        self.unit = type(optimizer).__new__(type(optimizer))
        self.unit.__dict__.update(vars(optimizer), lr=1.0)   # the same optimiser at unit learning rate
        super().__init__(params, dict(lr=float(optimizer.lr), meta_lr=float(meta_lr), weight_decay=float(weight_decay)))

    def _new_lr(self, group, grads: dict) -> None:
        """α ← α + β Σ_p g_p · u_p (previous directions), once every parameter has one."""
        pairs = [(g, self.state[p]["u"]) for p, g in grads.items() if "u" in self.state[p]]
        if not pairs:
            return
        h = float(sum(g.mul(u).sum() for g, u in pairs))
        lr = group["lr"] + group["meta_lr"] * h
        if not math.isfinite(lr):
            raise ValueError(f"the learning rate became {lr} (hypergradient {h:.3g}): the loss is diverging; "
                             "lower lr or meta_lr")
        group["lr"] = lr

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            wd = group["weight_decay"]
            grads = {p: p.grad + wd * p if wd else p.grad for p in group["params"] if p.grad is not None}
            self._new_lr(group, grads)
            for p, g in grads.items():
                st = self.state[p]
                if "inner" not in st:
                    st["inner"], st["t"] = self.unit.init({"p": p}), 0
                moved, st["inner"] = self.unit.step({"p": p}, {"p": g}, st["inner"], {}, st["t"])
                st["u"], st["t"] = p - moved["p"], st["t"] + 1
                p.sub_(st["u"], alpha=group["lr"])
        return loss


class SGDHD(HypergradientDescent):
    r"""SGD with hypergradient descent on the learning rate (SGD-HD):
    :math:`\alpha_t = \alpha_{t-1} + \beta\, g_t \cdot g_{t-1}`, :math:`\theta_t = \theta_{t-1} - \alpha_t g_t`.

    ``lr``: initial α; ``meta_lr``: β (Baydin et al. use 1e-3 on MNIST).

    >>> import torch
    >>> from metahpo_lib import optim
    >>> w = torch.tensor([1.0, -2.0], requires_grad=True)
    >>> opt = optim.SGDHD([w], lr=0.1, meta_lr=0.01)
    >>> opt.zero_grad(); (w ** 2).sum().backward(); opt.step(); w
    tensor([ 0.8000, -1.6000], requires_grad=True)
    """

    def __init__(self, params, lr: float = 1e-3, meta_lr: float = 1e-3, weight_decay: float = 0.0):
        super().__init__(params, inner.GD(lr=lr), meta_lr, weight_decay)


class AdamHD(HypergradientDescent):
    r"""Adam with hypergradient descent on the learning rate (Adam-HD):
    :math:`\alpha_t = \alpha_{t-1} + \beta\, g_t \cdot \hat u_{t-1}` with :math:`\hat u` Adam's direction.

    ``lr``: initial α; ``meta_lr``: β (Baydin et al. use 1e-7: the dot product with the
    normalised direction is large); ``betas``, ``epsilon`` as :class:`metahpo_lib.inner.Adam`.

    >>> import torch
    >>> from metahpo_lib import optim
    >>> w = torch.tensor([1.0, -2.0], requires_grad=True)
    >>> opt = optim.AdamHD([w], lr=0.1, meta_lr=1e-7)
    >>> opt.zero_grad(); (w ** 2).sum().backward(); opt.step(); w   # Adam's first step: lr * sign(g)
    tensor([ 0.9000, -1.9000], requires_grad=True)
    """

    def __init__(self, params, lr: float = 1e-3, meta_lr: float = 1e-7, betas=(0.9, 0.999), epsilon: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, inner.Adam(lr=lr, betas=betas, epsilon=epsilon), meta_lr, weight_decay)


def fit(model: torch.nn.Module, optimizer: torch.optim.Optimizer, X: torch.Tensor, y: torch.Tensor, *,
        epochs: int = 10, batch_size: int = 32, seed: int | torch.Generator = 0,
        loss_fn=None) -> dict[str, list[float]]:
    """Minibatch training loop (shuffled with ``seed``) used by notebook 03 to compare optimisers.

    Returns ``{"loss": [...], "lr": [...]}``: the minibatch loss before each step and the
    learning rate of the first param group after it (one entry per step).

    >>> import torch
    >>> from metahpo_lib import optim
    >>> torch.manual_seed(0); model = torch.nn.Linear(2, 3)           # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> X, y = torch.randn(40, 2), torch.randint(0, 3, (40,))
    >>> hist = optim.fit(model, optim.SGDHD(model.parameters(), lr=0.1), X, y, epochs=2, batch_size=10)
    >>> len(hist["loss"]), len(hist["lr"])
    (8, 8)
    """
    V.positive_int(epochs, "epochs")
    V.positive_int(batch_size, "batch_size")
    V.tensor(X, "X", ndim=2)
    V.same_rows(X, y, "X", "y")
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    gen = V.generator(seed)
    hist: dict[str, list[float]] = {"loss": [], "lr": []}
    n = X.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(X.device)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = loss_fn(model(X[idx]), y[idx])
            if not torch.isfinite(loss):
                raise ValueError(f"the training loss became {loss.item()} at step {len(hist['loss'])} "
                                 f"(lr = {optimizer.param_groups[0]['lr']:.4g}); lower lr or meta_lr")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            hist["loss"].append(loss.item())
            hist["lr"].append(float(optimizer.param_groups[0]["lr"]))
    return hist
