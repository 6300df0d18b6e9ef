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
    """step * sum_{k < terms} (I - step H)^k v, term by term (the reference)."""
    term, out = v.clone(), torch.zeros_like(v)
    for _ in range(terms):
        out = out + step * term
        term = term - step * hvp(term)
    return out


def neumann_solve(fn) -> None:
    """Check ``fn(hvp, v, step, terms) -> (n,) tensor``, the truncated Neumann series."""
    cases = []
    for seed, n, cond, step, terms in [(0, 5, 10.0, 1.0, 1), (1, 8, 30.0, 0.9, 7), (2, 20, 100.0, 1.5, 60)]:
        H = _spd(seed, n, cond)
        v = torch.randn(n, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64)
        cases.append((f"a {n}x{n} SPD matrix, step={step}, terms={terms}", (lambda x, H=H: H @ x, v, step, terms), {}))
    compare(fn, ref_neumann_solve, cases, name=getattr(fn, "__name__", "neumann_solve"), rtol=1e-9, atol=1e-12)


def ref_ift_hypergradient(problem, hparams, params):
    """The implicit hypergradient at a stationary ``params`` (CG solved to 1e-13)."""
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
    """Check ``fn(problem, hparams, params) -> dict like hparams`` against ``hypergrad.implicit``."""
    compare(fn, ref_ift_hypergradient, _ift_cases(), name=getattr(fn, "__name__", "ift_hypergradient"),
            rtol=1e-6, atol=1e-9)


def ref_precision_recall(weights, flipped, threshold=0.5):
    """Flag the examples with weight < threshold; precision and recall of the flags (0.0 when undefined)."""
    flagged = weights < threshold
    tp = int((flagged & flipped).sum())
    nf, np_ = int(flagged.sum()), int(flipped.sum())
    return (tp / nf if nf else 0.0, tp / np_ if np_ else 0.0)


def precision_recall(fn) -> None:
    """Check ``fn(weights, flipped, threshold=0.5) -> (precision, recall)`` (two floats)."""
    g = torch.Generator().manual_seed(4)
    flipped = torch.rand(200, generator=g) < 0.3
    weights = torch.where(flipped, 0.3, 0.7) + 0.35 * torch.randn(200, generator=g)
    cases = [
        ("200 examples, 30% flipped, noisy weights", (weights, flipped), {}),
        ("the same with threshold=0.3", (weights, flipped), {"threshold": 0.3}),
        ("nothing flagged (all weights 1)", (torch.ones(10), torch.tensor([True] * 3 + [False] * 7)), {}),
        ("every example flagged", (torch.zeros(6), torch.tensor([True, False] * 3)), {}),
    ]
    compare(fn, ref_precision_recall, cases, name=getattr(fn, "__name__", "precision_recall"), rtol=1e-12, atol=0)
