r"""Finite-difference hypergradients (notebook 02).

With :math:`f(\lambda) = L_{val}(\theta(\lambda), \lambda)` and :math:`e_i` the i-th unit vector:

- forward:  :math:`\partial_i f \approx (f(\lambda + \epsilon e_i) - f(\lambda)) / \epsilon`,
  error :math:`O(\epsilon)` truncation + :math:`O(u/\epsilon)` round-off, 1 + n inner solves;
- central:  :math:`\partial_i f \approx (f(\lambda + \epsilon e_i) - f(\lambda - \epsilon e_i)) / 2\epsilon`,
  error :math:`O(\epsilon^2) + O(u/\epsilon)`, 2n inner solves;
- SPSA (:func:`spsa`): random directions :math:`\Delta \in \{\pm1\}^n`,
  :math:`\hat g = \frac1K \sum_k \frac{f(\lambda + \epsilon\Delta_k) - f(\lambda - \epsilon\Delta_k)}{2\epsilon}\Delta_k`,
  2K inner solves whatever n (unbiased up to :math:`O(\epsilon^2)`, noisy).

(u: the unit round-off of the dtype.) How θ(λ) is obtained (``inner_solve``): by default
``problem.solve_inner`` when the problem has a closed form, else :func:`metahpo_lib.inner.minimize`
(L-BFGS + Newton-CG to round-off, so that the differences measure the outer loss, not the
solver's error); or any function ``inner_solve(hparams) -> params``, e.g.
``lambda h: inner.run(problem, h, inner.GD(lr=0.1), steps=100)`` to difference an unrolled loop.

The result is a dict like ``hparams`` (a :class:`HypergradResult`) whose ``.info`` says how many
inner solves it cost (``info["inner_solves"]``) and the eps used.
"""

from __future__ import annotations


import torch

from .. import _validate as V
from .. import inner as _inner
from ..tree import Flat
from ._common import HypergradResult, prepare_hparams

SCHEMES = ("forward", "central")


def default_eps(dtype: torch.dtype, scheme: str) -> float:
    r"""The textbook step that balances truncation and round-off: :math:`u^{1/2}` (forward), :math:`u^{1/3}` (central).

    >>> import torch
    >>> from metahpo_lib.hypergrad.finite_difference import default_eps
    >>> f"{default_eps(torch.float64, 'central'):.2e}", f"{default_eps(torch.float32, 'forward'):.2e}"
    ('6.06e-06', '3.45e-04')
    """
    u = torch.finfo(dtype).eps
    return u ** 0.5 if scheme == "forward" else u ** (1 / 3)


def _inner_solve(problem, inner_solve):
    if inner_solve is None:
        return problem.solve_inner or (lambda h: _inner.minimize(problem, h))
    if not callable(inner_solve):
        raise TypeError(f"inner_solve must be None or a function hparams -> params, got {type(inner_solve).__name__}")
    return inner_solve


def _objective(problem, solve, like):
    """f(x) = L_val(θ(λ), λ) of the flattened hparams x, evaluated without a graph."""
    fl = Flat(like)

    def f(x):
        h = fl.tree(x)
        with torch.no_grad():
            return problem.outer_loss(solve(h), h).detach()
    return f, fl.flat(like)


def _finite(g: torch.Tensor, method: str, eps: float) -> torch.Tensor:
    if not bool(torch.isfinite(g).all()):
        raise ValueError(f"{method} gave NaN/inf with eps={eps:g}: the outer loss is not finite near hparams")
    return g


def finite_difference(problem, hparams, eps: float | None = None, scheme: str = "central", *, inner_solve=None,
                      progress: bool = False) -> HypergradResult:
    r"""Hypergradient by finite differences, one hyperparameter coordinate at a time.

    ``eps``: the absolute step in hyperparameter units (default :func:`default_eps` for the dtype
    and scheme); ``scheme``: ``"forward"`` (1 + n inner solves) or ``"central"`` (2n);
    ``inner_solve``: how θ(λ) is obtained (module docstring). ``.info["inner_solves"]`` holds the cost.

    >>> from metahpo_lib import data, hypergrad, problems
    >>> s = data.load("diabetes", seed=0)
    >>> p = problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val)
    >>> g = hypergrad.finite_difference(p, p.init_hparams())
    >>> round(float(g["log_alpha"]), 6), g.info["inner_solves"]
    (0.040814, 2)
    """
    from tqdm.auto import tqdm

    hp = {k: v.detach() for k, v in prepare_hparams(problem, hparams).items()}
    V.choice(scheme, "scheme", SCHEMES)
    eps = default_eps(next(iter(hp.values())).dtype, scheme) if eps is None else V.positive_float(eps, "eps")
    f, x = _objective(problem, _inner_solve(problem, inner_solve), hp)
    f0 = f(x) if scheme == "forward" else None
    g = torch.empty_like(x)
    for i in tqdm(range(x.numel()), desc=f"{scheme} differences", disable=not progress, leave=False):
        e = torch.zeros_like(x)
        e[i] = eps
        g[i] = (f(x + e) - f0) / eps if scheme == "forward" else (f(x + e) - f(x - e)) / (2 * eps)
    n = x.numel()
    return HypergradResult(Flat(hp).tree(_finite(g, "finite differences", eps)),
                           {"method": "finite_difference", "scheme": scheme, "eps": eps,
                            "inner_solves": n + 1 if scheme == "forward" else 2 * n, "num_hparams": n})


def spsa(problem, hparams, eps: float | None = None, *, samples: int = 1, seed: int | torch.Generator = 0,
         inner_solve=None) -> HypergradResult:
    r"""Simultaneous-perturbation (SPSA) hypergradient estimate with ``samples`` Rademacher directions.

    Costs ``2 * samples`` inner solves whatever the number of hyperparameters. Unbiased up to
    :math:`O(\epsilon^2)` (:math:`E[\Delta\Delta^\top] = I`); its variance shrinks like 1/samples.
    ``seed``: an int or a ``torch.Generator`` for the directions.

    >>> from metahpo_lib import data, hypergrad, problems
    >>> s = data.load("diabetes", seed=0)
    >>> p = problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val)   # one hyperparameter: SPSA is exact
    >>> round(float(hypergrad.spsa(p, p.init_hparams(), samples=2)["log_alpha"]), 6)
    0.040814
    """
    hp = {k: v.detach() for k, v in prepare_hparams(problem, hparams).items()}
    V.positive_int(samples, "samples")
    eps = default_eps(next(iter(hp.values())).dtype, "central") if eps is None else V.positive_float(eps, "eps")
    gen = V.generator(seed)
    f, x = _objective(problem, _inner_solve(problem, inner_solve), hp)
    g = torch.zeros_like(x)
    for _ in range(samples):
        delta = (torch.randint(0, 2, x.shape, generator=gen) * 2 - 1).to(x)
        g += (f(x + eps * delta) - f(x - eps * delta)) / (2 * eps) * delta
    return HypergradResult(Flat(hp).tree(_finite(g / samples, "SPSA", eps)),
                           {"method": "spsa", "eps": eps, "samples": samples, "inner_solves": 2 * samples,
                            "num_hparams": x.numel()})
