"""Self-checks for the exercises of notebook 01 (HPO as a bilevel problem)."""

from __future__ import annotations

import torch

from .. import hypergrad, problems
from ..hpo import bayesopt
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


def ref_expected_improvement(mean, std, best, xi=0.0):
    r"""Expected improvement below ``best`` (minimisation) of :math:`f \sim N(\mu, \sigma^2)`, elementwise
    (notebook 01): :math:`(f_{best} - \xi - \mu)\Phi(z) + \sigma\varphi(z)`, :math:`z = (f_{best} - \xi - \mu)/\sigma`,
    and :math:`\max(f_{best} - \xi - \mu, 0)` where :math:`\sigma = 0`.

    >>> import torch
    >>> from metahpo_lib.checks import ch01
    >>> ei = ch01.ref_expected_improvement(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0]), 0.5)
    >>> [round(v, 4) for v in ei.tolist()]
    [0.6978, 0.0]
    """
    return bayesopt.expected_improvement(mean, std, best, xi)


def _ei_case(seed: int, m: int, zero_std: int):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(m, generator=g, dtype=torch.float64)
    std = torch.rand(m, generator=g, dtype=torch.float64) * 1.5
    std[:zero_std] = 0.0
    return mean, std


def expected_improvement(fn) -> None:
    """Check ``fn(mean, std, best, xi) -> tensor`` (the expected-improvement acquisition) against the library's
    :func:`~metahpo_lib.hpo.bayesopt.expected_improvement` in float64, with and without ``xi`` and where
    ``std`` is 0 (notebook 01).

    >>> from metahpo_lib.checks import ch01
    >>> ch01.expected_improvement(ch01.ref_expected_improvement)
    ✔ ref_expected_improvement matches the reference on 4 seeded case(s).
    """
    cases = []
    for seed, m, zero_std, best, xi in [(0, 6, 0, 0.0, 0.0), (1, 20, 0, -0.5, 0.1), (2, 8, 3, 0.3, 0.0),
                                        (3, 50, 5, 1.0, 0.5)]:
        mean, std = _ei_case(seed, m, zero_std)
        where = f", {zero_std} of them with std = 0" if zero_std else ""
        cases.append((f"{m} seeded points{where}, best={best}, xi={xi}", (mean, std, best, xi), {}))
    compare(fn, ref_expected_improvement, cases, name=getattr(fn, "__name__", "expected_improvement"),
            rtol=1e-8, atol=1e-12)


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
