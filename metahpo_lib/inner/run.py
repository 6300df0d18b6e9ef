r"""T steps of an inner optimiser on ``problem.inner_loss`` (notebook 03).

:func:`run` applies ``steps`` steps of an :class:`~metahpo_lib.inner.InnerOptimizer` from
``problem.init_params()`` (or given ``params``); :func:`unroll` continues from any step and
state (``hypergrad.unrolled`` uses it for its untracked prefix and its differentiated part).
Every step is a differentiable torch expression, so the final params depend on the
hyperparameters through the whole trajectory.

A loop that diverges raises :class:`DivergenceError` naming the step: a NaN or infinite loss,
or a loss that grew by more than :data:`DIVERGENCE_FACTOR` over its starting value (a
learning rate above the stability limit blows up long before it reaches inf).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from tqdm.auto import tqdm

from .. import _validate as V
from ..problems import Bilevel
from .optimizers import InnerOptimizer

TensorDict = dict[str, torch.Tensor]

__all__ = ["DivergenceError", "DIVERGENCE_FACTOR", "check_losses", "check_optimizer", "start_params", "unroll", "run",
           "with_optimizer_hparams"]

#: a loss above ``DIVERGENCE_FACTOR * max(|first loss|, 1)`` counts as diverged
DIVERGENCE_FACTOR = 1e6


class DivergenceError(ValueError):
    """An inner or outer loop diverged: its loss became NaN / inf or grew by orders of magnitude.

    >>> from metahpo_lib import inner
    >>> issubclass(inner.DivergenceError, ValueError)
    True
    """


def check_losses(losses: list, *, start: int = 0, optimizer=None) -> None:
    """Raise :class:`DivergenceError` if a loss in ``losses`` (steps ``start``, ``start + 1``, ...)
    is not finite or exceeds ``DIVERGENCE_FACTOR * max(|losses[0]|, 1)``.

    >>> import torch
    >>> from metahpo_lib import inner
    >>> inner.check_losses([torch.tensor(1.0), torch.tensor(0.5)])   # fine: returns None
    >>> inner.check_losses([torch.tensor(1.0), torch.tensor(3e7)])
    Traceback (most recent call last):
    ...
    metahpo_lib.inner.run.DivergenceError: the inner loop diverged: the inner loss is 3e+07 at step 1 (it started at 1); use a smaller learning rate
    """
    if not losses:
        return
    ls = torch.stack([torch.as_tensor(x).detach().reshape(()) for x in losses]).double().cpu()
    bad = ~torch.isfinite(ls) | (ls > DIVERGENCE_FACTOR * max(abs(float(ls[0])), 1.0))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        how = f" ({optimizer!r})" if optimizer is not None else ""
        raise DivergenceError(f"the inner loop{how} diverged: the inner loss is {float(ls[i]):.3g} at step "
                              f"{start + i} (it started at {float(ls[0]):.3g}); use a smaller learning rate")


def _grad(problem, params: TensorDict, hparams: TensorDict, create_graph: bool):
    """(grads, loss) of the inner loss; keeps the graph to params and hparams when asked."""
    with torch.enable_grad():
        ps = {k: p if p.requires_grad else p.detach().requires_grad_(True) for k, p in params.items()}
        loss = problem.inner_loss(ps, hparams)
        gs = torch.autograd.grad(loss, list(ps.values()), create_graph=create_graph, materialize_grads=True)
    return dict(zip(ps, gs if create_graph else [g.detach() for g in gs])), loss.detach()


def unroll(problem, hparams: TensorDict, optimizer: InnerOptimizer, params: TensorDict, state: TensorDict, *,
           start: int, steps: int, differentiable: bool, progress: bool = False, check_every: int = 50):
    """``steps`` optimiser steps from global step ``start`` and ``state``: ``(params, state, losses)``.

    With ``differentiable=False`` nothing keeps a graph (the state included). Arguments are not
    checked here: call it after :func:`run`'s checks (``hypergrad.unrolled`` does).

    >>> import torch
    >>> from metahpo_lib import data, inner, problems
    >>> s = data.load("diabetes", seed=0)
    >>> p = problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val)
    >>> opt = inner.GD(lr=0.2)
    >>> w, state, losses = inner.unroll(p, p.init_hparams(), opt, p.init_params(), opt.init({}), start=0,
    ...                                 steps=3, differentiable=False)
    >>> [round(float(x), 4) for x in losses]
    [0.5, 0.3411, 0.3273]
    """
    losses = []
    for t in tqdm(range(start, start + steps), desc=type(optimizer).__name__, disable=not progress, leave=False):
        grads, loss = _grad(problem, params, hparams, differentiable)
        losses.append(loss)
        with torch.enable_grad() if differentiable else torch.no_grad():
            params, state = optimizer.step(params, grads, state, hparams, t)
        if (t - start + 1) % check_every == 0:
            check_losses(losses, start=start, optimizer=optimizer)
    check_losses(losses, start=start, optimizer=optimizer)
    if not all(bool(torch.isfinite(p).all()) for p in params.values()):
        raise DivergenceError(f"the inner loop ({optimizer!r}) diverged: params became NaN/inf at the last step "
                              f"{start + steps}; use a smaller learning rate")
    return params, state, losses


def check_optimizer(optimizer, hparams: TensorDict, steps: int) -> None:
    """Raise a clear error unless ``optimizer`` is an inner optimiser that can run ``steps`` steps
    with ``hparams`` (the entries it reads exist, a schedule has one entry per step).

    >>> import torch
    >>> from metahpo_lib import inner
    >>> inner.check_optimizer(inner.GD(lr="log_lr"), {"log_lr": torch.zeros(3)}, steps=3)   # fine
    >>> inner.check_optimizer("sgd", {}, steps=3)
    Traceback (most recent call last):
    ...
    TypeError: optimizer must be an inner optimiser object such as metahpo_lib.inner.GD(lr=0.1), ...
    """
    if not isinstance(optimizer, InnerOptimizer):
        raise TypeError("optimizer must be an inner optimiser object such as metahpo_lib.inner.GD(lr=0.1), "
                        f"Momentum(...) or Adam(...), got {type(optimizer).__name__}")
    optimizer.check(hparams, steps)


def start_params(problem, params) -> TensorDict:
    """``problem.init_params()`` when ``params`` is None, else ``params`` checked against it.

    >>> from metahpo_lib import data, inner, problems
    >>> s = data.load("diabetes", seed=0)
    >>> p = problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val)
    >>> inner.start_params(p, None)["w"].shape
    torch.Size([10])
    """
    return problem.init_params() if params is None else problem.check_params(params)


def run(problem, hparams, optimizer: InnerOptimizer, *, steps: int, params=None, differentiable: bool | None = None,
        return_losses: bool = False, progress: bool = False):
    r"""Run ``steps`` steps of ``optimizer`` on ``problem.inner_loss(·, hparams)``; return the final params.

    ``params``: start here instead of ``problem.init_params()`` (its graph, if any, is kept).
    ``differentiable``: keep the graph so that the result can be differentiated w.r.t. ``hparams``
    (default: when an entry of hparams, a tensor learning rate or the given ``params`` requires
    grad). ``return_losses``: also return the ``(steps,)`` tensor of :math:`L_{in}(\theta_t, \lambda)`,
    t < steps. Raises :class:`DivergenceError` naming the step where the loop diverged.

    >>> from metahpo_lib import data, inner, problems
    >>> s = data.load("diabetes", seed=0)
    >>> p = problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val)
    >>> w = inner.run(p, p.init_hparams(), inner.GD(lr=0.2), steps=300)   # 0.2 < 2 / lambda_max = 0.37
    >>> float((w["w"] - p.solve_inner(p.init_hparams())["w"]).abs().max()) < 1e-12
    True
    """
    if not isinstance(problem, Bilevel):
        raise TypeError(f"problem must be a metahpo_lib.problems.Bilevel, got {type(problem).__name__}")
    hparams = problem.check_hparams(hparams)
    V.positive_int(steps, "steps")
    check_optimizer(optimizer, hparams, steps)
    p0 = start_params(problem, params)
    lr = optimizer.lr
    needs_grad = (any(h.requires_grad for h in hparams.values())
                  or (isinstance(lr, torch.Tensor) and lr.requires_grad)
                  or (params is not None and any(p.requires_grad for p in p0.values())))
    if differentiable and not needs_grad:
        raise ValueError("differentiable=True but no entry of hparams (nor lr, nor the given params) requires grad; "
                         "prepare them with metahpo_lib.hypergrad.prepare_hparams(problem, hparams)")
    out, _, losses = unroll(problem, hparams, optimizer, p0, optimizer.init(p0), start=0, steps=steps,
                            differentiable=needs_grad if differentiable is None else bool(differentiable),
                            progress=progress)
    return (out, torch.stack(losses)) if return_losses else out


def with_optimizer_hparams(problem, *, lr: float | None = None, momentum: float | None = None,
                           schedule: int | None = None) -> Bilevel:
    r"""A copy of ``problem`` whose ``init_hparams()`` also holds ``"log_lr" = log(lr)`` and/or
    ``"logit_momentum" = logit(momentum)``; pass ``inner.GD(lr="log_lr")`` (or
    ``Momentum(lr=..., momentum="logit_momentum")``) so that the optimiser reads them, and every
    hypergradient method differentiates w.r.t. them. ``schedule=T``: ``log_lr`` is a ``(T,)``
    per-step schedule. The losses and ``solve_inner`` ignore the new keys.

    >>> from metahpo_lib import data, inner, problems
    >>> s = data.load("diabetes", seed=0)
    >>> p = inner.with_optimizer_hparams(problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val), lr=0.1, schedule=5)
    >>> {k: tuple(v.shape) for k, v in p.init_hparams().items()}
    {'log_alpha': (), 'log_lr': (5,)}
    """
    if not isinstance(problem, Bilevel):
        raise TypeError(f"problem must be a metahpo_lib.problems.Bilevel, got {type(problem).__name__}")
    if lr is None and momentum is None:
        raise ValueError("give lr and/or momentum (the initial values of the new hyperparameters)")
    extra = {}
    if lr is not None:
        extra["log_lr"] = math.log(V.positive_float(lr, "lr"))
    if momentum is not None:
        m = V.unit_interval(momentum, "momentum", closed_low=False)
        extra["logit_momentum"] = math.log(m / (1 - m))
    if schedule is not None and (V.positive_int(schedule, "schedule") and lr is None):
        raise ValueError("schedule needs lr (the initial value of every step's learning rate)")
    clash = sorted(set(extra) & set(problem.init_hparams()))
    if clash:
        raise ValueError(f"problem already has hyperparameters {clash}")
    base = problem.init_hparams

    def init_hparams():
        h = base()
        ref = next(iter(h.values())) if h else next(iter(problem.init_params().values()))
        new = {k: torch.tensor(v, dtype=ref.dtype, device=ref.device) for k, v in extra.items()}
        if schedule is not None:
            new["log_lr"] = new["log_lr"].expand(schedule).clone()
        return {**h, **new}

    return dataclasses.replace(problem, init_hparams=init_hparams, name=f"{problem.name}+{'+'.join(extra)}")
