r"""Minibatch training of a :class:`~metahpo_lib.nets.NetProblem`, and its hypergradient (notebook 05).

One pure loop, used by :func:`train` (one run), :func:`unrolled` (reverse mode through it),
:func:`seed_hypergradients` (S runs at once, ``torch.func.vmap`` of ``torch.func.grad``) and
:func:`~metahpo_lib.nets.train_many`. Each step takes the gradient of the minibatch loss with
``torch.func.grad_and_value`` and applies the problem's inner optimiser object
(``net.optimizer.step(params, grads, state, hparams, t)``), so autograd and ``vmap`` both pass
through it. A seed fixes the randomness of a run: the minibatch order and dropout noise
(:meth:`~metahpo_lib.nets.NetProblem.draw`), then the initialisation.

With ``truncate=K`` only the last K steps are differentiated: the short-horizon bias of
truncated unrolling (Wu et al., 2018) shows on the learning rate.
"""

from __future__ import annotations

import torch

from .. import _validate as V
from .. import inner
from ..hypergrad import HypergradResult, total_derivative
from .problem import Batches, NetProblem

TensorDict = dict[str, torch.Tensor]

__all__ = ["check_net", "check_hparams", "run_steps", "run_all", "train", "unrolled", "seed_hypergradients"]


def check_net(net) -> NetProblem:
    """Return ``net`` if it is a :class:`~metahpo_lib.nets.NetProblem` (built by ``nets.network``).

    >>> from metahpo_lib import nets
    >>> nets.check_net("mlp")
    Traceback (most recent call last):
        ...
    TypeError: net must be a metahpo_lib.nets.NetProblem (build one with nets.network), got str
    """
    if not isinstance(net, NetProblem):
        raise TypeError(f"net must be a metahpo_lib.nets.NetProblem (build one with nets.network), got "
                        f"{type(net).__name__}")
    return net


def check_hparams(net: NetProblem, hparams, *, batch: int | None = None) -> TensorDict:
    """Check ``hparams`` against ``net.init_hparams()`` (with a leading dimension ``batch`` when given)
    and that a dropout rate lies in [0, 1).

    >>> import torch
    >>> from torch import nn
    >>> from metahpo_lib import data, nets
    >>> s = data.load("iris")
    >>> net = nets.network(nn.Linear(4, 3), s.X_train, s.y_train, s.X_val, s.y_val, dropout=0.1)
    >>> nets.check_hparams(net, {**net.init_hparams(), "dropout": torch.tensor(1.5, dtype=torch.float64)})
    Traceback (most recent call last):
        ...
    ValueError: hparams['dropout'] (the dropout rate) must be in [0, 1), got 1.5
    """
    want = net.init_hparams()
    if batch is not None:
        want = {k: v.expand(batch, *v.shape) for k, v in want.items()}
    hparams = V.tensor_dict(hparams, "hparams", want)
    if "dropout" in hparams:
        p = hparams["dropout"].detach()
        if bool(((p < 0) | (p >= 1)).any()):
            raise ValueError(f"hparams['dropout'] (the dropout rate) must be in [0, 1), got {p.flatten()[0]:.4g}"
                             if p.numel() == 1 else "hparams['dropout'] (the dropout rates) must all be in [0, 1)")
    return hparams


def run_steps(net: NetProblem, params: TensorDict, state: TensorDict, hparams: TensorDict, batches: Batches,
              start: int, stop: int):
    r"""Steps ``start..stop-1`` of minibatch training: ``(params, state, losses (stop - start,))``; pure
    (no checks: call it after :func:`train`'s), differentiable, ``vmap``-able.

    >>> import torch
    >>> from torch import nn
    >>> from metahpo_lib import data, nets
    >>> s = data.load("iris")
    >>> net = nets.network(nn.Linear(4, 3), s.X_train, s.y_train, s.X_val, s.y_val, steps=20, batch_size=16)
    >>> p0 = net.init_params(0)
    >>> p, _, losses = nets.run_steps(net, p0, net.optimizer.init(p0), net.init_hparams(), net.draw(0), 0, 20)
    >>> bool(losses[-5:].mean() < losses[:5].mean())
    True
    """
    opt, oh = net.optimizer, net.optimizer_hparams(hparams)
    grad_and_value = torch.func.grad_and_value(net.train_loss)
    losses = []
    for t in range(start, stop):
        idx = batches.index[t]
        noise = None if batches.noise is None else batches.noise[t]
        grads, loss = grad_and_value(params, hparams, net.X_train[idx], net.y_train[idx], noise)
        params, state = opt.step(params, grads, state, oh, t)
        losses.append(loss)
    return params, state, torch.stack(losses)


def run_all(net: NetProblem, params: TensorDict, hparams: TensorDict, batches: Batches, truncate: int | None = None):
    r"""All ``net.steps`` steps from ``params``: ``(final params, (steps,) losses)``; only the last
    ``truncate`` steps depend on ``hparams`` (the prefix sees a detached copy). Pure, no checks,
    ``vmap``-able (:func:`~metahpo_lib.nets.train_many` maps it over configurations).

    >>> from torch import nn
    >>> from metahpo_lib import data, nets
    >>> s = data.load("iris")
    >>> net = nets.network(nn.Linear(4, 3), s.X_train, s.y_train, s.X_val, s.y_val, steps=10, batch_size=16)
    >>> p, losses = nets.run_all(net, net.init_params(0), net.init_hparams(), net.draw(0))
    >>> losses.shape
    torch.Size([10])
    """
    K = net.steps if truncate is None else truncate
    state = net.optimizer.init(params)
    losses = []
    if K < net.steps:
        params, state, l0 = run_steps(net, params, state, {k: v.detach() for k, v in hparams.items()}, batches, 0,
                                      net.steps - K)
        params, state, losses = {k: v.detach() for k, v in params.items()}, {k: v.detach() for k, v in state.items()}, [l0]
    params, state, l1 = run_steps(net, params, state, hparams, batches, net.steps - K, net.steps)
    return params, torch.cat(losses + [l1])


def _start(net, seed, params):
    g = V.generator(seed)
    batches = net.draw(g)
    p0 = net.init_params(g) if params is None else V.tensor_dict(params, "params", net.init_params(0))
    return batches, p0


def _check_truncate(net, truncate):
    if truncate is not None and V.positive_int(truncate, "truncate") > net.steps:
        raise ValueError(f"truncate must be <= steps ({net.steps}), got {truncate}")


def train(net: NetProblem, hparams, *, seed=0, params=None, return_losses: bool = False):
    r"""Train ``net`` for ``net.steps`` minibatch steps with ``hparams``: the final params
    (differentiable w.r.t. ``hparams`` entries that require grad).

    ``seed`` (int or ``torch.Generator``) draws the minibatch order and dropout noise, then the
    initialisation unless ``params`` is given. Raises ``inner.DivergenceError`` when the
    training loss blows up. ``return_losses``: also the ``(steps,)`` minibatch losses.

    >>> from torch import nn
    >>> from metahpo_lib import data, nets
    >>> s = data.load("iris")
    >>> net = nets.network(nn.Linear(4, 3), s.X_train, s.y_train, s.X_val, s.y_val, steps=50, batch_size=16, lr=0.5)
    >>> p = nets.train(net, net.init_hparams(), seed=0)
    >>> net.evaluate(p, {}, s.X_test, s.y_test)[1] > 0.8
    True
    """
    check_net(net)
    hparams = check_hparams(net, hparams)
    batches, p0 = _start(net, seed, params)
    params, losses = run_all(net, p0, hparams, batches, None)
    inner.check_losses(list(losses), optimizer=net.optimizer)
    return (params, losses.detach()) if return_losses else params


def _zero_dropout(grads: TensorDict) -> TensorDict:
    return {k: torch.zeros_like(g) if k == "dropout" else g for k, g in grads.items()}


def unrolled(net: NetProblem, hparams, *, seed=0, params=None, truncate: int | None = None) -> HypergradResult:
    r"""The hypergradient :math:`dL_{val}(\theta_T)/d\lambda` of one seeded minibatch training run,
    by reverse mode through its steps (the last ``truncate`` only, when given).

    A stochastic estimate: its value depends on ``seed`` (order and initialisation); average
    over seeds with :func:`seed_hypergradients`. The dropout rate gets 0 (the mask is a step
    function of it: tune it by search). ``.info``: ``outer_loss``, ``truncate``, ``seed``, ``params`` (θ_T).

    >>> from torch import nn
    >>> from metahpo_lib import data, nets
    >>> s = data.load("iris")
    >>> net = nets.network(nn.Linear(4, 3), s.X_train, s.y_train, s.X_val, s.y_val, steps=20, batch_size=16)
    >>> g = nets.unrolled(net, net.init_hparams(), seed=0)
    >>> sorted(g), g["log_wd"].shape
    (['log_lr', 'log_wd'], torch.Size([1]))
    """
    check_net(net)
    hp = {k: v.detach().clone().requires_grad_(True) for k, v in check_hparams(net, hparams).items()}
    _check_truncate(net, truncate)
    batches, p0 = _start(net, seed, params)
    with torch.enable_grad():
        p, losses = run_all(net, p0, hp, batches, truncate)
        inner.check_losses(list(losses), optimizer=net.optimizer)
        value = net.val_loss(p, hp)
        grads = _zero_dropout(total_derivative(value, hp))
    return HypergradResult(grads, {"method": "nets.unrolled", "outer_loss": float(value.detach()), "truncate": truncate,
                                   "seed": seed if isinstance(seed, int) else "generator",
                                   "params": {k: v.detach() for k, v in p.items()}})


def seed_hypergradients(net: NetProblem, hparams, seeds: int, *, seed=0, truncate: int | None = None) -> HypergradResult:
    r"""``seeds`` = S independent hypergradients at once, one per seeded run (own minibatch order
    and initialisation), by ``vmap(grad(·))`` over the runs: each entry has a leading ``(S,)``
    dimension; their mean :math:`\frac1S\sum_s g_s` has a spread that falls like :math:`1/\sqrt S`.
    ``.info["outer_loss"]``: the ``(S,)`` validation losses.

    >>> from torch import nn
    >>> from metahpo_lib import data, nets
    >>> s = data.load("iris")
    >>> net = nets.network(nn.Linear(4, 3), s.X_train, s.y_train, s.X_val, s.y_val, steps=20, batch_size=16)
    >>> g = nets.seed_hypergradients(net, net.init_hparams(), 4, seed=0)
    >>> g["log_lr"].shape, g.info["outer_loss"].shape
    (torch.Size([4]), torch.Size([4]))
    """
    check_net(net)
    hp = {k: v.detach() for k, v in check_hparams(net, hparams).items()}
    V.positive_int(seeds, "seeds")
    _check_truncate(net, truncate)
    g = V.generator(seed)
    runs = [_start(net, g, None) for _ in range(seeds)]
    index = torch.stack([b.index for b, _ in runs])
    noise = None if runs[0][0].noise is None else torch.stack([b.noise for b, _ in runs])
    p0 = {k: torch.stack([p[k] for _, p in runs]) for k in runs[0][1]}

    def outer(h, p, idx, nz):
        p, losses = run_all(net, p, h, Batches(idx, nz), truncate)
        value = net.val_loss(p, h)
        return value, (value, losses)

    grads, (values, losses) = torch.func.vmap(torch.func.grad(outer, has_aux=True), in_dims=(None, 0, 0, None if noise is None else 0))(hp, p0, index, noise)
    for row in losses:
        inner.check_losses(list(row), optimizer=net.optimizer)
    return HypergradResult(_zero_dropout(grads), {"method": "nets.seed_hypergradients", "outer_loss": values.detach(),
                                                  "truncate": truncate, "seeds": seeds})
