r"""Implicit hypergradients: the implicit function theorem with a matrix-free solver (notebook 04).

At an inner solution, :math:`\nabla_\theta L_{train}(\theta^*(\lambda), \lambda) = 0` for every
λ; differentiating this identity gives
:math:`\frac{d\theta^*}{d\lambda} = -H^{-1} \nabla^2_{\theta\lambda} L_{train}`, with
:math:`H = \nabla^2_{\theta\theta} L_{train}`, hence

.. math:: \frac{d L_{val}}{d\lambda} = \nabla_\lambda L_{val}
          - \left(\nabla^2_{\lambda\theta} L_{train}\right) q, \qquad H q = \nabla_\theta L_{val}.

The linear solver is a value (as in jaxopt and torchopt's ``custom_root(solve=...)``): any
function ``solve(matvec, b) -> SolveResult`` with ``matvec(q) = H q``, e.g.
``functools.partial(linalg.cg, iters=500, tol=1e-12)``, ``linalg.neumann`` or
``functools.partial(linalg.fixed_point, x0=previous.info["q"])``. The Hessian is never formed.
"""

from __future__ import annotations

import math
import warnings
from functools import partial

import torch

from .. import _validate as V
from .. import inner, linalg
from ._common import HypergradResult, prepare_hparams

#: the default solve uses Jacobi-preconditioned CG up to this many parameters (the exact diagonal
#: costs one batched Hessian-vector product per 256 parameters); plain CG above
JACOBI_MAX_PARAMS = 20_000


def default_solve(problem, params: dict, hparams: dict):
    r"""The solver :func:`implicit` uses when none is given: :func:`metahpo_lib.linalg.cg` (relative
    residual ``tol=1e-10``), preconditioned with the exact Hessian diagonal
    (:func:`~metahpo_lib.linalg.hessian_diagonal`) when ``params`` has at most
    :data:`JACOBI_MAX_PARAMS` entries and that diagonal is positive; plain CG otherwise.
    Returns ``(solve, hvps)``: the solver and the Hessian-vector products its setup cost.

    >>> from metahpo_lib import data, hypergrad, problems
    >>> s = data.load("diabetes", seed=0)
    >>> p = problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val, per_feature=True)
    >>> solve, hvps = hypergrad.implicit_default_solve(p, p.solve_inner(p.init_hparams()), p.init_hparams())
    >>> solve.func.__name__, hvps
    ('cg', 10)
    """
    n = sum(v.numel() for v in params.values())
    if n > JACOBI_MAX_PARAMS:
        return partial(linalg.cg), 0
    h = {k: v.detach() for k, v in hparams.items()}
    diag = linalg.hessian_diagonal(lambda p: problem.inner_loss(p, h), params)
    if not all(bool((d > 0).all()) for d in diag.values()):
        return partial(linalg.cg), n
    return partial(linalg.cg, precondition=diag), n


def _inner_solution(problem, hp: dict) -> dict:
    """θ*(λ): the closed form when the problem has one, else ``inner.minimize``."""
    detached = {k: v.detach() for k, v in hp.items()}
    with torch.no_grad():
        params = problem.solve_inner(detached) if problem.solve_inner else inner.minimize(problem, detached)
    return {k: v.detach() for k, v in params.items()}


def _outer_gradients(problem, p: dict, hp: dict) -> tuple[dict, dict]:
    """(∇_θ L_val, ∇_λ L_val) at (p, hp)."""
    with torch.enable_grad():
        g = torch.autograd.grad(problem.outer_loss(p, hp), [*p.values(), *hp.values()], allow_unused=True,
                                materialize_grads=True)
    return dict(zip(p, (x.detach() for x in g[:len(p)]))), dict(zip(hp, (x.detach() for x in g[len(p):])))


def _stationarity(g_inner, stationarity_tol) -> float:
    grad_norm = math.sqrt(sum(float(g.detach().pow(2).sum()) for g in g_inner))
    if not math.isfinite(grad_norm):
        raise ValueError("the inner gradient at params is not finite (NaN or inf): check params and hparams")
    if stationarity_tol is not None and grad_norm > stationarity_tol:
        warnings.warn(f"params is not a stationary point of the inner loss: ||grad_theta L_train|| = {grad_norm:.3g} "
                      f"> stationarity_tol={stationarity_tol:g}; the implicit hypergradient assumes grad_theta L_train "
                      "= 0 and will be biased (solve the inner problem more accurately)", RuntimeWarning, stacklevel=3)
    return grad_norm


def _solve(solve, matvec, v) -> linalg.SolveResult:
    result = solve(matvec, v)
    if not isinstance(result, linalg.SolveResult):  # a solver that returns the solution only
        result = linalg.SolveResult(result, message="custom solver (no residual reported)", converged=True)
    elif not result.converged:
        warnings.warn(f"implicit: the linear solve stopped at relative residual {result.relative_residual:.3g} after "
                      f"{result.iters} iterations ({result.message}); give solve more iterations or a "
                      "preconditioner", RuntimeWarning, stacklevel=3)
    return result


def implicit(problem, hparams, params=None, *, solve=None, stationarity_tol: float | None = 1e-6) -> HypergradResult:
    r"""Implicit-function-theorem hypergradient of ``problem`` at ``hparams``.

    ``params``: the inner solution θ* (default: ``problem.solve_inner`` when there is a closed
    form, else :func:`metahpo_lib.inner.minimize`). A ``RuntimeWarning`` reports
    :math:`\|\nabla_\theta L_{train}\|` when it exceeds ``stationarity_tol`` (the formula assumes a
    stationary point; ``None`` silences it). ``solve(matvec, b) -> SolveResult`` solves
    :math:`H q = \nabla_\theta L_{val}` (default :func:`default_solve`: Jacobi-preconditioned CG to
    relative residual 1e-10); a solve that stops short warns with the residual it reached.

    ``.info``: ``"q"`` (reusable as a warm start ``x0``), ``"solve"`` (the
    :class:`~metahpo_lib.linalg.SolveResult`), ``"residual"``, ``"residuals"``, ``"converged"``,
    ``"iters"``, ``"hvps"`` (Hessian-vector products, the cost), ``"grad_norm"``, ``"params"``.

    >>> from metahpo_lib import data, hypergrad, problems
    >>> s = data.load("diabetes", seed=0)
    >>> p = problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val, per_feature=True)
    >>> g = hypergrad.implicit(p, p.init_hparams())
    >>> float((g["log_alpha"] - hypergrad.exact(p, p.init_hparams())["log_alpha"]).abs().max()) < 1e-12
    True
    """
    hp = prepare_hparams(problem, hparams)
    if stationarity_tol is not None:
        V.positive_float(stationarity_tol, "stationarity_tol")
    if solve is not None and not callable(solve):
        raise TypeError(f"solve must be a function (matvec, b) -> linalg.SolveResult, such as linalg.cg, "
                        f"got {type(solve).__name__}")
    params = problem.check_params(_inner_solution(problem, hp) if params is None else params)
    p = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    v, direct = _outer_gradients(problem, p, hp)
    with torch.enable_grad():
        g_inner = torch.autograd.grad(problem.inner_loss(p, hp), list(p.values()), create_graph=True)
    grad_norm = _stationarity(g_inner, stationarity_tol)
    setup = 0
    if solve is None:
        solve, setup = default_solve(problem, params, hp)
    h = {k: x.detach() for k, x in hp.items()}
    result = _solve(solve, linalg.hvp(lambda th: problem.inner_loss(th, h), params), v)
    q = {k: x.detach() for k, x in result.x.items()}
    with torch.enable_grad():  # the mixed term d/dλ <∇_θ L_train, q>: one more backward pass
        mixed = torch.autograd.grad(g_inner, list(hp.values()), [q[k] for k in p], materialize_grads=True)
    return HypergradResult({k: direct[k] - m.detach() for k, m in zip(hp, mixed)}, {
        "method": "implicit", "q": q, "solve": result, "residual": result.relative_residual,
        "residuals": list(result.residuals), "converged": result.converged, "iters": result.iters,
        "hvps": result.iters + setup, "grad_norm": grad_norm, "params": {k: x.detach() for k, x in p.items()}})
