r"""Newton-CG: the library's one second-order minimiser (notebook 04; used by ``inner.minimize``)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch

from .. import _validate as V
from .. import tree
from .hvp import hvp
from .solvers import SolverError, cg

__all__ = ["newton_cg", "default_tol"]


def default_tol(dtype: torch.dtype) -> float:
    """The gradient tolerance a smooth inner problem can reach in ``dtype``: 1e-13 in float64,
    1e-5 in float32 (a few hundred unit round-offs of an O(1) loss).

    >>> import torch
    >>> from metahpo_lib.linalg.newton import default_tol
    >>> default_tol(torch.float64), default_tol(torch.float32)
    (1e-13, 1e-05)
    """
    return 1e-13 if dtype == torch.float64 else 1e-5


def _gradient(f, params: dict) -> tuple[float, dict]:
    with torch.enable_grad():
        p = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        value = V.scalar_loss(f(p), "f")
        g = torch.autograd.grad(value, list(p.values()))
    return float(value.detach()), {k: x.detach() for k, x in zip(p, g)}


def _line_search(f, params: dict, d: dict, f0: float, slope: float) -> dict | None:
    """Armijo backtracking along ``-d`` with a round-off allowance (near the minimum the loss
    changes by less than its own rounding error); None when no step decreases ``f``."""
    allowance = 16 * torch.finfo(next(iter(params.values())).dtype).eps * max(abs(f0), 1.0)
    t = 1.0
    with torch.no_grad():
        while t > 1e-10:
            trial = {k: params[k] - t * d[k] for k in params}
            if float(f(trial)) <= f0 + 1e-4 * t * slope + allowance:
                return trial
            t *= 0.5
    return None


def newton_cg(f: Callable[[dict], torch.Tensor], params: dict, *, tol: float | None = None, steps: int = 50,
              iters: int = 500, warn: bool = True) -> dict:
    r"""Minimise a smooth convex ``f(params)`` by inexact Newton steps
    :math:`\theta \leftarrow \theta - t\, H^{-1} \nabla f`, with :math:`H^{-1}\nabla f` from :func:`cg`
    (at most ``iters`` Hessian-vector products, forcing term :math:`\min(0.5, \sqrt{\|\nabla f\|})`)
    and an Armijo line search.

    ``tol`` bounds the largest gradient entry, :math:`\max_i |\partial f/\partial\theta_i|`
    (default :func:`default_tol` of the dtype). Stops after ``steps`` Newton steps, or when a
    step no longer reduces the gradient (round-off reached); then warns (``warn=True``) if
    ``tol`` was not met. A flat direction of ``f`` (e.g. softmax logits shifted together) is
    harmless: CG stays in the range of :math:`H`. Returns detached params.

    >>> import torch
    >>> from metahpo_lib import linalg
    >>> f = lambda p: ((p["x"] - 3) ** 4).sum() + (p["x"] ** 2).sum()
    >>> linalg.newton_cg(f, {"x": torch.zeros(2, dtype=torch.float64)})["x"]
    tensor([2., 2.], dtype=torch.float64)
    """
    if not callable(f):
        raise TypeError(f"f must be a function params -> scalar tensor, got {type(f).__name__}")
    params = {k: v.detach() for k, v in V.tensor_dict(params, "params").items()}
    tol = default_tol(next(iter(params.values())).dtype) if tol is None else V.positive_float(tol, "tol")
    V.positive_int(steps, "steps", 0)
    V.positive_int(iters, "iters")
    value, g = _gradient(f, params)
    gmax = max(float(x.abs().max()) for x in g.values())
    for _ in range(steps):
        if not math.isfinite(gmax):
            raise SolverError("newton_cg: the gradient is not finite (NaN or inf)")
        if gmax <= tol:
            break
        gnorm = float(tree.norm(g))
        with warnings.catch_warnings():  # truncated CG: stopping at non-positive curvature is part of the method
            warnings.simplefilter("ignore", RuntimeWarning)
            d = cg(hvp(f, params), g, iters=iters, tol=min(0.5, math.sqrt(gnorm)), on_failure="warn").x
        slope = -float(tree.dot(g, d))
        if not slope < 0:  # CG stopped before giving a descent direction: use the gradient
            d, slope = g, -gnorm ** 2
        trial = _line_search(f, params, d, value, slope)
        if trial is None:
            break
        t_value, t_g = _gradient(f, trial)
        t_gmax = max(float(x.abs().max()) for x in t_g.values())
        if t_gmax >= gmax and t_value >= value:  # round-off reached: no further progress possible
            break
        params, value, g, gmax = trial, t_value, t_g, t_gmax
    if warn and not gmax <= tol:
        warnings.warn(f"newton_cg stopped with max |grad| = {gmax:.3g} > tol = {tol:g}", RuntimeWarning, stacklevel=2)
    return {k: v.detach() for k, v in params.items()}
