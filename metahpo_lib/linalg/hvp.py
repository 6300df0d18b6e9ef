r"""Hessian-vector products and the Hessian diagonal, never forming the Hessian (notebook 04).

Measured on this course's problems (CPU, float64, ``torch.set_num_threads(1)``, median time of
one product after a warm-up; ``python benchmarks/hypergrad_implicit.py --hvp``)::

    problem                                 double_backward   vjp_grad   jvp_grad   autograd_functional   (us / product)
    ridge, diabetes (n=265, d=10)                       177        247       7323                  1155
    logistic, digits (n=1078, 64x10)                   1152       2616      16133                  3560
    ridge, make_regression (n=2000, d=200)              323        399       9290                  1679
    ridge, make_regression (n=6000, d=1000)            7836       9572     107169                 25025

``"double_backward"`` (the default) builds the graph of :math:`\nabla_\theta f` once
(``create_graph=True``); each product is one backward pass through it. ``"vjp_grad"``
(``torch.func.vjp`` of ``torch.func.grad``, the closure torchopt uses) is the same computation,
1.2-2.3x slower here. ``"jvp_grad"`` (forward-over-reverse) re-traces the loss at every call
(10-40x slower in torch 2.13 on CPU); ``"autograd_functional"`` recomputes the forward pass and
the gradient graph at every call (3-7x slower).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import _validate as V

__all__ = ["hvp", "hessian_diagonal"]

METHODS = ("double_backward", "jvp_grad", "vjp_grad", "autograd_functional")


def _double_backward(f, params: dict):
    keys = list(params)
    with torch.enable_grad():
        p = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        grads = torch.autograd.grad(V.scalar_loss(f(p), "f"), [p[k] for k in keys], create_graph=True)

    def matvec(v):
        with torch.enable_grad():
            out = torch.autograd.grad(grads, [p[k] for k in keys], [v[k] for k in keys], retain_graph=True,
                                      allow_unused=True, materialize_grads=True)
        return dict(zip(keys, out))
    return matvec


def _autograd_functional(f, params: dict):
    keys = list(params)
    primal = tuple(params[k].detach() for k in keys)

    def ftuple(*xs):
        return f(dict(zip(keys, xs)))
    return lambda v: dict(zip(keys, torch.autograd.functional.hvp(ftuple, primal, tuple(v[k] for k in keys))[1]))


def hvp(f: Callable[[dict], torch.Tensor], params: dict, *, method: str = "double_backward") -> Callable[[dict], dict]:
    r"""A function ``v -> H v`` with :math:`H = \nabla^2_\theta f(\theta)` at ``params``, never forming H.

    ``f(params) -> scalar``; ``params`` and ``v`` are dicts of tensors. ``method``:
    ``"double_backward"`` (default, fastest here), ``"jvp_grad"``, ``"vjp_grad"`` or
    ``"autograd_functional"`` (module docstring: what each does, and timings).

    >>> import torch
    >>> from metahpo_lib import linalg
    >>> f = lambda p: (p["x"] ** 3).sum()            # H = diag(6 x)
    >>> linalg.hvp(f, {"x": torch.tensor([1., 2.])})({"x": torch.ones(2)})
    {'x': tensor([ 6., 12.])}
    """
    V.choice(method, "method", METHODS)
    if not callable(f):
        raise TypeError(f"f must be a function params -> scalar tensor, got {type(f).__name__}")
    params = V.tensor_dict(params, "params")
    if method == "double_backward":
        return _double_backward(f, params)
    if method == "autograd_functional":
        return _autograd_functional(f, params)
    from torch.func import grad, jvp, vjp
    primal = {k: v.detach() for k, v in params.items()}
    if method == "jvp_grad":
        return lambda v: jvp(grad(f), (primal,), (v,))[1]
    _, vjp_fn = vjp(grad(f), primal)
    return lambda v: vjp_fn(v)[0]


def _basis_diagonal(batched, params: dict, chunk: int) -> dict:
    """Exact diagonal: products with the basis vectors, ``chunk`` at a time."""
    out = {}
    for key, t in params.items():
        n = t.numel()
        diag = torch.empty(n, dtype=t.dtype, device=t.device)
        for i in range(0, n, chunk):
            m = min(chunk, n - i)
            rows = torch.arange(m, device=t.device)
            E = {k: torch.zeros((m, *v.shape), dtype=v.dtype, device=v.device) for k, v in params.items()}
            E[key].view(m, -1)[rows, i + rows] = 1
            diag[i:i + m] = batched(E)[key].reshape(m, -1)[rows, i + rows]
        out[key] = diag.view(t.shape)
    return out


def _hutchinson_diagonal(batched, params: dict, samples: int, chunk: int, seed) -> dict:
    """Hutchinson's estimate (1/s) sum_j z_j * H z_j with seeded Rademacher z."""
    g = V.generator(seed)
    acc = {k: torch.zeros_like(v) for k, v in params.items()}
    for i in range(0, samples, chunk):
        m = min(chunk, samples - i)
        Z = {k: (torch.randint(0, 2, (m, *v.shape), generator=g) * 2 - 1).to(v.device, v.dtype)
             for k, v in params.items()}
        HZ = batched(Z)
        acc = {k: acc[k] + (Z[k] * HZ[k]).sum(0) for k in acc}
    return {k: a / samples for k, a in acc.items()}


def hessian_diagonal(f: Callable[[dict], torch.Tensor], params: dict, *, samples: int | None = None,
                     chunk: int = 256, seed: int | torch.Generator = 0) -> dict:
    r"""Diagonal of :math:`H = \nabla^2_\theta f(\theta)` at ``params`` (for Jacobi preconditioning).

    ``samples=None``: exact, :math:`H_{ii} = e_i^\top H e_i`, from Hessian-vector products with
    the basis vectors, ``chunk`` at a time batched with ``torch.func.vmap`` (``n / chunk``
    batched products, memory ``chunk x n``). ``samples=s``: Hutchinson's estimate
    :math:`\frac1s\sum_j z_j \odot H z_j`, seeded Rademacher ``z`` (cheaper, noisy, entries may
    come out <= 0). Returns a dict like ``params``.

    >>> import torch
    >>> from metahpo_lib import linalg
    >>> linalg.hessian_diagonal(lambda p: (p["x"] ** 3).sum() + p["x"].prod(), {"x": torch.tensor([1., 2.])})
    {'x': tensor([ 6., 12.])}
    """
    from torch.func import grad, vjp, vmap
    if not callable(f):
        raise TypeError(f"f must be a function params -> scalar tensor, got {type(f).__name__}")
    params = {k: v.detach() for k, v in V.tensor_dict(params, "params").items()}
    V.positive_int(chunk, "chunk")
    _, vjp_fn = vjp(grad(f), params)  # H symmetric: the vjp of the gradient is H v
    batched = vmap(lambda v: vjp_fn(v)[0])
    if samples is None:
        return _basis_diagonal(batched, params, chunk)
    return _hutchinson_diagonal(batched, params, V.positive_int(samples, "samples"), chunk, seed)
