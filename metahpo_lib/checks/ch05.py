"""Self-checks for the exercises of notebook 05 (hypergradients for real networks)."""

from __future__ import annotations

import torch

from .. import nets
from . import compare


def ref_reinforce_gradient(logits, samples, losses, baseline):
    r"""The score-function estimate :math:`\frac1N\sum_i (R_i - b)(e_{a_i} - \mathrm{softmax}(\alpha))` for one
    categorical: ``logits`` ``(C,)``, ``samples`` ``(N,)`` indices, ``losses`` ``(N,)`` (notebook 05).

    >>> import torch
    >>> from metahpo_lib.checks import ch05
    >>> ch05.ref_reinforce_gradient(torch.zeros(2), torch.tensor([0, 1]), torch.tensor([1.0, 3.0]), 2.0)
    tensor([-0.5000,  0.5000])
    """
    return nets.reinforce_gradient({"a": logits}, {"a": samples}, losses, baseline)["a"]


def reinforce_gradient(fn) -> None:
    """Check ``fn(logits, samples, losses, baseline) -> (C,) tensor`` (notebook 05).

    >>> from metahpo_lib.checks import ch05
    >>> ch05.reinforce_gradient(ch05.ref_reinforce_gradient)
    ✔ ref_reinforce_gradient matches the reference on 3 seeded case(s).
    """
    cases = []
    for seed, C, N, b in [(0, 2, 1, 0.0), (1, 4, 8, 1.5), (2, 6, 32, -0.3)]:
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(C, generator=g, dtype=torch.float64)
        a = torch.randint(0, C, (N,), generator=g)
        R = torch.rand(N, generator=g, dtype=torch.float64) * 3
        cases.append((f"C={C} choices, N={N} samples, baseline={b}", (logits, a, R, b), {}))
    compare(fn, ref_reinforce_gradient, cases, name=getattr(fn, "__name__", "reinforce_gradient"), rtol=1e-9,
            atol=1e-12)


def ref_cv_outer_loss(fit, loss, X, y, folds):
    r"""k-fold cross-validation outer loss :math:`\frac1k\sum_i \mathrm{loss}(\mathrm{fit}(X_{-i}, y_{-i}), X_i, y_i)`
    (``folds``: a list of (train indices, validation indices); notebook 05).

    >>> import torch
    >>> from metahpo_lib import nets
    >>> from metahpo_lib.checks import ch05
    >>> X, y = torch.arange(6.0)[:, None], torch.arange(6.0)
    >>> fit = lambda X, y: y.mean()                          # predict the training mean
    >>> loss = lambda m, X, y: ((y - m) ** 2).mean()
    >>> round(float(ch05.ref_cv_outer_loss(fit, loss, X, y, nets.kfold(6, 3, seed=0))), 4)
    3.75
    """
    return sum(loss(fit(X[tr], y[tr]), X[va], y[va]) for tr, va in folds) / len(folds)


def _ridge(log_alpha):
    def fit(X, y):
        d = X.shape[1]
        return torch.linalg.solve(X.T @ X / X.shape[0] + log_alpha.exp() * torch.eye(d, dtype=X.dtype), X.T @ y / X.shape[0])
    return fit


def _mse(w, X, y):
    return 0.5 * (X @ w - y).pow(2).mean()


def cv_outer_loss(fn) -> None:
    """Check ``fn(fit, loss, X, y, folds) -> scalar tensor`` and its hypergradient through ``fit`` (notebook 05).

    >>> from metahpo_lib.checks import ch05
    >>> ch05.cv_outer_loss(ch05.ref_cv_outer_loss)
    ✔ ref_cv_outer_loss matches the reference on 3 seeded case(s).
    """
    def with_grad(f):
        def run(log_alpha, X, y, folds):
            la = log_alpha.detach().clone().requires_grad_(True)
            value = f(_ridge(la), _mse, X, y, folds)
            if not isinstance(value, torch.Tensor) or not value.requires_grad:
                raise TypeError("return a tensor that still depends on the hyperparameters (do not call .item())")
            return {"loss": value.detach(), "hypergradient": torch.autograd.grad(value, la)[0]}
        run.__name__ = getattr(f, "__name__", "cv_outer_loss")
        return run
    cases = []
    for seed, n, d, k in [(0, 12, 3, 2), (1, 30, 5, 3), (2, 41, 4, 5)]:
        g = torch.Generator().manual_seed(seed)
        X = torch.randn(n, d, generator=g, dtype=torch.float64)
        y = X @ torch.randn(d, generator=g, dtype=torch.float64) + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
        cases.append((f"ridge, n={n}, d={d}, k={k} folds", (torch.tensor(-1.0, dtype=torch.float64), X, y,
                                                            nets.kfold(n, k, seed=seed)), {}))
    compare(with_grad(fn), with_grad(ref_cv_outer_loss), cases, rtol=1e-9, atol=1e-12)


def ref_average_hypergradient(hypergradient, hparams, seeds):
    r"""The mean :math:`\frac1S\sum_s g_s` of ``hypergradient(hparams, seed=s)`` over ``seeds`` (a dict like
    ``hparams``; notebook 05).

    >>> import torch
    >>> from metahpo_lib.checks import ch05
    >>> ch05.ref_average_hypergradient(lambda h, seed: {"a": torch.tensor(float(seed))}, {"a": torch.tensor(0.0)}, [1, 2, 6])
    {'a': tensor(3.)}
    """
    gs = [hypergradient(hparams, seed=s) for s in seeds]
    return {k: sum(g[k] for g in gs) / len(gs) for k in hparams}


def average_hypergradient(fn) -> None:
    """Check ``fn(hypergradient, hparams, seeds) -> dict like hparams`` (notebook 05).

    >>> from metahpo_lib.checks import ch05
    >>> ch05.average_hypergradient(ch05.ref_average_hypergradient)
    ✔ ref_average_hypergradient matches the reference on 3 seeded case(s).
    """
    def noisy(h, seed):
        g = torch.Generator().manual_seed(seed)
        return {k: 2 * v + torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in h.items()}
    h = {"log_lr": torch.tensor(-2.0, dtype=torch.float64), "log_wd": torch.tensor([-3.0, -4.0], dtype=torch.float64)}
    cases = [(f"{len(s)} seeds", (noisy, h, s), {}) for s in ([0], [0, 1, 2, 3], list(range(10, 26)))]
    compare(fn, ref_average_hypergradient, cases, name=getattr(fn, "__name__", "average_hypergradient"),
            rtol=1e-9, atol=1e-12)
