"""Self-checks for the exercises of notebook 05 (MAML and family): ``ch05.sgd_step(fn)``,
``ch05.maml_task_loss(fn)``, ``ch05.mean_ci95(fn)``; the references are ``ref_*``."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from . import compare
from .. import maml

__all__ = ["sgd_step", "maml_task_loss", "mean_ci95", "ref_sgd_step", "ref_maml_task_loss", "ref_mean_ci95"]


def _params(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(3, 2, generator=g, dtype=torch.float64), "b": torch.randn(2, generator=g, dtype=torch.float64)}


def ref_sgd_step(params, grads, lr):
    if isinstance(lr, dict):
        return {k: params[k] - lr[k] * grads[k] for k in params}
    return {k: params[k] - lr * grads[k] for k in params}


def sgd_step(fn) -> None:
    """``fn(params, grads, lr)`` -> ``{k: params[k] - lr * grads[k]}``; ``lr`` a number or a dict (Meta-SGD)."""
    p, g = _params(0), _params(1)
    lrs = {k: v.abs() * 0.1 for k, v in _params(2).items()}
    cases = [("a number lr=0.1", (p, g, 0.1), {}),
             ("a per-entry learning-rate dict (Meta-SGD)", (p, g, lrs), {}),
             ("lr=0 (nothing moves)", (p, g, 0.0), {})]
    before = {k: v.clone() for k, v in p.items()}
    compare(fn, ref_sgd_step, cases, name="sgd_step", quiet=True)
    if any(not torch.equal(before[k], p[k]) for k in p):
        raise AssertionError("sgd_step changed its input params in place; return a new dict instead")
    print(f"✔ sgd_step matches the reference on {len(cases)} seeded case(s) and leaves its inputs unchanged.")


def ref_maml_task_loss(model, params, x_s, y_s, x_q, y_q, lr):
    loss_s = ((functional_call(model, params, (x_s,)) - y_s) ** 2).mean()
    grads = torch.autograd.grad(loss_s, list(params.values()), create_graph=True)
    fast = {k: v - lr * g for (k, v), g in zip(params.items(), grads)}
    return ((functional_call(model, fast, (x_q,)) - y_q) ** 2).mean()


def maml_task_loss(fn) -> None:
    """``fn(model, params, x_s, y_s, x_q, y_q, lr)``: query MSE after one inner SGD step on the
    support MSE, differentiable w.r.t. ``params`` through the inner step (second order)."""
    from ..tasks import Sinusoid

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    b = Sinusoid(dtype=torch.float64).sample(3, 5, 6, seed=0)
    for i, lr in [(0, 0.1), (1, 0.05), (2, 0.3)]:
        args = (b.x_support[i], b.y_support[i], b.x_query[i], b.y_query[i], lr)
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
        want = ref_maml_task_loss(model, leaves, *args)
        want_g = torch.autograd.grad(want, list(leaves.values()))
        try:
            got = fn(model, leaves, *args)
        except NotImplementedError:
            raise
        except Exception as e:
            raise AssertionError(f"maml_task_loss raised {type(e).__name__}: {e}  (on task {i}, lr={lr})") from e
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise AssertionError(f"maml_task_loss should return a scalar tensor, got {type(got).__name__}"
                                 + (f" of shape {tuple(got.shape)}" if isinstance(got, torch.Tensor) else ""))
        if not torch.allclose(got.detach(), want.detach(), rtol=1e-8, atol=1e-10):
            raise AssertionError(f"maml_task_loss: on task {i} (lr={lr}) the value is {float(got):.8g}, expected "
                                 f"{float(want):.8g}: one SGD step on the support MSE, then the MSE on the query set")
        if not got.requires_grad:
            raise AssertionError("maml_task_loss returns a value that does not depend on params: "
                                 "do not detach, the meta-gradient flows through it")
        got_g = torch.autograd.grad(got, list(leaves.values()), allow_unused=True)
        for (k, _), gg, wg in zip(leaves.items(), got_g, want_g):
            if gg is None or not torch.allclose(gg, wg, rtol=1e-6, atol=1e-9):
                raise AssertionError(
                    f"maml_task_loss: the value is right but its gradient w.r.t. params[{k!r}] is not the "
                    "second-order MAML meta-gradient. Keep the inner gradient differentiable "
                    "(torch.autograd.grad(..., create_graph=True) or torch.func.grad), do not detach it")
    # the batched library agrees with the per-task reference on the mean over tasks
    learner = maml.MAML(model, inner_lr=0.1)
    lib = learner.meta_loss(b).detach()
    ref = sum(ref_maml_task_loss(model, dict(model.named_parameters()), b.x_support[i], b.y_support[i],
                                  b.x_query[i], b.y_query[i], 0.1) for i in range(3)) / 3
    assert torch.allclose(lib, ref.detach(), rtol=1e-10), "internal check: library and reference disagree"
    print("✔ maml_task_loss matches the reference (value and second-order gradient) on 3 seeded tasks.")


def ref_mean_ci95(values):
    m, c = maml.mean_ci95(values)
    return float(m), float(c)


def mean_ci95(fn) -> None:
    """``fn(values)`` -> ``(mean, half_width)`` of the normal 95% CI, ``1.96 * std / sqrt(n)`` (sample std)."""
    g = torch.Generator().manual_seed(0)
    cases = [("600 normal values", (torch.randn(600, generator=g, dtype=torch.float64) * 2 + 1,), {}),
             ("10 uniform values", (torch.rand(10, generator=g, dtype=torch.float64),), {}),
             ("2 values", (torch.tensor([1.0, 3.0], dtype=torch.float64),), {})]

    def as_floats(values):
        out = fn(values)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise TypeError(f"mean_ci95 should return a pair (mean, half_width), got {type(out).__name__}")
        return tuple(float(o) for o in out)

    as_floats.__name__ = "mean_ci95"
    try:
        compare(as_floats, ref_mean_ci95, cases, name="mean_ci95", rtol=1e-6, quiet=True)
    except AssertionError as e:
        v = cases[1][1][0]
        hint = ""
        if abs(float(fn(v)[1]) - 1.96 * float(v.std(unbiased=False)) / len(v) ** 0.5) < 1e-9:
            hint = " (you used the population std; use the sample std, unbiased=True)"
        raise AssertionError(str(e) + hint) from None
    print(f"✔ mean_ci95 matches the reference on {len(cases)} seeded case(s).")
