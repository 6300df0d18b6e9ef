"""Self-checks for the exercises of notebook 02 (finite-difference hypergradients)."""

from __future__ import annotations

import torch

from .. import hypergrad, problems
from . import compare


def _ridge(seed: int, d: int = 4, n: int = 40, m: int = 30, per_feature: bool = True):
    g = torch.Generator().manual_seed(seed)
    X, Xv = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(m, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    y = X @ w + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    yv = Xv @ w + 0.5 * torch.randn(m, generator=g, dtype=torch.float64)
    p = problems.ridge(X, y, Xv, yv, per_feature=per_feature)
    la = (torch.randn(d, generator=g, dtype=torch.float64) - 1) if per_feature else torch.tensor(-0.5, dtype=torch.float64)
    return p, {"log_alpha": la}


def _functions():
    def cubic(x):
        return (x ** 3).sum() + torch.sin(x).prod()

    def quadratic(x):
        A = torch.arange(1.0, 1.0 + x.numel() ** 2, dtype=x.dtype).reshape(x.numel(), x.numel()) / x.numel() ** 2
        return 0.5 * x @ (A @ A.T) @ x - x.sum()

    return [("f(x) = sum x^3 + prod sin x", cubic), ("a quadratic", quadratic)]


def ref_central_difference(f, x, eps):
    """(f(x + eps e_i) - f(x - eps e_i)) / (2 eps) for each coordinate i of the 1-D tensor x."""
    out = torch.empty_like(x)
    for i in range(x.numel()):
        e = torch.zeros_like(x)
        e[i] = eps
        out[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return out


def central_difference(fn) -> None:
    """Check ``fn(f, x, eps) -> (n,) tensor``: central differences of a scalar function."""
    cases = []
    for seed, (desc, f) in enumerate(_functions()):
        x = torch.randn(5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        for eps in (1e-3, 1e-5):
            cases.append((f"{desc}, x of shape (5,), eps={eps}", (f, x, eps), {}))
    compare(fn, ref_central_difference, cases, name=getattr(fn, "__name__", "central_difference"), rtol=1e-7, atol=1e-9)


def ref_fd_hypergradient(problem, hparams, eps):
    """Central differences of L_val(solve_inner(λ)) per coordinate of every hparams entry."""
    return dict(hypergrad.finite_difference(problem, hparams, eps=eps, scheme="central", inner_solve=problem.solve_inner))


def fd_hypergradient(fn) -> None:
    """Check ``fn(problem, hparams, eps) -> dict like hparams`` (central differences, closed-form solves)."""
    cases = []
    for seed, per_feature, eps in [(0, True, 1e-4), (1, True, 1e-6), (2, False, 1e-5)]:
        p, h = _ridge(seed, per_feature=per_feature)
        cases.append((f"ridge with {h['log_alpha'].numel()} hyperparameter(s), eps={eps}", (p, h, eps), {}))
    compare(fn, ref_fd_hypergradient, cases, name=getattr(fn, "__name__", "fd_hypergradient"), rtol=1e-6, atol=1e-9)


def ref_spsa_estimate(f, x, eps, samples, seed):
    """Mean over samples of (f(x + eps d) - f(x - eps d)) / (2 eps) * d, d Rademacher drawn as the exercise says."""
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros_like(x)
    for _ in range(samples):
        d = torch.randint(0, 2, x.shape, generator=gen).to(x.dtype) * 2 - 1
        total = total + (f(x + eps * d) - f(x - eps * d)) / (2 * eps) * d
    return total / samples


def spsa_estimate(fn) -> None:
    """Check ``fn(f, x, eps, samples, seed) -> (n,) tensor`` against the reference SPSA estimate."""
    cases = []
    for seed, (desc, f) in enumerate(_functions()):
        x = torch.randn(6, generator=torch.Generator().manual_seed(10 + seed), dtype=torch.float64)
        for samples in (1, 7):
            cases.append((f"{desc}, samples={samples}, seed={seed}", (f, x, 1e-4, samples, seed), {}))
    compare(fn, ref_spsa_estimate, cases, name=getattr(fn, "__name__", "spsa_estimate"), rtol=1e-7, atol=1e-9)
