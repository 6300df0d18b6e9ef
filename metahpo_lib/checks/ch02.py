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
    """Central differences ``(f(x + eps e_i) - f(x - eps e_i)) / (2 eps)`` for each coordinate i of the
    1-D tensor x (notebook 02).

    >>> import torch
    >>> from metahpo_lib.checks import ch02
    >>> x = torch.tensor([1.0, -2.0], dtype=torch.float64)
    >>> [round(v, 4) for v in ch02.ref_central_difference(lambda x: (x ** 3).sum(), x, 1e-3).tolist()]   # 3 x^2
    [3.0, 12.0]
    """
    out = torch.empty_like(x)
    for i in range(x.numel()):
        e = torch.zeros_like(x)
        e[i] = eps
        out[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return out


def central_difference(fn) -> None:
    """Check ``fn(f, x, eps) -> (n,) tensor``: central differences of a scalar function (notebook 02).

    >>> from metahpo_lib.checks import ch02
    >>> ch02.central_difference(ch02.ref_central_difference)
    ✔ ref_central_difference matches the reference on 4 seeded case(s).
    """
    cases = []
    for seed, (desc, f) in enumerate(_functions()):
        x = torch.randn(5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        for eps in (1e-3, 1e-5):
            cases.append((f"{desc}, x of shape (5,), eps={eps}", (f, x, eps), {}))
    compare(fn, ref_central_difference, cases, name=getattr(fn, "__name__", "central_difference"), rtol=1e-7, atol=1e-9)


def ref_fd_hypergradient(problem, hparams, eps):
    """Central differences of ``L_val(solve_inner(λ))`` per coordinate of every hparams entry (notebook 02).

    >>> import torch
    >>> from metahpo_lib import hypergrad, problems
    >>> from metahpo_lib.checks import ch02
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    >>> p = problems.ridge(X, y, X, y, per_feature=True)
    >>> fd = ch02.ref_fd_hypergradient(p, p.init_hparams(), 1e-5)["log_alpha"]
    >>> exact = hypergrad.exact(p, p.init_hparams())["log_alpha"]
    >>> [round(v, 4) for v in fd.tolist()], float((fd - exact).abs().max()) < 1e-8
    ([0.0026, 0.0874], True)
    """
    return dict(hypergrad.finite_difference(problem, hparams, eps=eps, scheme="central", inner_solve=problem.solve_inner))


def fd_hypergradient(fn) -> None:
    """Check ``fn(problem, hparams, eps) -> dict like hparams`` (central differences, closed-form solves;
    notebook 02).

    >>> from metahpo_lib.checks import ch02
    >>> ch02.fd_hypergradient(ch02.ref_fd_hypergradient)
    ✔ ref_fd_hypergradient matches the reference on 3 seeded case(s).
    """
    cases = []
    for seed, per_feature, eps in [(0, True, 1e-4), (1, True, 1e-6), (2, False, 1e-5)]:
        p, h = _ridge(seed, per_feature=per_feature)
        cases.append((f"ridge with {h['log_alpha'].numel()} hyperparameter(s), eps={eps}", (p, h, eps), {}))
    compare(fn, ref_fd_hypergradient, cases, name=getattr(fn, "__name__", "fd_hypergradient"), rtol=1e-6, atol=1e-9)


def ref_spsa_estimate(f, x, eps, samples, seed):
    """SPSA: the mean over ``samples`` of ``(f(x + eps d) - f(x - eps d)) / (2 eps) * d``, d Rademacher drawn
    as the exercise says (notebook 02).

    >>> import torch
    >>> from metahpo_lib.checks import ch02
    >>> x = torch.tensor([1.0, -2.0], dtype=torch.float64)   # sum x^2 has gradient g = (2, -4) here
    >>> [round(v, 4) for v in ch02.ref_spsa_estimate(lambda x: (x ** 2).sum(), x, 1e-3, 1, 0).tolist()]
    [6.0, -6.0]

    One draw, d = (1, -1), gives (g · d) d: unbiased, but noisy.
    """
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros_like(x)
    for _ in range(samples):
        d = torch.randint(0, 2, x.shape, generator=gen).to(x.dtype) * 2 - 1
        total = total + (f(x + eps * d) - f(x - eps * d)) / (2 * eps) * d
    return total / samples


def spsa_estimate(fn) -> None:
    """Check ``fn(f, x, eps, samples, seed) -> (n,) tensor`` against the reference SPSA estimate (notebook 02).

    >>> from metahpo_lib.checks import ch02
    >>> ch02.spsa_estimate(ch02.ref_spsa_estimate)
    ✔ ref_spsa_estimate matches the reference on 4 seeded case(s).
    """
    cases = []
    for seed, (desc, f) in enumerate(_functions()):
        x = torch.randn(6, generator=torch.Generator().manual_seed(10 + seed), dtype=torch.float64)
        for samples in (1, 7):
            cases.append((f"{desc}, samples={samples}, seed={seed}", (f, x, 1e-4, samples, seed), {}))
    compare(fn, ref_spsa_estimate, cases, name=getattr(fn, "__name__", "spsa_estimate"), rtol=1e-7, atol=1e-9)
