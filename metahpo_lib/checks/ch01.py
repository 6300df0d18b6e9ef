"""Self-checks for the exercises of notebook 01 (HPO as a bilevel problem)."""

from __future__ import annotations

import torch

from .. import hypergrad, problems
from . import compare


def _ridge_data(seed: int, n: int = 40, d: int = 5, m: int = 30):
    g = torch.Generator().manual_seed(seed)
    X, Xv = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(m, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    return X, X @ w + 0.5 * torch.randn(n, generator=g, dtype=torch.float64), Xv, Xv @ w + 0.5 * torch.randn(
        m, generator=g, dtype=torch.float64)


def ref_ridge_closed_form(X, y, alpha):
    r"""The ridge solution :math:`w^* = (X^\top X / n + \mathrm{diag}(\alpha))^{-1} X^\top y / n` (notebook 01).

    >>> import torch
    >>> from metahpo_lib.checks import ch01
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 2.0], dtype=torch.float64)
    >>> [round(v, 4) for v in ch01.ref_ridge_closed_form(X, y, 0.5).tolist()]   # diag(1, 2.5) w = (0.5, 2)
    [0.5, 0.8]
    """
    n, d = X.shape
    return torch.linalg.solve(X.T @ X / n + torch.diag(torch.as_tensor(alpha, dtype=X.dtype).expand(d)), X.T @ y / n)


def ridge_closed_form(fn) -> None:
    """Check ``fn(X, y, alpha) -> w`` against the ridge closed form, scalar and per-feature alpha (notebook 01).

    >>> from metahpo_lib.checks import ch01
    >>> ch01.ridge_closed_form(ch01.ref_ridge_closed_form)
    ✔ ref_ridge_closed_form matches the reference on 3 seeded case(s).
    """
    cases = []
    for seed, alpha in [(0, 1.0), (1, 1e-3), (2, torch.tensor([0.1, 1.0, 10.0, 0.5, 2.0], dtype=torch.float64))]:
        X, y, _, _ = _ridge_data(seed)
        cases.append((f"n=40, d=5, alpha={alpha if isinstance(alpha, float) else 'per-feature'}", (X, y, alpha), {}))
    compare(fn, ref_ridge_closed_form, cases, name=getattr(fn, "__name__", "ridge_closed_form"))


def ref_validation_curve(X_train, y_train, X_val, y_val, log_alphas):
    r"""Validation loss :math:`L_{val}(w^*(\alpha)) = \|X_{val} w^* - y_{val}\|^2 / (2m)` for each log alpha
    (notebook 01).

    >>> import torch
    >>> from metahpo_lib.checks import ch01
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    >>> curve = ch01.ref_validation_curve(X, y, X, y, torch.tensor([-2.0, 0.0, 2.0], dtype=torch.float64))
    >>> [round(v, 4) for v in curve.tolist()]   # more regularisation, worse fit of these points
    [0.2991, 0.3675, 0.6469]
    """
    p = problems.ridge(X_train, y_train, X_val, y_val)
    return torch.stack([p.outer_loss(p.solve_inner({"log_alpha": la}), {}) for la in log_alphas])


def validation_curve(fn) -> None:
    """Check ``fn(X_train, y_train, X_val, y_val, log_alphas) -> (k,) tensor`` of validation losses (notebook 01).

    >>> from metahpo_lib.checks import ch01
    >>> ch01.validation_curve(ch01.ref_validation_curve)
    ✔ ref_validation_curve matches the reference on 1 seeded case(s).
    """
    X, y, Xv, yv = _ridge_data(3)
    grid = torch.linspace(-6, 4, 11, dtype=torch.float64)
    compare(fn, ref_validation_curve, [("11 values of log alpha in [-6, 4]", (X, y, Xv, yv, grid), {})],
            name=getattr(fn, "__name__", "validation_curve"))


def ref_random_search(objective, low, high, budget, seed):
    """Log-uniform random search on [low, high] (natural-log bounds), as the exercise specifies (notebook 01):
    ``x_i = low + u_i (high - low)``, ``u`` uniform from ``seed``; returns ``(xs, values, best_so_far)``.

    >>> from metahpo_lib.checks import ch01
    >>> xs, values, best = ch01.ref_random_search(lambda x: (x - 1.3) ** 2, -5.0, 5.0, 4, 0)
    >>> [round(v, 4) for v in best.tolist()]
    [11.5636, 0.6056, 0.6056, 0.6056]
    """
    u = torch.rand(budget, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    xs = low + u * (high - low)
    values = [float(objective(x)) for x in xs]
    best, curve = float("inf"), []
    for v in values:
        best = min(best, v)
        curve.append(best)
    return xs, torch.tensor(values, dtype=torch.float64), torch.tensor(curve, dtype=torch.float64)


def random_search(fn) -> None:
    """Check ``fn(objective, low, high, budget, seed) -> (xs, values, best_so_far)`` (notebook 01).

    >>> from metahpo_lib.checks import ch01
    >>> ch01.random_search(ch01.ref_random_search)
    ✔ ref_random_search matches the reference on 3 seeded case(s).
    """
    def quadratic(x):
        return (x - 1.3) ** 2

    cases = [(f"a quadratic, budget={b}, seed={s}", (quadratic, -5.0, 5.0, b, s), {}) for b, s in [(1, 0), (10, 1), (25, 7)]]
    compare(fn, ref_random_search, cases, name=getattr(fn, "__name__", "random_search"))


def ref_ridge_hypergradient(X_train, y_train, X_val, y_val, log_alpha):
    r"""Hypergradient :math:`d L_{val}(w^*(\alpha)) / d \log\alpha` by autograd through the closed form
    (scalar log alpha; notebook 01).

    >>> import torch
    >>> from metahpo_lib.checks import ch01
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    >>> round(float(ch01.ref_ridge_hypergradient(X, y, X, y, 0.0)), 4)   # > 0: less regularisation helps
    0.0901
    """
    p = problems.ridge(X_train, y_train, X_val, y_val)
    return hypergrad.exact(p, {"log_alpha": torch.as_tensor(log_alpha, dtype=X_train.dtype)})["log_alpha"]


def ridge_hypergradient(fn) -> None:
    """Check ``fn(X_train, y_train, X_val, y_val, log_alpha) -> scalar tensor`` against autograd (notebook 01).

    >>> from metahpo_lib.checks import ch01
    >>> ch01.ridge_hypergradient(ch01.ref_ridge_hypergradient)
    ✔ ref_ridge_hypergradient matches the reference on 3 seeded case(s).
    """
    cases = []
    for seed, la in [(4, 0.0), (5, -3.0), (6, 2.0)]:
        X, y, Xv, yv = _ridge_data(seed)
        cases.append((f"log_alpha={la}", (X, y, Xv, yv, torch.tensor(la, dtype=torch.float64)), {}))
    compare(fn, ref_ridge_hypergradient, cases, name=getattr(fn, "__name__", "ridge_hypergradient"))
