"""Self-checks for the exercises of notebook 06 (MAML and family): ``ch06.sgd_step(fn)``,
``ch06.maml_task_loss(fn)``, ``ch06.mean_ci(fn)``; the references are ``ref_*``.

>>> from metahpo_lib.checks import ch06
>>> ch06.mean_ci(ch06.ref_mean_ci)
✔ mean_ci matches the reference on 3 seeded case(s).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from . import compare, expected
from .. import maml, stats

__all__ = ["sgd_step", "maml_task_loss", "mean_ci", "ref_sgd_step", "ref_maml_task_loss", "ref_mean_ci"]


def _params(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(3, 2, generator=g, dtype=torch.float64), "b": torch.randn(2, generator=g, dtype=torch.float64)}


def ref_sgd_step(params, grads, lr):
    """Reference for exercise 1: ``{k: params[k] - lr * grads[k]}``, ``lr`` a number or a dict.

    >>> ref_sgd_step({"w": torch.tensor(1.0)}, {"w": torch.tensor(2.0)}, 0.25)
    {'w': tensor(0.5000)}
    """
    if isinstance(lr, dict):
        return {k: params[k] - lr[k] * grads[k] for k in params}
    return {k: params[k] - lr * grads[k] for k in params}


def sgd_step(fn) -> None:
    """Check exercise 1: ``fn(params, grads, lr)`` -> ``{k: params[k] - lr * grads[k]}``; ``lr`` a number
    or a dict (Meta-SGD).

    >>> sgd_step(ref_sgd_step)
    ✔ sgd_step matches the reference on 3 seeded case(s) and leaves its inputs unchanged.
    """
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
    r"""Reference for exercise 2: :math:`L_Q(\theta - \alpha \nabla L_S(\theta))` (MSE), second order.

    >>> from torch import nn
    >>> net = nn.Linear(1, 1, bias=False)
    >>> w = {"weight": torch.tensor([[1.0]], requires_grad=True)}
    >>> x = torch.ones(2, 1)
    >>> ref_maml_task_loss(net, w, x, 0 * x, x, x, lr=0.25)   # w: 1 -> 1 - 0.25 * 2 = 0.5
    tensor(0.2500, grad_fn=<MeanBackward0>)
    """
    loss_s = ((functional_call(model, params, (x_s,)) - y_s) ** 2).mean()
    grads = torch.autograd.grad(loss_s, list(params.values()), create_graph=True)
    fast = {k: v - lr * g for (k, v), g in zip(params.items(), grads)}
    return ((functional_call(model, fast, (x_q,)) - y_q) ** 2).mean()


def _value_and_gradient(model, leaves, *args):
    value = ref_maml_task_loss(model, leaves, *args)
    return value.detach(), tuple(g.detach() for g in torch.autograd.grad(value, list(leaves.values())))


def _mean_task_loss(model, b):
    params = dict(model.named_parameters())
    return (sum(ref_maml_task_loss(model, params, b.x_support[i], b.y_support[i], b.x_query[i], b.y_query[i], 0.1)
                for i in range(3)) / 3).detach()


def maml_task_loss(fn) -> None:
    """Check exercise 2: ``fn(model, params, x_s, y_s, x_q, y_q, lr)``, the query MSE after one inner
    SGD step on the support MSE, differentiable w.r.t. ``params`` through the inner step (second order).

    >>> maml_task_loss(ref_maml_task_loss)
    ✔ maml_task_loss matches the reference (value and second-order gradient) on 3 seeded tasks.
    """
    from ..tasks import Sinusoid

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    b = Sinusoid(dtype=torch.float64).sample(3, 5, 6, seed=0)
    for i, lr in [(0, 0.1), (1, 0.05), (2, 0.3)]:
        args = (b.x_support[i], b.y_support[i], b.x_query[i], b.y_query[i], lr)
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
        want, want_g = expected(_value_and_gradient, (model, leaves, *args), case=f"task {i}, lr={lr}")
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
    learner = maml.MAML(model, lr=0.1)
    lib = learner.meta_loss(b).detach()
    ref = expected(_mean_task_loss, (model, b), case="mean over tasks")
    assert torch.allclose(lib, ref, rtol=1e-10), "internal check: library and reference disagree"
    print("✔ maml_task_loss matches the reference (value and second-order gradient) on 3 seeded tasks.")


def ref_mean_ci(values):
    """Reference for exercise 3: :func:`metahpo_lib.stats.mean_ci` (Student t, 95%) as two floats.

    >>> [round(v, 4) for v in ref_mean_ci([1.0, 2.0, 3.0, 4.0])]   # t_{0.975, 3} = 3.182
    [2.5, 2.0543]
    """
    ci = stats.mean_ci(values)
    return ci.mean, ci.half_width


def mean_ci(fn) -> None:
    r"""Check exercise 3: ``fn(values)`` -> ``(mean, half_width)`` of the Student-t 95% confidence interval,
    :math:`t_{0.975,\,n-1}\, s / \sqrt n` with the sample standard deviation :math:`s`.

    >>> mean_ci(ref_mean_ci)
    ✔ mean_ci matches the reference on 3 seeded case(s).
    """
    from scipy.stats import t

    g = torch.Generator().manual_seed(0)
    cases = [("600 normal values", (torch.randn(600, generator=g, dtype=torch.float64) * 2 + 1,), {}),
             ("10 uniform values", (torch.rand(10, generator=g, dtype=torch.float64),), {}),
             ("2 values", (torch.tensor([1.0, 3.0], dtype=torch.float64),), {})]

    def as_floats(values):
        out = fn(values)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise TypeError(f"mean_ci should return a pair (mean, half_width), got {type(out).__name__}")
        return tuple(float(o) for o in out)

    as_floats.__name__ = "mean_ci"
    try:
        compare(as_floats, ref_mean_ci, cases, name="mean_ci", rtol=1e-6, quiet=True)
    except AssertionError as e:
        v = cases[1][1][0]
        half, n = float(fn(v)[1]), len(v)
        hint = ""
        if abs(half - 1.96 * float(v.std()) / n ** 0.5) < 1e-9:
            hint = (" (you used the normal quantile 1.96; with few values use Student's t with n - 1 degrees of "
                    "freedom, scipy.stats.t.ppf(0.975, n - 1))")
        elif abs(half - t.ppf(0.975, n - 1) * float(v.std(correction=0)) / n ** 0.5) < 1e-9:
            hint = " (you used the population std; use the sample std, dividing by n - 1)"
        raise AssertionError(str(e) + hint) from None
    print(f"✔ mean_ci matches the reference on {len(cases)} seeded case(s).")
