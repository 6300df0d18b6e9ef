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


def ref_precision_recall(weights, flipped, threshold=0.5):
    """Flag the examples with weight < threshold; precision = TP / flagged and recall = TP / flipped of the
    flags (0.0 when undefined; notebook 04).

    >>> import torch
    >>> from metahpo_lib.checks import ch04
    >>> weights = torch.tensor([0.2, 0.8, 0.4, 0.9])          # flags examples 0 and 2
    >>> ch04.ref_precision_recall(weights, torch.tensor([True, True, False, False]))
    (0.5, 0.5)
    """
    flagged = weights < threshold
    tp = int((flagged & flipped).sum())
    nf, np_ = int(flagged.sum()), int(flipped.sum())
    return (tp / nf if nf else 0.0, tp / np_ if np_ else 0.0)


def precision_recall(fn) -> None:
    """Check ``fn(weights, flipped, threshold=0.5) -> (precision, recall)`` (two floats; notebook 04).

    >>> from metahpo_lib.checks import ch04
    >>> ch04.precision_recall(ch04.ref_precision_recall)
    ✔ ref_precision_recall matches the reference on 4 seeded case(s).
    """
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
