"""Self-checks for the exercises of notebook 03 (unrolled hypergradients, hypergradient descent)."""

from __future__ import annotations

import torch

from .. import hypergrad, inner, problems
from . import compare


def _data(seed: int, d: int = 4, n: int = 40, m: int = 30):
    g = torch.Generator().manual_seed(seed)
    X, Xv = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(m, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    y = X @ w + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    yv = Xv @ w + 0.5 * torch.randn(m, generator=g, dtype=torch.float64)
    la = torch.randn(d, generator=g, dtype=torch.float64) - 1
    return X, y, Xv, yv, la


def _with_hypergradient(gd_unroll):
    """Run a learner's (or the reference) unroll and differentiate L_val through it."""
    def run(problem, hparams, steps, lr):
        hp = hypergrad.prepare_hparams(problem, hparams)
        params = gd_unroll(problem, hp, steps, lr)
        if not isinstance(params, dict):
            raise TypeError(f"gd_unroll should return a dict of params, got {type(params).__name__}")
        value = problem.outer_loss(params, hp)
        if not value.requires_grad:
            raise TypeError("the result does not depend on hparams through autograd: do not detach, and use "
                            "torch.autograd.grad(..., create_graph=True) for the inner gradient")
        return {"params": {k: v.detach() for k, v in params.items()},
                "hypergradient": hypergrad.total_derivative(value, hp)}
    return run


def ref_gd_unroll(problem, hparams, steps, lr):
    """T steps of gradient descent ``θ ← θ - lr ∇_θ L_train(θ, λ)`` from ``init_params``, differentiable in
    hparams (notebook 03).

    >>> import torch
    >>> from metahpo_lib import problems
    >>> from metahpo_lib.checks import ch03
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    >>> p = problems.ridge(X, y, X, y, per_feature=True)
    >>> h = {"log_alpha": torch.zeros(2, dtype=torch.float64, requires_grad=True)}
    >>> w = ch03.ref_gd_unroll(p, h, 50, 0.3)["w"]
    >>> w.requires_grad, torch.allclose(w, p.solve_inner(h)["w"], atol=1e-8)   # converged to the closed form
    (True, True)
    """
    return inner.run(problem, hparams, inner.GD(lr), steps=steps)


def gd_unroll(fn) -> None:
    """Check ``fn(problem, hparams, steps, lr) -> params``: values and the hypergradient through them
    (notebook 03).

    >>> from metahpo_lib.checks import ch03
    >>> ch03.gd_unroll(ch03.ref_gd_unroll)
    ✔ ref_gd_unroll matches the reference on 3 seeded case(s).
    """
    cases = []
    for seed, steps, lr in [(0, 1, 0.1), (1, 5, 0.2), (2, 30, 0.3)]:
        X, y, Xv, yv, la = _data(seed)
        p = problems.ridge(X, y, Xv, yv, per_feature=True)
        cases.append((f"per-feature ridge, steps={steps}, lr={lr}", (p, {"log_alpha": la}, steps, lr), {}))
    compare(_with_hypergradient(fn), _with_hypergradient(ref_gd_unroll), cases,
            name=getattr(fn, "__name__", "gd_unroll"), rtol=1e-8, atol=1e-11)


def ref_ridge_forward_mode(X, y, X_val, y_val, log_alpha, steps, lr):
    r"""Forward-mode (tangent) hypergradient of per-feature ridge after ``steps`` GD steps from w = 0
    (notebook 03): :math:`Z_{t+1} = Z_t - \eta\,(H Z_t + \mathrm{diag}(\alpha \odot w_t))`, :math:`Z_0 = 0`,
    returns :math:`Z_T^\top \nabla_w L_{val}(w_T)`.

    >>> import torch
    >>> from metahpo_lib.checks import ch03
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    >>> g = ch03.ref_ridge_forward_mode(X, y, X, y, torch.zeros(2, dtype=torch.float64), 50, 0.3)
    >>> [round(v, 4) for v in g.tolist()]   # = the exact hypergradient once GD has converged
    [0.0026, 0.0874]
    """
    p = problems.ridge(X, y, X_val, y_val, per_feature=True)
    return hypergrad.unrolled(p, {"log_alpha": log_alpha}, inner.GD(lr), steps=steps)["log_alpha"]  # = forward mode


def ridge_forward_mode(fn) -> None:
    """Check ``fn(X, y, X_val, y_val, log_alpha, steps, lr) -> (d,) tensor`` (the recursion by hand;
    notebook 03).

    >>> from metahpo_lib.checks import ch03
    >>> ch03.ridge_forward_mode(ch03.ref_ridge_forward_mode)
    ✔ ref_ridge_forward_mode matches the reference on 3 seeded case(s).
    """
    cases = []
    for seed, steps, lr in [(3, 1, 0.1), (4, 10, 0.3), (5, 100, 0.5)]:
        X, y, Xv, yv, la = _data(seed)
        cases.append((f"d=4, steps={steps}, lr={lr}", (X, y, Xv, yv, la, steps, lr), {}))
    compare(fn, ref_ridge_forward_mode, cases, name=getattr(fn, "__name__", "ridge_forward_mode"),
            rtol=1e-8, atol=1e-12)


def ref_sgd_hd_step(params, grads, prev_grads, lr, meta_lr):
    """One SGD-HD step (notebook 03): ``lr += meta_lr * <g_t, g_{t-1}>`` (no change when prev_grads is
    None), then ``p -= lr * g_t``; returns ``(new_params, new_lr)``.

    >>> import torch
    >>> from metahpo_lib.checks import ch03
    >>> p, g = torch.tensor([1.0, -2.0]), torch.tensor([2.0, -4.0])
    >>> new, lr = ch03.ref_sgd_hd_step([p], [g], [g], 0.1, 0.01)    # lr = 0.1 + 0.01 * 20
    >>> round(lr, 4), [round(v, 4) for v in new[0].tolist()]
    (0.3, [0.4, -0.8])
    """
    if prev_grads is not None:
        lr = lr + meta_lr * float(sum((g * h).sum() for g, h in zip(grads, prev_grads)))
    return [p - lr * g for p, g in zip(params, grads)], lr


def sgd_hd_step(fn) -> None:
    """Check ``fn(params, grads, prev_grads, lr, meta_lr) -> (new_params list, new_lr)`` (notebook 03).

    >>> from metahpo_lib.checks import ch03
    >>> ch03.sgd_hd_step(ch03.ref_sgd_hd_step)
    ✔ ref_sgd_hd_step matches the reference on 3 seeded case(s).
    """
    g = torch.Generator().manual_seed(7)

    def tensors():
        return [torch.randn(3, 2, generator=g, dtype=torch.float64), torch.randn(2, generator=g, dtype=torch.float64)]

    params, grads, prev = tensors(), tensors(), tensors()
    aligned = [1.5 * x for x in grads]
    cases = [("the first step (prev_grads=None)", (params, grads, None, 0.01, 0.1), {}),
             ("random previous gradients", (params, grads, prev, 0.01, 0.1), {}),
             ("aligned gradients: lr must grow", (params, grads, aligned, 0.02, 0.01), {})]
    compare(fn, ref_sgd_hd_step, cases, name=getattr(fn, "__name__", "sgd_hd_step"), rtol=1e-10, atol=1e-12)


def ref_truncated_hypergradient(problem, hparams, steps, lr, truncate):
    r"""Truncated reverse mode (notebook 03): run ``steps - truncate`` GD steps without a graph, then
    ``truncate`` steps with one, and differentiate :math:`L_{val}(\theta_T, \lambda)` through those last
    steps only; a dict like ``hparams`` (``hypergrad.unrolled(..., truncate=K)``).

    >>> import torch
    >>> from metahpo_lib import problems
    >>> from metahpo_lib.checks import ch03
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    >>> p = problems.ridge(X, y, X, y, per_feature=True)
    >>> h = {"log_alpha": torch.zeros(2, dtype=torch.float64)}
    >>> full = ch03.ref_truncated_hypergradient(p, h, 50, 0.3, 50)["log_alpha"]
    >>> last = ch03.ref_truncated_hypergradient(p, h, 50, 0.3, 1)["log_alpha"]
    >>> [round(v, 4) for v in full.tolist()], [round(v, 4) for v in last.tolist()]   # K = 1: the last step only
    ([0.0026, 0.0874], [0.0032, 0.0712])
    """
    return dict(hypergrad.unrolled(problem, hparams, inner.GD(lr), steps=steps, truncate=truncate))


def truncated_hypergradient(fn) -> None:
    """Check ``fn(problem, hparams, steps, lr, truncate) -> dict like hparams`` against
    ``hypergrad.unrolled(..., truncate=K)`` in float64 (notebook 03).

    >>> from metahpo_lib.checks import ch03
    >>> ch03.truncated_hypergradient(ch03.ref_truncated_hypergradient)
    ✔ ref_truncated_hypergradient matches the reference on 4 seeded case(s).
    """
    cases = []
    for seed, steps, lr, K in [(6, 20, 0.2, 1), (7, 40, 0.3, 5), (8, 60, 0.3, 20), (9, 30, 0.25, 30)]:
        X, y, Xv, yv, la = _data(seed)
        p = problems.ridge(X, y, Xv, yv, per_feature=True)
        note = " (K = T: the full unroll)" if K == steps else ""
        cases.append((f"per-feature ridge, steps={steps}, lr={lr}, truncate={K}{note}", (p, {"log_alpha": la}, steps, lr, K), {}))
    compare(fn, ref_truncated_hypergradient, cases, name=getattr(fn, "__name__", "truncated_hypergradient"),
            rtol=1e-8, atol=1e-12)
