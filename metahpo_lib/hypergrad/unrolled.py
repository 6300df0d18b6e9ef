r"""Unrolled hypergradients: differentiate through T steps of an inner optimiser (notebook 03).

With :math:`\theta_{t+1} = \Phi_t(\theta_t, \lambda)` (one step of an inner optimiser) and
:math:`f(\lambda) = L_{val}(\theta_T, \lambda)`, the chain rule gives

.. math:: Z_{t+1} = A_t Z_t + B_t, \qquad Z_t = \frac{d\theta_t}{d\lambda},\ A_t = \frac{\partial\Phi_t}{\partial\theta},\
          B_t = \frac{\partial\Phi_t}{\partial\lambda}, \qquad
          \frac{df}{d\lambda} = \frac{\partial L_{val}}{\partial\theta_T} Z_T + \frac{\partial L_{val}}{\partial\lambda}

(for gradient descent :math:`A_t = I - \eta \nabla^2_\theta L_{in}`, :math:`B_t = -\eta \nabla^2_{\theta\lambda} L_{in}`).

- ``mode="reverse"``: keep the graph of the T steps and backpropagate once (memory O(T·dim θ),
  one pass whatever the number of hyperparameters).
- ``mode="forward"``: carry the tangents :math:`Z_t v` along with :math:`\theta_t`
  (``torch.func.jvp`` of each step, ``torch.func.vmap`` over ``batch`` directions at a time);
  memory independent of T, time ∝ number of hyperparameters.
- ``truncate=K``: only the last K steps are differentiated (the first T−K run without a
  graph): cheaper, biased (the bias shrinks as K grows).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .. import _validate as V
from .. import inner
from ._common import HypergradResult, prepare_hparams, total_derivative

MODES = ("reverse", "forward")


def unrolled(problem, hparams, optimizer: inner.InnerOptimizer, *, steps: int, mode: str = "reverse",
             truncate: int | None = None, params=None, batch: int | None = None,
             progress: bool = False) -> HypergradResult:
    r"""Hypergradient :math:`d L_{val}(\theta_T(\lambda), \lambda)/d\lambda` through ``steps`` steps of ``optimizer``.

    ``optimizer``: an inner optimiser object (``inner.GD(lr=0.1)``, ``inner.Momentum(...)``,
    ``inner.Adam(...)``; its learning rate may be an hparams entry, see :mod:`metahpo_lib.inner`).
    ``mode``: ``"reverse"`` or ``"forward"``; ``truncate=K``: differentiate only the last K
    steps; ``params``: start there instead of ``problem.init_params()``; ``batch``: forward mode
    propagates this many hyperparameter directions per pass (default: all in one pass).
    ``.info``: mode, steps, truncate, passes and the outer loss.

    >>> from metahpo_lib import data, hypergrad, inner, problems
    >>> s = data.load("diabetes", seed=0)
    >>> p = problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val)
    >>> g = hypergrad.unrolled(p, p.init_hparams(), inner.GD(lr=0.2), steps=300)
    >>> round(float(g["log_alpha"]), 4), round(float(hypergrad.exact(p, p.init_hparams())["log_alpha"]), 4)
    (0.0408, 0.0408)
    """
    hp = prepare_hparams(problem, hparams)
    V.choice(mode, "mode", MODES)
    V.positive_int(steps, "steps")
    inner.check_optimizer(optimizer, hp, steps)
    K = steps if truncate is None else V.positive_int(truncate, "truncate")
    if K > steps:
        raise ValueError(f"truncate must be <= steps ({steps}), got {truncate}")
    if batch is not None:
        V.positive_int(batch, "batch")
    p0 = inner.start_params(problem, params)
    s0 = optimizer.init(p0)
    start = steps - K
    if start > 0:  # the untracked prefix: no graph, no tangents
        p0, s0, _ = inner.unroll(problem, hp, optimizer, p0, s0, start=0, steps=start, differentiable=False,
                                 progress=progress)
    run = _reverse if mode == "reverse" else _forward
    grads, value, passes = run(problem, hp, optimizer, p0, s0, start, K, batch, progress)
    return HypergradResult(grads, {"method": "unrolled", "mode": mode, "optimizer": repr(optimizer), "steps": steps,
                                   "truncate": K, "passes": passes, "outer_loss": float(value)})


def _reverse(problem, hp, optimizer, p0, s0, start, K, batch, progress):
    p, _, _ = inner.unroll(problem, hp, optimizer, p0, s0, start=start, steps=K, differentiable=True,
                           progress=progress)
    with torch.enable_grad():
        value = problem.outer_loss(p, hp)
        return total_derivative(value, hp), value.detach(), 1


def _directions(hp: dict, lo: int, hi: int) -> dict:
    """Unit tangent directions lo..hi-1 of the flattened hparams, shaped like hparams (leading batch)."""
    ref = next(iter(hp.values()))
    n = sum(v.numel() for v in hp.values())
    eye = torch.eye(n, dtype=ref.dtype, device=ref.device)[lo:hi]
    out, i = {}, 0
    for k, v in hp.items():
        out[k] = eye[:, i:i + v.numel()].reshape(hi - lo, *v.shape)
        i += v.numel()
    return out


def _forward(problem, hp, optimizer, p0, s0, start, K, batch, progress):
    hp = {k: v.detach() for k, v in hp.items()}
    p0, s0 = ({k: v.detach() for k, v in d.items()} for d in (p0, s0))
    n = sum(v.numel() for v in hp.values())
    B = n if batch is None else min(batch, n)
    grad_and_value = torch.func.grad_and_value(problem.inner_loss)
    flat, passes = torch.empty(n, dtype=next(iter(hp.values())).dtype, device=next(iter(hp.values())).device), 0
    for lo in range(0, n, B):
        passes += 1
        hi = min(n, lo + B)
        dh = _directions(hp, lo, hi)
        dp, ds = ({k: torch.zeros((hi - lo, *v.shape), dtype=v.dtype, device=v.device) for k, v in d.items()}
                  for d in (p0, s0))
        p, s, losses = p0, s0, []
        for t in tqdm(range(start, start + K), desc=f"forward pass {passes}", disable=not progress, leave=False):
            def step(params, state, h, t=t):
                g, loss = grad_and_value(params, h)
                return optimizer.step(params, g, state, h, t), loss
            push = torch.func.vmap(lambda a, b, d: torch.func.jvp(step, (p, s, hp), (a, b, d), has_aux=True),
                                   out_dims=(None, 0, None))
            (p, s), (dp, ds), loss = push(dp, ds, dh)
            losses.append(loss)
            if (t - start + 1) % 50 == 0:
                inner.check_losses(losses, start=start, optimizer=optimizer)
        inner.check_losses(losses, start=start, optimizer=optimizer)
        outer = torch.func.vmap(lambda a, d: torch.func.jvp(problem.outer_loss, (p, hp), (a, d)), out_dims=(None, 0))
        value, flat[lo:hi] = outer(dp, dh)
    grads, i = {}, 0
    for k, v in hp.items():
        grads[k] = flat[i:i + v.numel()].view_as(v).clone()
        i += v.numel()
    return grads, value, passes

