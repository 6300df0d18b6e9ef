"""Self-checks for the exercises of notebook 04 (implicit hypergradients)."""

from __future__ import annotations

import math

from functools import partial

import torch

from .. import data, hypergrad, linalg, problems
from . import compare


def _spd(seed: int, n: int, cond: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (Q * torch.logspace(0, -math.log10(cond), n, dtype=torch.float64)) @ Q.T


def ref_neumann_solve(hvp, v, step, terms):
    r"""Truncated Neumann series :math:`H^{-1} v \approx \eta \sum_{k < K} (I - \eta H)^k v`, term by term
    (``step`` = η, ``terms`` = K; notebook 04).

    >>> import torch
    >>> from metahpo_lib.checks import ch04
    >>> H = torch.tensor([1.0, 2.0], dtype=torch.float64)                 # H = diag(1, 2)
    >>> x = ch04.ref_neumann_solve(lambda v: H * v, torch.ones(2, dtype=torch.float64), 0.5, 60)
    >>> [round(v, 6) for v in x.tolist()]                                 # H^{-1} (1, 1)
    [1.0, 0.5]
    """
    term, out = v.clone(), torch.zeros_like(v)
    for _ in range(terms):
        out = out + step * term
        term = term - step * hvp(term)
    return out


def neumann_solve(fn) -> None:
    """Check ``fn(hvp, v, step, terms) -> (n,) tensor``, the truncated Neumann series (notebook 04).

    >>> from metahpo_lib.checks import ch04
    >>> ch04.neumann_solve(ch04.ref_neumann_solve)
    ✔ ref_neumann_solve matches the reference on 3 seeded case(s).
    """
    cases = []
    for seed, n, cond, step, terms in [(0, 5, 10.0, 1.0, 1), (1, 8, 30.0, 0.9, 7), (2, 20, 100.0, 1.5, 60)]:
        H = _spd(seed, n, cond)
        v = torch.randn(n, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64)
        cases.append((f"a {n}x{n} SPD matrix, step={step}, terms={terms}", (lambda x, H=H: H @ x, v, step, terms), {}))
    compare(fn, ref_neumann_solve, cases, name=getattr(fn, "__name__", "neumann_solve"), rtol=1e-9, atol=1e-12)


def ref_ift_hypergradient(problem, hparams, params):
    r"""The implicit hypergradient at a stationary ``params`` (CG solved to 1e-13; notebook 04):
    :math:`\nabla_\lambda L_{val} - (\partial_\lambda \nabla_\theta L_{train})^\top q` with
    :math:`H q = \nabla_\theta L_{val}`.

    >>> import torch
    >>> from metahpo_lib import hypergrad, problems
    >>> from metahpo_lib.checks import ch04
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    >>> p = problems.ridge(X, y, X, y, per_feature=True)
    >>> h = p.init_hparams()
    >>> g = ch04.ref_ift_hypergradient(p, h, p.solve_inner(h))
    >>> [round(v, 4) for v in g["log_alpha"].tolist()]                    # = hypergrad.exact(p, h)
    [0.0026, 0.0874]
    """
    return dict(hypergrad.implicit(problem, hparams, params, solve=partial(linalg.cg, iters=2000, tol=1e-13),
                                  stationarity_tol=None))


def _ift_cases():
    cases = []
    s = data.make_regression(300, 12, condition=1e3, seed=1)
    ridge = problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val, per_feature=True)
    hp = {"log_alpha": torch.linspace(-4, 0, 12, dtype=torch.float64)}
    cases.append(("per-feature ridge (d=12, condition 1e3)", (ridge, hp, ridge.solve_inner(hp)), {}))
    w = data.load("wine")
    logi = problems.logistic(w.X_train, w.y_train, w.X_val, w.y_val, per_feature=True)
    hp = {"log_alpha": torch.linspace(-3, 1, 13, dtype=torch.float64)}
    cases.append(("per-feature softmax regression on wine (13 features, 3 classes)",
                  (logi, hp, linalg.newton_cg(lambda p: logi.inner_loss(p, hp), logi.init_params(), tol=1e-11)), {}))
    return cases


def ift_hypergradient(fn) -> None:
    """Check ``fn(problem, hparams, params) -> dict like hparams`` against ``hypergrad.implicit`` (notebook 04).

    Its second case solves softmax regression on wine to 1e-11 with Newton-CG, which takes about
    10 s on a 2-core CPU, so the call below is not run by the doctests.

    >>> from metahpo_lib.checks import ch04
    >>> ch04.ift_hypergradient(ch04.ref_ift_hypergradient)   # doctest: +SKIP
    ✔ ref_ift_hypergradient matches the reference on 2 seeded case(s).
    """
    compare(fn, ref_ift_hypergradient, _ift_cases(), name=getattr(fn, "__name__", "ift_hypergradient"),
            rtol=1e-6, atol=1e-9)


def ref_example_weight_hypergradient(X, y, X_val, y_val, z, gamma):
    r"""Hypergradient of the validation loss with respect to per-example weight logits ``z`` of weighted
    ridge regression (notebook 04), by autograd through the closed-form solution (float64):
    :math:`L_{train}(\theta, z) = \frac1n\sum_i \sigma(z_i)\,\tfrac12(x_i^\top\theta - y_i)^2 + \tfrac\gamma2\lVert\theta\rVert^2`,
    :math:`L_{val}(\theta) = \frac1{2m}\lVert X_{val}\theta - y_{val}\rVert^2`; returns the ``(n,)`` tensor
    :math:`dL_{val}/dz = -\tfrac1n\,\sigma'(z)\odot r\odot (Xq)` with :math:`r = X\theta^* - y`, :math:`Hq = \nabla_\theta L_{val}`.

    >>> import torch
    >>> from metahpo_lib.checks import ch04
    >>> X = torch.tensor([[1.0], [1.0], [1.0]], dtype=torch.float64)
    >>> y = torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64)          # the third target is an outlier
    >>> g = ch04.ref_example_weight_hypergradient(X, y, X, torch.zeros(3, dtype=torch.float64),
    ...                                          torch.zeros(3, dtype=torch.float64), 1e-3)
    >>> [round(v, 4) for v in g.tolist()]                               # raising the outlier's weight hurts
    [-0.1657, -0.1657, 0.3323]
    """
    z = z.detach().clone().requires_grad_(True)
    n, d = X.shape
    s = torch.sigmoid(z)
    H = X.T @ (s[:, None] * X) / n + gamma * torch.eye(d, dtype=X.dtype, device=X.device)
    theta = torch.linalg.solve(H, X.T @ (s * y) / n)
    val = 0.5 * (X_val @ theta - y_val).pow(2).mean()
    return torch.autograd.grad(val, z)[0]


def _weight_cases():
    cases = []
    for seed, n, d, m, corrupt in [(0, 8, 2, 6, 0.0), (1, 60, 5, 40, 0.2), (2, 300, 20, 100, 0.3)]:
        g = torch.Generator().manual_seed(seed)
        X = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.logspace(0, -1, d, dtype=torch.float64)
        Xv = torch.randn(m, d, generator=g, dtype=torch.float64) * torch.logspace(0, -1, d, dtype=torch.float64)
        w = torch.randn(d, generator=g, dtype=torch.float64)
        y = X @ w + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
        bad = torch.rand(n, generator=g) < corrupt
        y = torch.where(bad, y + 3 * torch.randn(n, generator=g, dtype=torch.float64), y)
        yv = Xv @ w + 0.1 * torch.randn(m, generator=g, dtype=torch.float64)
        z = torch.randn(n, generator=g, dtype=torch.float64)
        gamma = 10.0 ** -(seed + 1)
        cases.append((f"n={n} examples, d={d} features, {int(bad.sum())} corrupted targets, gamma={gamma:g}",
                      (X, y, Xv, yv, z, gamma), {}))
    return cases


def example_weight_hypergradient(fn) -> None:
    """Check ``fn(X, y, X_val, y_val, z, gamma) -> (n,) tensor``: the implicit hypergradient of per-example
    weights of ridge regression (notebook 04), against autograd through the closed form.

    >>> from metahpo_lib.checks import ch04
    >>> ch04.example_weight_hypergradient(ch04.ref_example_weight_hypergradient)
    ✔ ref_example_weight_hypergradient matches the reference on 3 seeded case(s).
    """
    compare(fn, ref_example_weight_hypergradient, _weight_cases(),
            name=getattr(fn, "__name__", "example_weight_hypergradient"), rtol=1e-6, atol=1e-10)
