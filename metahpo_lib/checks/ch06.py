"""Self-checks for the exercises of notebook 06 (MAML and family): ``ch06.maml_task_loss(fn)``,
``ch06.fomaml_meta_grad(fn)``, ``ch06.reptile_meta_grad(fn)``; the references are ``ref_*``.

>>> from metahpo_lib.checks import ch06
>>> ch06.reptile_meta_grad(ch06.ref_reptile_meta_grad)
✔ reptile_meta_grad matches the reference on 3 seeded tasks.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from . import ExerciseNotWritten, compare, describe_difference, expected
from .. import maml

__all__ = ["maml_task_loss", "fomaml_meta_grad", "reptile_meta_grad", "ref_maml_task_loss",
           "ref_fomaml_meta_grad", "ref_reptile_meta_grad"]


def _mse(model, params, x, y):
    return ((functional_call(model, params, (x,)) - y) ** 2).mean()


def _sgd(model, params, x, y, lr, steps, create_graph):
    """``steps`` SGD steps on the MSE of ``(x, y)`` from ``params`` (differentiable if ``create_graph``)."""
    for _ in range(steps):
        grads = torch.autograd.grad(_mse(model, params, x, y), list(params.values()), create_graph=create_graph)
        params = {k: v - lr * g for (k, v), g in zip(params.items(), grads)}
        if not create_graph:
            params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    return params


def _setup(seed: int = 0):
    from ..tasks import Sinusoid

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    return model, Sinusoid(dtype=torch.float64).sample(3, 5, 6, seed=seed)


def _leaves(model):
    return {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}


def _call(fn, name, *args):
    """``fn(*args)``; an unwritten exercise becomes one plain sentence, a crash says where."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise ExerciseNotWritten(name) from None
    except Exception as e:
        raise AssertionError(f"{name} raised {type(e).__name__}: {e}") from e


# ---------------------------------------------------------------- exercise 1: the second-order MAML loss
def ref_maml_task_loss(model, params, x_s, y_s, x_q, y_q, lr):
    r"""Reference for exercise 1: :math:`L_Q(\theta - \alpha \nabla L_S(\theta))` (MSE), second order.

    >>> from torch import nn
    >>> net = nn.Linear(1, 1, bias=False)
    >>> w = {"weight": torch.tensor([[1.0]], requires_grad=True)}
    >>> x = torch.ones(2, 1)
    >>> ref_maml_task_loss(net, w, x, 0 * x, x, x, lr=0.25)   # w: 1 -> 1 - 0.25 * 2 = 0.5
    tensor(0.2500, grad_fn=<MeanBackward0>)
    """
    return _mse(model, _sgd(model, dict(params), x_s, y_s, lr, 1, create_graph=True), x_q, y_q)


def _value_and_gradient(model, leaves, *args):
    value = ref_maml_task_loss(model, leaves, *args)
    return value.detach(), tuple(g.detach() for g in torch.autograd.grad(value, list(leaves.values())))


def maml_task_loss(fn) -> None:
    """Check exercise 1: ``fn(model, params, x_s, y_s, x_q, y_q, lr)``, the query MSE after one inner
    SGD step on the support MSE, differentiable w.r.t. ``params`` through the inner step (second order).

    >>> maml_task_loss(ref_maml_task_loss)
    ✔ maml_task_loss matches the reference (value and second-order gradient) on 3 seeded tasks.
    """
    model, b = _setup()
    for i, lr in [(0, 0.1), (1, 0.05), (2, 0.3)]:
        args = (b.x_support[i], b.y_support[i], b.x_query[i], b.y_query[i], lr)
        leaves = _leaves(model)
        want, want_g = expected(_value_and_gradient, (model, leaves, *args), case=f"task {i}, lr={lr}")
        got = _call(fn, "maml_task_loss", model, leaves, *args)
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise AssertionError(f"maml_task_loss should return a scalar tensor, got {type(got).__name__}"
                                 + (f" of shape {tuple(got.shape)}" if isinstance(got, torch.Tensor) else ""))
        if not torch.allclose(got.detach(), want.detach(), rtol=1e-8, atol=1e-10):
            raise AssertionError(f"maml_task_loss: on task {i} (lr={lr}) the value is {float(got):.8g}, expected "
                                 f"{float(want):.8g}: one SGD step on the support MSE, then the MSE on the query set")
        if not got.requires_grad:
            raise AssertionError("maml_task_loss returns a value that does not depend on params: "
                                 "do not detach, the meta-gradient flows through it")
        got_g = torch.autograd.grad(got, list(leaves.values()), allow_unused=True)
        for (k, _), gg, wg in zip(leaves.items(), got_g, want_g):
            if gg is None or not torch.allclose(gg, wg, rtol=1e-6, atol=1e-9):
                raise AssertionError(
                    f"maml_task_loss: the value is right but its gradient w.r.t. params[{k!r}] is not the "
                    "second-order MAML meta-gradient. Keep the inner gradient differentiable "
                    "(torch.autograd.grad(..., create_graph=True) or torch.func.grad), do not detach it")
    print("✔ maml_task_loss matches the reference (value and second-order gradient) on 3 seeded tasks.")


# ---------------------------------------------------------------- exercise 2: the FOMAML meta-gradient
def ref_fomaml_meta_grad(model, params, x_s, y_s, x_q, y_q, lr, steps):
    r"""Reference for exercise 2: :math:`\nabla_\phi L_Q(\phi)` at :math:`\phi` = ``steps`` SGD steps
    of size ``lr`` on the support MSE from ``params`` (the inner gradients treated as constants).

    >>> from torch import nn
    >>> net = nn.Linear(1, 1, bias=False)
    >>> w = {"weight": torch.tensor([[1.0]])}
    >>> x = torch.ones(2, 1)
    >>> ref_fomaml_meta_grad(net, w, x, 0 * x, x, x, 0.25, 1)   # phi = 0.5, gradient 2 (phi - 1) = -1
    {'weight': tensor([[-1.]])}
    """
    phi = _sgd(model, {k: v.detach().requires_grad_(True) for k, v in params.items()}, x_s, y_s, lr, steps, False)
    grads = torch.autograd.grad(_mse(model, phi, x_q, y_q), list(phi.values()))
    return {k: g.detach() for k, g in zip(phi, grads)}


def _wrong_fomaml(model, params, x_s, y_s, x_q, y_q, lr, steps):
    """Two common mistakes: the query gradient at theta (no adaptation), and the second-order gradient."""
    theta = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    at_theta = dict(zip(theta, torch.autograd.grad(_mse(model, theta, x_q, y_q), list(theta.values()))))
    second = dict(zip(theta, torch.autograd.grad(
        _mse(model, _sgd(model, dict(theta), x_s, y_s, lr, steps, True), x_q, y_q), list(theta.values()))))
    return at_theta, second


def fomaml_meta_grad(fn) -> None:
    r"""Check exercise 2: ``fn(model, params, x_s, y_s, x_q, y_q, lr, steps)`` -> the first-order MAML
    meta-gradient of one task, a dict keyed like ``params``: the gradient of the query MSE at the
    adapted weights :math:`\phi` (``steps`` SGD steps on the support MSE).

    >>> fomaml_meta_grad(ref_fomaml_meta_grad)
    ✔ fomaml_meta_grad matches the reference on 3 seeded tasks.
    """
    model, b = _setup(1)
    cases = [(f"task {i}, lr={lr}, steps={s}", (model, _leaves(model), b.x_support[i], b.y_support[i], b.x_query[i],
                                                 b.y_query[i], lr, s), {})
             for i, (lr, s) in enumerate([(0.1, 1), (0.05, 3), (0.3, 2)])]
    try:
        compare(fn, ref_fomaml_meta_grad, cases, name="fomaml_meta_grad", rtol=1e-7, atol=1e-10, quiet=True)
    except AssertionError as e:
        try:
            got = fn(*cases[0][1])
        except Exception:   # the message of compare already says where it crashed
            raise e from None
        at_theta, second = _wrong_fomaml(*cases[0][1])
        hint = ""
        if describe_difference(got, at_theta, rtol=1e-7, atol=1e-10) is None:
            hint = " (you returned the query gradient at params: adapt first, then take the gradient at phi)"
        elif describe_difference(got, second, rtol=1e-7, atol=1e-10) is None:
            hint = (" (you returned the second-order MAML gradient: FOMAML treats the inner gradients as constants, "
                    "so detach phi and differentiate the query loss with respect to phi itself)")
        raise AssertionError(str(e) + hint) from None
    print(f"✔ fomaml_meta_grad matches the reference on {len(cases)} seeded tasks.")


# ---------------------------------------------------------------- exercise 3: the Reptile meta-gradient
def ref_reptile_meta_grad(model, params, x_s, y_s, lr, steps):
    r"""Reference for exercise 3: the Reptile pseudo-gradient :math:`\theta - \phi` of one task, with
    :math:`\phi` = ``steps`` SGD steps of size ``lr`` on the MSE of ``(x_s, y_s)`` from :math:`\theta`.

    >>> from torch import nn
    >>> net = nn.Linear(1, 1, bias=False)
    >>> w = {"weight": torch.tensor([[1.0]])}
    >>> x = torch.ones(2, 1)
    >>> ref_reptile_meta_grad(net, w, x, 0 * x, 0.25, 1)   # one step: lr * gradient = 0.25 * 2
    {'weight': tensor([[0.5000]])}
    """
    theta = {k: v.detach() for k, v in params.items()}
    phi = _sgd(model, {k: v.clone().requires_grad_(True) for k, v in theta.items()}, x_s, y_s, lr, steps, False)
    return {k: theta[k] - phi[k].detach() for k in theta}


def reptile_meta_grad(fn) -> None:
    r"""Check exercise 3: ``fn(model, params, x_s, y_s, lr, steps)`` -> :math:`\theta - \phi`, a dict keyed
    like ``params`` (``steps`` SGD steps of size ``lr`` on the support MSE give :math:`\phi`).

    >>> reptile_meta_grad(ref_reptile_meta_grad)
    ✔ reptile_meta_grad matches the reference on 3 seeded tasks.
    """
    model, b = _setup(2)
    cases = [(f"task {i}, lr={lr}, steps={s}", (model, _leaves(model), b.x_support[i], b.y_support[i], lr, s), {})
             for i, (lr, s) in enumerate([(0.1, 1), (0.05, 5), (0.2, 3)])]
    try:
        compare(fn, ref_reptile_meta_grad, cases, name="reptile_meta_grad", rtol=1e-7, atol=1e-10, quiet=True)
    except AssertionError as e:
        try:
            got, want = fn(*cases[1][1]), ref_reptile_meta_grad(*cases[1][1])
        except Exception:   # the message of compare already says where it crashed
            raise e from None
        hint = ""
        if describe_difference(got, {k: -v for k, v in want.items()}, rtol=1e-7, atol=1e-10) is None:
            hint = " (the sign is flipped: return theta - phi, the direction an optimiser steps against)"
        elif describe_difference(got, {k: v / 0.05 for k, v in want.items()}, rtol=1e-7, atol=1e-10) is None:
            hint = " (you divided by lr: the library's pseudo-gradient is theta - phi itself)"
        raise AssertionError(str(e) + hint) from None
    print(f"✔ reptile_meta_grad matches the reference on {len(cases)} seeded tasks.")


def library_agrees(model, batch, lr: float, steps: int) -> bool:
    """Internal check used by the hidden tests: the references agree with ``maml.MAML(first_order=True)``
    and ``maml.Reptile`` on a one-task batch (float64).

    >>> model, b = _setup()
    >>> library_agrees(model, b, 0.1, 2)
    True
    """
    one = tuple(t[:1] for t in batch)
    fo, _ = maml.MAML(model, lr=lr, steps=steps, first_order=True).meta_grad(one)
    rp, _ = maml.Reptile(model, lr=lr, steps=steps).meta_grad(one)
    leaves = _leaves(model)
    want_fo = ref_fomaml_meta_grad(model, leaves, one[0][0], one[1][0], one[2][0], one[3][0], lr, steps)
    want_rp = ref_reptile_meta_grad(model, leaves, one[0][0], one[1][0], lr, steps)
    return all(torch.allclose(fo[k], want_fo[k], rtol=1e-8, atol=1e-12) and
               torch.allclose(rp[k], want_rp[k], rtol=1e-8, atol=1e-12) for k in leaves)
