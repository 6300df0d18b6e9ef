r"""Unrolled hypergradients: differentiate through T steps of an inner optimiser (notebook 03).

With :math:`\theta_{t+1} = \Phi_t(\theta_t, \lambda)` (one step of :mod:`metahpo_lib.inner`) and
:math:`f(\lambda) = L_{val}(\theta_T, \lambda)`, the chain rule gives the recursion

.. math:: Z_{t+1} = A_t Z_t + B_t, \qquad Z_t = \frac{d\theta_t}{d\lambda},\ A_t = \frac{\partial\Phi_t}{\partial\theta},\
          B_t = \frac{\partial\Phi_t}{\partial\lambda}, \qquad
          \frac{df}{d\lambda} = \frac{\partial L_{val}}{\partial\theta_T} Z_T + \frac{\partial L_{val}}{\partial\lambda}.

(for gradient descent :math:`A_t = I - \eta \nabla^2_\theta L_{in}`, :math:`B_t = -\eta \nabla^2_{\theta\lambda} L_{in}`.)

- ``mode="reverse"``: keep the graph of all T steps and backpropagate once (memory O(T·|θ|),
  one pass whatever the number of hyperparameters).
- ``mode="forward"``: carry the tangents :math:`Z_t v` along with :math:`\theta_t` using
  ``torch.func.jvp`` of each step (``torch.func.vmap`` over ``batch`` directions at a time),
  one pass per batch of hyperparameter directions; memory independent of T
  (O(batch·|θ|)), time ∝ number of hyperparameters.
- ``truncate=K``: only the last K steps are differentiated (the first T−K run without a graph):
  cheaper, biased (the bias shrinks as K grows).

θ comes from T steps of :func:`metahpo_lib.inner.run` (``optimizer``, ``lr``, ``momentum``, ...
as there; ``hparams["log_lr"]`` / ``["logit_momentum"]`` make them hyperparameters, see
:func:`metahpo_lib.inner.with_optimizer_hparams`). Returns a
:class:`~metahpo_lib.hypergrad._common.HypergradResult`: a dict like ``hparams``
with ``.info`` (mode, steps, truncate, passes, the outer loss).
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from .. import _validate as V
from .. import inner as _inner
from ._common import prepare_hparams, total_derivative
from ._common import HypergradResult

MODES = ("reverse", "forward")


def _check_truncate(truncate, steps: int) -> int:
    if truncate is None:
        return steps
    V.positive_int(truncate, "truncate")
    if truncate > steps:
        raise ValueError(f"truncate must be <= steps ({steps}), got {truncate}")
    return truncate


def unrolled(problem, hparams, *, steps: int, lr=None, optimizer: str = "gd", mode: str = "reverse",
             truncate: int | None = None, params=None, momentum: float | None = None, betas=(0.9, 0.999),
             eps: float = 1e-8, batch: int | None = None, progress: bool = False) -> HypergradResult:
    r"""Hypergradient :math:`d L_{val}(\theta_T(\lambda), \lambda)/d\lambda` through ``steps`` inner steps.

    ``mode``: ``"reverse"`` or ``"forward"``; ``truncate``: differentiate only the last K steps
    (``None``: all); ``batch``: forward mode propagates this many tangent directions per pass
    (default all hyperparameters in one pass). Other options as :func:`metahpo_lib.inner.run`.
    """
    hp = prepare_hparams(problem, hparams)
    V.choice(mode, "mode", MODES)
    cfg = _inner._config(hp, steps=steps, lr=lr, optimizer=optimizer, momentum=momentum, betas=betas, eps=eps)
    K = _check_truncate(truncate, steps)
    p0 = _inner._start_params(problem, params)
    s0 = _inner._init_state(cfg, p0)
    start = steps - K
    if start > 0:  # the untracked prefix: no graph, no tangents
        p0, s0, _ = _inner._unroll(problem, hp, p0, s0, cfg, start=0, steps=start, differentiable=False,
                                   progress=progress)
    if mode == "reverse":
        grads, value, passes = _reverse(problem, hp, p0, s0, cfg, start, K, progress)
    else:
        if batch is not None:
            V.positive_int(batch, "batch")
        grads, value, passes = _forward(problem, hp, p0, s0, cfg, start, K, batch, progress)
    return HypergradResult(grads, {"method": "unrolled", "mode": mode, "optimizer": optimizer, "steps": steps,
                                   "truncate": K, "passes": passes, "outer_loss": float(value)})


def _reverse(problem, hp, p0, s0, cfg, start, K, progress):
    p, _, _ = _inner._unroll(problem, hp, p0, s0, cfg, start=start, steps=K, differentiable=True, progress=progress)
    with torch.enable_grad():
        value = problem.outer_loss(p, hp)
        grads = total_derivative(value, hp)
    return grads, value.detach(), 1


def _forward(problem, hp, p0, s0, cfg, start, K, batch, progress):
    hp = {k: v.detach() for k, v in hp.items()}
    p0 = {k: v.detach() for k, v in p0.items()}
    s0 = {k: v.detach() for k, v in s0.items()}
    keys = list(hp)
    sizes = [hp[k].numel() for k in keys]
    n = sum(sizes)
    ref = hp[keys[0]]
    B = n if batch is None else min(batch, n)
    grad_and_value = torch.func.grad_and_value(problem.inner_loss)

    def step(t):
        def f(params, state, h):
            g, loss = grad_and_value(params, h)
            return _inner._update(cfg, params, state, g, h, t), loss
        return f

    flat = torch.empty(n, dtype=ref.dtype, device=ref.device)
    value = None
    passes = math.ceil(n / B)
    for c in range(passes):
        lo, hi = c * B, min(n, (c + 1) * B)
        eye = torch.eye(n, dtype=ref.dtype, device=ref.device)[lo:hi]          # (b, n) directions
        dh, i = {}, 0
        for k, s in zip(keys, sizes):
            dh[k] = eye[:, i:i + s].reshape(hi - lo, *hp[k].shape)
            i += s
        dp = {k: torch.zeros((hi - lo, *v.shape), dtype=v.dtype, device=v.device) for k, v in p0.items()}
        ds = {k: torch.zeros((hi - lo, *v.shape), dtype=v.dtype, device=v.device) for k, v in s0.items()}
        p, s, losses = p0, s0, []
        it = range(start, start + K)
        for t in tqdm(it, desc=f"forward pass {c + 1}/{passes}", disable=not progress, leave=False):
            f = step(t)
            push = torch.func.vmap(lambda a, b, d: torch.func.jvp(f, (p, s, hp), (a, b, d), has_aux=True),
                                   out_dims=(None, 0, None))
            (p, s), (dp, ds), loss = push(dp, ds, dh)
            losses.append(loss.detach())
            if (t - start + 1) % 50 == 0:
                _inner._raise_if_diverged(losses, start, cfg)
        _inner._raise_if_diverged(losses, start, cfg, p)
        outer = torch.func.vmap(lambda a, d: torch.func.jvp(problem.outer_loss, (p, hp), (a, d)),
                                out_dims=(None, 0))
        value, dvals = outer(dp, dh)
        flat[lo:hi] = dvals
    grads, i = {}, 0
    for k, s in zip(keys, sizes):
        grads[k] = flat[i:i + s].view_as(hp[k]).clone()
        i += s
    return grads, value, passes
