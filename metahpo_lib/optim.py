r"""Hypergradient descent (Baydin et al., 2018, "Online learning rate adaptation with
hypergradient descent"), notebook 03.

The learning rate α is itself updated by gradient descent on the training loss, using the
hypergradient of the loss after one step, :math:`\partial f(\theta_t)/\partial\alpha = -\nabla f(\theta_t)\cdot u_{t-1}`
(u the previous update direction); then the parameters are updated with the new α:

- **SGD-HD**:  :math:`\alpha_t = \alpha_{t-1} + \beta\, g_t \cdot g_{t-1}`, then :math:`\theta_t = \theta_{t-1} - \alpha_t g_t`
- **Adam-HD**: :math:`\alpha_t = \alpha_{t-1} + \beta\, g_t \cdot \hat u_{t-1}`, with
  :math:`\hat u = \hat m / (\sqrt{\hat v} + \epsilon)` the previous Adam direction, then
  :math:`\theta_t = \theta_{t-1} - \alpha_t \hat u_t`

(β is ``hypergrad_lr``; the dot product runs over all parameters of a param group; α is one
number per group, kept in ``param_groups[i]["lr"]`` so it can be logged.) Both are ordinary
``torch.optim.Optimizer`` subclasses: ``loss.backward(); opt.step()``.
"""

from __future__ import annotations

import math

import torch

from . import _validate as V

__all__ = ["SGDHD", "AdamHD", "fit"]


def _check(lr, hypergrad_lr, weight_decay):
    V.positive_float(lr, "lr")
    V.positive_float(hypergrad_lr, "hypergrad_lr", allow_zero=True)
    V.positive_float(weight_decay, "weight_decay", allow_zero=True)


def _new_lr(group, h) -> float:
    lr = group["lr"] + group["hypergrad_lr"] * float(h)
    if not math.isfinite(lr):
        raise ValueError(f"the learning rate became {lr} (hypergradient {float(h):.3g}): the loss is diverging; "
                         "lower lr or hypergrad_lr")
    return lr


def _grads(group):
    out = []
    for p in group["params"]:
        if p.grad is None:
            out.append(None)
            continue
        if p.grad.is_sparse:
            raise TypeError("SGDHD/AdamHD do not support sparse gradients")
        g = p.grad
        if group["weight_decay"]:
            g = g.add(p, alpha=group["weight_decay"])
        out.append(g)
    return out


def _dot_with_state(state, params, grads, key: str):
    """Sum over parameters of g_p · state[p][key] (None when no parameter has ``key`` yet)."""
    h = None
    for p, g in zip(params, grads):
        if g is not None and key in state[p]:
            d = (g * state[p][key]).sum()
            h = d if h is None else h + d
    return h


class _HDOptimizer(torch.optim.Optimizer):
    """Shared step: α ← α + β g_t · (previous direction, ``state[p][_DIRECTION]``), then
    ``_update`` each parameter with the new α."""

    _DIRECTION = ""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            grads = _grads(group)
            h = _dot_with_state(self.state, group["params"], grads, self._DIRECTION)
            if h is not None:
                group["lr"] = _new_lr(group, h)
            for p, g in zip(group["params"], grads):
                if g is not None:
                    self._update(p, g, group, self.state[p])
        return loss

    def _update(self, p, g, group, st) -> None:
        raise NotImplementedError


class SGDHD(_HDOptimizer):
    r"""SGD with hypergradient descent on the learning rate (SGD-HD).

    ``lr``: initial α₀; ``hypergrad_lr``: β (Baydin et al. use 1e-3 for SGD-HD on MNIST);
    ``weight_decay``: L2 added to the gradient. ``param_groups[i]["lr"]`` holds the current α.
    """

    _DIRECTION = "prev_grad"  # h = g_t · g_{t-1}

    def __init__(self, params, lr: float = 1e-3, hypergrad_lr: float = 1e-3, weight_decay: float = 0.0):
        _check(lr, hypergrad_lr, weight_decay)
        super().__init__(params, dict(lr=float(lr), hypergrad_lr=float(hypergrad_lr),
                                      weight_decay=float(weight_decay)))

    def _update(self, p, g, group, st) -> None:
        st["prev_grad"] = g.clone()
        p.add_(g, alpha=-group["lr"])


class AdamHD(_HDOptimizer):
    r"""Adam with hypergradient descent on the learning rate (Adam-HD).

    ``lr``: initial α₀; ``hypergrad_lr``: β (Baydin et al. use 1e-7 for Adam-HD, since the
    dot product with the normalised direction is large); ``betas``, ``eps`` as ``torch.optim.Adam``.
    ``param_groups[i]["lr"]`` holds the current α.
    """

    _DIRECTION = "prev_dir"  # h = g_t · u_{t-1}

    def __init__(self, params, lr: float = 1e-3, hypergrad_lr: float = 1e-7, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        _check(lr, hypergrad_lr, weight_decay)
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(0 <= float(b) < 1 for b in betas)):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        V.positive_float(eps, "eps")
        super().__init__(params, dict(lr=float(lr), hypergrad_lr=float(hypergrad_lr), betas=tuple(map(float, betas)),
                                      eps=float(eps), weight_decay=float(weight_decay)))

    def _update(self, p, g, group, st) -> None:
        b1, b2 = group["betas"]
        if "step" not in st:
            st["step"] = 0
            st["m"] = torch.zeros_like(p)
            st["v"] = torch.zeros_like(p)
        st["step"] += 1
        t = st["step"]
        st["m"].mul_(b1).add_(g, alpha=1 - b1)
        st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
        u = (st["m"] / (1 - b1 ** t)) / ((st["v"] / (1 - b2 ** t)).sqrt() + group["eps"])
        st["prev_dir"] = u
        p.add_(u, alpha=-group["lr"])


def fit(model: torch.nn.Module, optimizer: torch.optim.Optimizer, X: torch.Tensor, y: torch.Tensor, *,
        epochs: int = 10, batch_size: int = 32, seed: int = 0, loss_fn=None) -> dict[str, list[float]]:
    """Minibatch training loop (shuffled with ``seed``) used by notebook 03 to compare optimisers.

    Returns ``{"loss": [...], "lr": [...]}``: the minibatch loss before each step and the
    learning rate of the first param group after it (one entry per step).
    """
    V.positive_int(epochs, "epochs")
    V.positive_int(batch_size, "batch_size")
    V.tensor(X, "X", ndim=2)
    V.same_rows(X, y, "X", "y")
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    gen = torch.Generator().manual_seed(seed)
    hist: dict[str, list[float]] = {"loss": [], "lr": []}
    n = X.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(X.device)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = loss_fn(model(X[idx]), y[idx])
            if not torch.isfinite(loss):
                raise ValueError(f"the training loss became {loss.item()} at step {len(hist['loss'])} "
                                 f"(lr = {optimizer.param_groups[0]['lr']:.4g}); lower lr or hypergrad_lr")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            hist["loss"].append(loss.item())
            hist["lr"].append(float(optimizer.param_groups[0]["lr"]))
    return hist
