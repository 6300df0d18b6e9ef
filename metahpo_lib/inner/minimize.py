r"""The accurate, non-differentiable inner solver :math:`\theta^*(\lambda)` (notebooks 02 and 04)."""

from __future__ import annotations

import torch

from .. import _validate as V
from .. import linalg
from ..linalg.newton import default_tol
from ..problems import Bilevel
from ..tree import Flat
from .run import DivergenceError, start_params

__all__ = ["minimize"]


def _lbfgs(f, x: torch.Tensor, tol: float, steps: int) -> torch.Tensor:
    """L-BFGS with a strong Wolfe line search on a flat vector, to ``max |grad| <= tol``."""
    x = x.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1, max_iter=steps, tolerance_grad=tol, tolerance_change=0.0, history_size=10,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = f(x)
        if not torch.isfinite(loss):
            raise DivergenceError(f"minimize: the inner loss became {float(loss)}; check the problem and hparams")
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return x.detach()


def minimize(problem, hparams, *, params=None, tol: float | None = None, steps: int = 500,
             warn: bool = True) -> dict[str, torch.Tensor]:
    r""":math:`\theta^*(\lambda) = \arg\min_\theta` ``problem.inner_loss(θ, λ)``, accurately and without a
    graph to λ: L-BFGS (at most ``steps`` iterations), then :func:`metahpo_lib.linalg.newton_cg`.

    ``tol`` bounds the largest entry of the inner gradient, :math:`\max_i |\partial L_{in}/\partial\theta_i|`
    (default 1e-13 in float64, 1e-5 in float32: what finite differences of the validation loss
    need). Meant for smooth convex inner problems (ridge, logistic). Returns detached params on
    the device and dtype of ``init_params()``; warns if ``tol`` was not reached.

    >>> from metahpo_lib import data, inner, problems
    >>> s = data.load("diabetes", seed=0)
    >>> p = problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val)
    >>> w = inner.minimize(p, p.init_hparams())
    >>> float((w["w"] - p.solve_inner(p.init_hparams())["w"]).abs().max()) < 1e-12
    True
    """
    if not isinstance(problem, Bilevel):
        raise TypeError(f"problem must be a metahpo_lib.problems.Bilevel, got {type(problem).__name__}")
    hparams = {k: v.detach() for k, v in problem.check_hparams(hparams).items()}
    like = {k: v.detach() for k, v in start_params(problem, params).items()}
    tol = default_tol(next(iter(like.values())).dtype) if tol is None else V.positive_float(tol, "tol")
    V.positive_int(steps, "steps")
    fl = Flat(like)
    x = _lbfgs(lambda v: problem.inner_loss(fl.tree(v), hparams), fl.flat(like), tol, steps)
    theta = linalg.newton_cg(lambda p: problem.inner_loss(p, hparams), fl.tree(x), tol=tol, warn=False)
    gmax = max(float(g.abs().max()) for g in _inner_grad(problem, theta, hparams).values())
    if warn and gmax > tol:
        import warnings
        warnings.warn(f"inner.minimize stopped with max |grad| = {gmax:.3g} > tol = {tol:g}; the inner problem may "
                      "be ill-conditioned or not smooth; raise tol", RuntimeWarning, stacklevel=2)
    return {k: v.clone() for k, v in theta.items()}


def _inner_grad(problem, params, hparams):
    with torch.enable_grad():
        p = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        return dict(zip(p, torch.autograd.grad(problem.inner_loss(p, hparams), list(p.values()))))
