r"""Finite-difference hypergradients (notebook 02).

With :math:`f(\lambda) = L_{val}(\theta(\lambda), \lambda)` and :math:`e_i` the i-th unit vector:

- forward:  :math:`\partial_i f \approx (f(\lambda + \epsilon e_i) - f(\lambda)) / \epsilon`,
  error :math:`O(\epsilon)` truncation + :math:`O(u/\epsilon)` round-off, 1 + n inner solves;
- central:  :math:`\partial_i f \approx (f(\lambda + \epsilon e_i) - f(\lambda - \epsilon e_i)) / 2\epsilon`,
  error :math:`O(\epsilon^2) + O(u/\epsilon)`, 2n inner solves;
- SPSA (:func:`spsa`): random directions :math:`\Delta \in \{\pm1\}^n`,
  :math:`\hat g = \frac1K \sum_k \frac{f(\lambda + \epsilon\Delta_k) - f(\lambda - \epsilon\Delta_k)}{2\epsilon}\Delta_k`,
  2K inner solves whatever n (unbiased up to :math:`O(\epsilon^2)`, noisy).

(u: the unit round-off of the dtype.) How θ(λ) is obtained (``solver``):

- ``None`` (default): ``problem.solve_inner`` when the problem has one (closed form), else
  :func:`metahpo_lib.inner.minimize` (accurate L-BFGS + Newton);
- ``"closed_form"`` / ``"minimize"``: force one of the two;
- a callable ``solver(hparams) -> params``, e.g. ``lambda h: inner.run(problem, h, steps=100, lr=0.1)``
  to difference an unrolled inner loop.

The result is a dict like ``hparams`` (a :class:`HypergradResult`) whose ``.info`` says how many
inner solves it cost (``info["inner_solves"]``) and the eps used.
"""

from __future__ import annotations


import torch

from .. import _validate as V
from .. import inner as _inner
from ._common import HypergradResult, prepare_hparams

SCHEMES = ("forward", "central")


def default_eps(dtype: torch.dtype, scheme: str) -> float:
    r"""The textbook step that balances truncation and round-off: :math:`u^{1/2}` (forward), :math:`u^{1/3}` (central)."""
    u = torch.finfo(dtype).eps
    return u ** 0.5 if scheme == "forward" else u ** (1 / 3)


def _solver(problem, solver):
    if solver is None:
        solver = "closed_form" if problem.solve_inner is not None else "minimize"
    if callable(solver):
        return solver
    V.choice(solver, "solver", {"closed_form", "minimize"})
    if solver == "closed_form":
        if problem.solve_inner is None:
            raise ValueError(f"solver='closed_form' but problem {problem.name!r} has no solve_inner; "
                             "use solver='minimize' or pass a callable")
        return problem.solve_inner
    return lambda h: _inner.minimize(problem, h)


def _objective(problem, solve):
    """f(λ) = L_val(θ(λ), λ) evaluated without a graph."""

    def f(h):
        with torch.no_grad():
            value = problem.outer_loss(solve(h), h)
        return value.detach()

    return f


def finite_difference(problem, hparams, eps: float | None = None, scheme: str = "central", *, solver=None,
                      progress: bool = False) -> HypergradResult:
    r"""Hypergradient by finite differences, one hyperparameter coordinate at a time.

    ``eps``: the absolute step in hyperparameter units (default :func:`default_eps` for the dtype
    and scheme); ``scheme``: ``"forward"`` (1 + n inner solves) or ``"central"`` (2n);
    ``solver``: how θ(λ) is obtained (module docstring). ``.info["inner_solves"]`` holds the cost.
    """
    from tqdm.auto import tqdm

    hp = {k: v.detach() for k, v in prepare_hparams(problem, hparams).items()}
    V.choice(scheme, "scheme", SCHEMES)
    ref = next(iter(hp.values()))
    eps = default_eps(ref.dtype, scheme) if eps is None else V.positive_float(eps, "eps")
    f = _objective(problem, _solver(problem, solver))
    n = sum(v.numel() for v in hp.values())
    solves = 0
    f0 = None
    if scheme == "forward":
        f0 = f(hp)
        solves += 1
    out = {}
    bar = tqdm(total=n, desc=f"{scheme} differences", disable=not progress, leave=False)
    for k, v in hp.items():
        g = torch.empty_like(v).reshape(-1)
        for i in range(v.numel()):
            def shifted(sign):
                e = torch.zeros_like(v).reshape(-1)
                e[i] = sign * eps
                return {**hp, k: v + e.view_as(v)}

            if scheme == "forward":
                g[i] = (f(shifted(+1)) - f0) / eps
                solves += 1
            else:
                g[i] = (f(shifted(+1)) - f(shifted(-1))) / (2 * eps)
                solves += 2
            bar.update()
        out[k] = g.view_as(v)
    bar.close()
    if not all(bool(torch.isfinite(g).all()) for g in out.values()):
        raise ValueError(f"finite differences gave NaN/inf with eps={eps:g}: the outer loss is not finite near hparams")
    return HypergradResult(out, {"method": "finite_difference", "scheme": scheme, "eps": eps,
                                 "inner_solves": solves, "num_hparams": n})


def spsa(problem, hparams, eps: float | None = None, *, samples: int = 1, seed: int | torch.Generator = 0,
         solver=None) -> HypergradResult:
    r"""Simultaneous-perturbation (SPSA) hypergradient estimate with ``samples`` Rademacher directions.

    Costs ``2 * samples`` inner solves whatever the number of hyperparameters. Unbiased up to
    :math:`O(\epsilon^2)` (:math:`E[\Delta\Delta^\top] = I`); its variance shrinks like 1/samples.
    ``seed``: an int or a ``torch.Generator`` (CPU) for the directions.
    """
    hp = {k: v.detach() for k, v in prepare_hparams(problem, hparams).items()}
    V.positive_int(samples, "samples")
    ref = next(iter(hp.values()))
    eps = default_eps(ref.dtype, "central") if eps is None else V.positive_float(eps, "eps")
    if isinstance(seed, torch.Generator):
        gen = seed
    elif isinstance(seed, int) and not isinstance(seed, bool):
        gen = torch.Generator().manual_seed(seed)
    else:
        raise TypeError(f"seed must be an int or a torch.Generator, got {type(seed).__name__}")
    f = _objective(problem, _solver(problem, solver))
    acc = {k: torch.zeros_like(v) for k, v in hp.items()}
    for _ in range(samples):
        delta = {k: (torch.randint(0, 2, v.shape, generator=gen) * 2 - 1).to(v) for k, v in hp.items()}
        fp = f({k: v + eps * delta[k] for k, v in hp.items()})
        fm = f({k: v - eps * delta[k] for k, v in hp.items()})
        d = (fp - fm) / (2 * eps)
        for k in acc:
            acc[k] = acc[k] + d * delta[k]
    out = {k: a / samples for k, a in acc.items()}
    if not all(bool(torch.isfinite(g).all()) for g in out.values()):
        raise ValueError(f"SPSA gave NaN/inf with eps={eps:g}: the outer loss is not finite near hparams")
    return HypergradResult(out, {"method": "spsa", "eps": eps, "samples": samples, "inner_solves": 2 * samples,
                                 "num_hparams": sum(v.numel() for v in hp.values())})
