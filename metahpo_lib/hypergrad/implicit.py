r"""Implicit hypergradients: the implicit function theorem with a matrix-free solver (notebook 04).

At an inner solution, :math:`\nabla_\theta L_{train}(\theta^*(\lambda), \lambda) = 0` for every
λ; differentiating this identity gives
:math:`\frac{d\theta^*}{d\lambda} = -H^{-1} \nabla^2_{\theta\lambda} L_{train}`, with
:math:`H = \nabla^2_{\theta\theta} L_{train}`, hence

.. math:: \frac{d L_{val}}{d\lambda} = \nabla_\lambda L_{val}
          - \left(\nabla^2_{\lambda\theta} L_{train}\right) q, \qquad H q = \nabla_\theta L_{val}.

``q`` is found by :func:`metahpo_lib.linalg.cg`, :func:`~metahpo_lib.linalg.neumann` or
:func:`~metahpo_lib.linalg.fixed_point` from Hessian-vector products only (one backward pass
each through the graph of :math:`\nabla_\theta L_{train}`, built once); the mixed term is one
more backward pass. The Hessian is never formed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from .. import _validate as V
from .. import linalg
from ._common import prepare_hparams
from ._common import HypergradResult

_SOLVERS = {"cg": linalg.cg, "neumann": linalg.neumann, "fixed_point": linalg.fixed_point}


@dataclass
class ImplicitInfo:
    """What :func:`implicit` did: the linear solve (``solve``: a :class:`~metahpo_lib.linalg.SolveResult`
    with ``.residuals``, ``.converged``, ``.iters``), the inner gradient norm at ``params``
    (``grad_norm``: 0 at an exact stationary point), the inner solution used (``params``) and
    the solution ``q`` of :math:`H q = \nabla_\theta L_{val}` (``q``, reusable as a warm start)."""

    solve: linalg.SolveResult
    grad_norm: float
    params: dict
    q: dict

    @property
    def residual(self) -> float:
        """Final relative residual ``||v - H q|| / ||v||`` of the linear solve."""
        return self.solve.relative_residual

    @property
    def residuals(self) -> list[float]:
        return self.solve.residuals

    @property
    def converged(self) -> bool:
        return self.solve.converged


def _inner_solution(problem, hp, inner_kwargs):
    """θ*(λ): the closed form when the problem has one, else ``metahpo_lib.inner.minimize``."""
    with torch.no_grad():
        detached = {k: v.detach() for k, v in hp.items()}
        if problem.solve_inner is not None:
            return {k: v.detach() for k, v in problem.solve_inner(detached).items()}
    from .. import inner
    return {k: v.detach() for k, v in inner.minimize(problem, detached, **(inner_kwargs or {})).items()}


def implicit(problem, hparams, params=None, *, solver: str = "cg", iters: int = 100, tol: float = 1e-10,
             precondition=None, step: float | None = None, momentum: float = 0.0, x0=None,
             stationarity_tol: float | None = 1e-6, inner_kwargs: dict | None = None,
             on_failure: str = "raise", return_info: bool = False):
    r"""Implicit-function-theorem hypergradient of ``problem`` at ``hparams``.

    ``params``: the inner solution θ* (a params dict). When None, θ* comes from
    ``problem.solve_inner`` (closed form) or ``metahpo_lib.inner.minimize(problem, hparams,
    **inner_kwargs)``. If :math:`\|\nabla_\theta L_{train}(\theta, \lambda)\| >`
    ``stationarity_tol`` a ``RuntimeWarning`` reports the norm: the formula assumes a
    stationary point (``stationarity_tol=None`` silences it).

    ``solver``: ``"cg"`` (default), ``"neumann"`` or ``"fixed_point"`` for :math:`H q =
    \nabla_\theta L_{val}`, with at most ``iters`` Hessian-vector products and relative
    tolerance ``tol``. ``precondition`` (CG only): None, ``"jacobi"`` (exact Hessian diagonal
    from ``n`` extra products, :func:`~metahpo_lib.linalg.hessian_diagonal`), the diagonal as a
    dict like params, or a function ``r -> M r``. ``step`` and ``momentum`` (Neumann / fixed
    point): the step α (default ``1/λ_max(H)``, estimated) and the heavy-ball β. ``x0``: a warm
    start for CG / fixed point (e.g. ``info.q`` of the previous call). ``on_failure``:
    ``"raise"`` (default) a :class:`~metahpo_lib.linalg.SolverError` when CG meets
    non-positive curvature or Neumann / fixed point diverge, or ``"warn"`` and use the last
    good iterate.

    Returns a dict with the keys and shapes of ``hparams`` (a ``HypergradResult``) whose
    ``.info`` reports the solve: ``"residual"`` (relative residual ``||v - Hq|| / ||v||``
    reached), ``"residuals"`` (its history, one per iteration), ``"converged"``, ``"iters"``,
    ``"hvps"`` (Hessian-vector products used, the cost) and ``"grad_norm"`` (inner gradient
    norm at params). With ``return_info=True`` a pair ``(hypergradient, ImplicitInfo)`` that
    also holds ``q`` (for warm starts) and the params used. A solve that does not reach ``tol``
    warns with the residual it reached.
    """
    hp = prepare_hparams(problem, hparams)
    V.choice(solver, "solver", set(_SOLVERS))
    V.choice(on_failure, "on_failure", {"raise", "warn"})
    iters = V.positive_int(iters, "iters")
    tol = V.positive_float(tol, "tol")
    if stationarity_tol is not None:
        stationarity_tol = V.positive_float(stationarity_tol, "stationarity_tol")
    if precondition is not None and solver != "cg":
        raise ValueError(f"precondition is only used by solver='cg', got solver={solver!r}")
    if (step is not None or momentum) and solver == "cg":
        raise ValueError("step and momentum are options of solver='neumann' / 'fixed_point', not of solver='cg'")
    if momentum and solver != "fixed_point":
        raise ValueError("momentum is an option of solver='fixed_point' only")
    if x0 is not None and solver == "neumann":
        raise ValueError("x0 (warm start) is an option of solver='cg' / 'fixed_point'; the Neumann series starts at 0")
    if params is None:
        params = _inner_solution(problem, hp, inner_kwargs)
    params = problem.check_params(params)
    keys = list(params)
    hkeys = list(hp)
    with torch.enable_grad():
        p = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        outer = problem.outer_loss(p, hp)
        g_outer = torch.autograd.grad(outer, [p[k] for k in keys] + [hp[k] for k in hkeys], allow_unused=True)
        v = {k: torch.zeros_like(p[k]) if g is None else g.detach() for k, g in zip(keys, g_outer)}
        direct = {k: torch.zeros_like(hp[k]) if g is None else g.detach()
                  for k, g in zip(hkeys, g_outer[len(keys):])}
        inner = problem.inner_loss(p, hp)
        g_inner = torch.autograd.grad(inner, [p[k] for k in keys], create_graph=True)
        grad_norm = math.sqrt(sum(float(g.detach().pow(2).sum()) for g in g_inner))
        if not math.isfinite(grad_norm):
            raise ValueError("the inner gradient at params is not finite (NaN or inf): check params and hparams")
        if stationarity_tol is not None and grad_norm > stationarity_tol:
            warnings.warn(f"params is not a stationary point of the inner loss: ||grad_theta L_train|| = {grad_norm:.3g} "
                          f"> stationarity_tol={stationarity_tol:g}; the implicit hypergradient assumes "
                          "grad_theta L_train = 0 and will be biased (solve the inner problem more accurately)",
                          RuntimeWarning, stacklevel=2)
        matvec = linalg._graph_hvp(g_inner, [p[k] for k in keys], keys)
        opts = dict(iters=iters, tol=tol, on_failure=on_failure)
        extra = 0  # Hessian-vector products outside the solver iterations
        if solver == "cg":
            if isinstance(precondition, str):
                V.choice(precondition, "precondition", {"jacobi"})
                hd = {k: x.detach() for k, x in hp.items()}
                precondition = linalg.hessian_diagonal(lambda th: problem.inner_loss(th, hd), params)
                extra += sum(x.numel() for x in params.values())  # one (batched) product per coordinate
            opts.update(precondition=precondition, x0=x0)
        else:
            opts.update(step=step)
            if solver == "fixed_point":
                opts.update(momentum=momentum, x0=x0)
        result = _SOLVERS[solver](matvec, v, **opts)
        if not result.converged:
            warnings.warn(f"implicit: the {solver} solve stopped at relative residual {result.relative_residual:.3g} "
                          f"> tol={tol:g} after {result.iters} iterations ({result.message}); raise iters or "
                          "precondition", RuntimeWarning, stacklevel=2)
        q = result.x
        # mixed term d/dλ <grad_theta L_train, q>, one more backward pass through the same graph
        mixed = torch.autograd.grad(g_inner, [hp[k] for k in hkeys], [q[k] for k in keys], allow_unused=True)
    hg = {k: direct[k] if m is None else direct[k] - m.detach() for k, m in zip(hkeys, mixed)}
    extra += 30 if step is None and solver != "cg" else 0  # power iteration for the default step
    hg = HypergradResult(hg, {"method": "implicit", "solver": solver, "iters": result.iters,
                              "residual": result.relative_residual, "converged": result.converged,
                              "hvps": result.iters + extra + (1 if x0 is not None else 0),
                              "grad_norm": grad_norm, "residuals": list(result.residuals)})
    if return_info:
        return hg, ImplicitInfo(result, grad_norm, {k: x.detach() for k, x in p.items()},
                                {k: x.detach() for k, x in q.items()})
    return hg
