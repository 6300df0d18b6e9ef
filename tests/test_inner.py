"""metahpo_lib.inner: functional inner optimisers and the accurate solver."""

import math
import warnings

import pytest
import torch

from metahpo_lib import inner, problems
from metahpo_lib.data import load, make_regression


def ridge(device=None, per_feature=True, d=8, log_alpha=-1.0):
    s = make_regression(120, d, seed=3, device=device)
    return problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val, per_feature=per_feature, log_alpha=log_alpha)


@pytest.mark.parametrize("optimizer", [inner.GD(0.5), inner.Momentum(0.1), inner.Adam(0.02)], ids=repr)
def test_run_converges_to_closed_form(device, optimizer):
    p = ridge(device)
    h = p.init_hparams()
    w = inner.run(p, h, optimizer, steps=3000)["w"]
    ref = p.solve_inner(h)["w"]
    assert w.device == ref.device and w.dtype == torch.float64
    assert (w - ref).norm() / ref.norm() < 1e-6


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_run_matches_torch_optim_trajectory(optimizer):
    p = ridge()
    h = p.init_hparams()
    w = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    opt = (torch.optim.SGD([w], lr=0.05, momentum=0.7) if optimizer == "momentum"
           else torch.optim.Adam([w], lr=0.05, betas=(0.8, 0.99), eps=1e-8))
    for _ in range(25):
        opt.zero_grad()
        p.inner_loss({"w": w}, h).backward()
        opt.step()
    ours_opt = inner.Momentum(0.05, momentum=0.7) if optimizer == "momentum" else inner.Adam(0.05, betas=(0.8, 0.99))
    ours = inner.run(p, h, ours_opt, steps=25)["w"]
    torch.testing.assert_close(ours, w.detach(), rtol=1e-12, atol=1e-14)


def test_run_is_differentiable_in_hparams_and_lr():
    p = inner.with_optimizer_hparams(ridge(per_feature=False), lr=0.1)
    h = {k: v.clone().requires_grad_(True) for k, v in p.init_hparams().items()}
    assert set(h) == {"log_alpha", "log_lr"}
    w1 = inner.run(p, h, inner.GD(lr="log_lr"), steps=2)["w"]
    # hand-computed: w0 = 0, g0 = -X^T y / n, w1 = -lr g0, w2 = w1 - lr (X^T X w1 / n - X^T y / n + alpha w1)
    X, y = p.data["X_train"], p.data["y_train"]
    n = X.shape[0]
    lr, a = 0.1, math.exp(-1.0)
    b = X.T @ y / n
    A = X.T @ X / n + a * torch.eye(8, dtype=torch.float64)
    w_1 = lr * b
    w_2 = w_1 - lr * (A @ w_1 - b)
    torch.testing.assert_close(w1, w_2)
    # d w2 / d log_lr = lr * d w2 / d lr with d w2/dlr = b + b - A(2 lr b) ... = 2b - 2 lr A b
    dw_dlr = 2 * b - 2 * lr * (A @ b)
    v = torch.randn(8, dtype=torch.float64)
    got = torch.autograd.grad(w1 @ v, h["log_lr"])[0]
    torch.testing.assert_close(got, lr * dw_dlr @ v)


def test_per_step_learning_rates_and_losses():
    p = ridge()
    h = p.init_hparams()
    lrs = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    w, losses = inner.run(p, h, inner.GD(lrs), steps=3, return_losses=True)
    w_ref = p.init_params()["w"]
    ref_losses = []
    for t in range(3):
        wr = w_ref.clone().requires_grad_(True)
        loss = p.inner_loss({"w": wr}, h)
        ref_losses.append(loss.detach())
        w_ref = w_ref - lrs[t] * torch.autograd.grad(loss, wr)[0]
    torch.testing.assert_close(w["w"], w_ref)
    torch.testing.assert_close(losses, torch.stack(ref_losses))


def test_minimize_matches_closed_form_and_solves_logistic():
    p = ridge()
    h = {"log_alpha": torch.linspace(-3, 0, 8, dtype=torch.float64)}
    torch.testing.assert_close(inner.minimize(p, h)["w"], p.solve_inner(h)["w"], rtol=1e-9, atol=1e-11)
    s = load("wine")
    q = problems.logistic(s.X_train, s.y_train, s.X_val, s.y_val, log_alpha=-4.0)
    hq = {"log_alpha": torch.tensor(-4.0, dtype=torch.float64, requires_grad=True)}
    theta = inner.minimize(q, hq)
    assert all(not v.requires_grad for v in theta.values())
    g = torch.func.grad(q.inner_loss)(theta, {"log_alpha": hq["log_alpha"].detach()})
    assert max(float(v.abs().max()) for v in g.values()) <= 1e-13


def test_minimize_reaches_its_default_tol_on_multiclass_logistic():
    # softmax has a flat direction (all logits shifted together): the Newton steps must not wander along it
    s = load("digits")
    q = problems.logistic(s.X_train, s.y_train, s.X_val, s.y_val, per_feature=True)
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        h = {"log_alpha": -6 + 4 * torch.rand(64, generator=gen, dtype=torch.float64)}
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a missed tol warns: make it fail here
            theta = inner.minimize(q, h)
        g = torch.func.grad(q.inner_loss)(theta, h)
        assert max(float(v.abs().max()) for v in g.values()) <= 1e-13


# ------------------------------------------------------------------ bad input
def test_bad_input():
    p = ridge()
    h = p.init_hparams()
    with pytest.raises(ValueError, match="steps"):
        inner.run(p, h, inner.GD(0.1), steps=0)
    with pytest.raises(TypeError, match="optimizer must be an inner optimiser"):
        inner.run(p, h, "rmsprop", steps=3)
    with pytest.raises(ValueError, match="lr"):
        inner.GD(-1.0)
    with pytest.raises(ValueError, match="lr"):
        inner.GD(float("nan"))
    with pytest.raises(ValueError, match="one entry per step"):
        inner.run(p, h, inner.GD(torch.ones(4, dtype=torch.float64)), steps=3)
    with pytest.raises(ValueError, match="momentum"):
        inner.Momentum(0.1, momentum=1.5)
    with pytest.raises(ValueError, match="betas"):
        inner.Adam(0.1, betas=(0.9,))
    with pytest.raises(TypeError, match="epsilon"):
        inner.Adam(0.1, epsilon="small")
    with pytest.raises(ValueError, match="hparams"):
        inner.run(p, {"alpha": h["log_alpha"]}, inner.GD(0.1), steps=3)
    with pytest.raises(TypeError, match="problem"):
        inner.run("ridge", h, inner.GD(0.1), steps=3)
    with pytest.raises(ValueError, match="requires grad"):
        inner.run(p, h, inner.GD(0.1), steps=3, differentiable=True)
    with pytest.raises(TypeError, match="unexpected keyword"):
        inner.run(p, h, inner.GD(0.1), steps=3, betas=(0.9, 0.99))  # an option the optimiser ignores
    q = inner.with_optimizer_hparams(p, lr=0.1, momentum=0.5)
    hq = q.init_hparams()
    with pytest.raises(ValueError, match="reads log\\(lr\\) from hparams\\['log_rate'\\]"):
        inner.run(q, hq, inner.GD("log_rate"), steps=3)
    with pytest.raises(ValueError, match="one entry per step"):
        q5 = inner.with_optimizer_hparams(p, lr=0.1, schedule=5)
        inner.run(q5, q5.init_hparams(), inner.GD("log_lr"), steps=3)
    with pytest.raises(ValueError, match="already has"):
        inner.with_optimizer_hparams(q, lr=0.1)
    with pytest.raises(ValueError, match="lr and/or momentum"):
        inner.with_optimizer_hparams(p)
    with pytest.raises(ValueError, match="tol"):
        inner.minimize(p, h, tol=0)


@pytest.mark.parametrize("optimizer", [inner.GD(100.0), inner.Momentum(100.0)], ids=repr)
def test_divergence_to_inf_names_the_step(optimizer):
    p = ridge()
    with pytest.raises(inner.DivergenceError, match=r"diverged: the inner loss is \S+ at step \d+") as e:
        inner.run(p, p.init_hparams(), optimizer, steps=400)
    assert isinstance(e.value, ValueError) and "lr=100" in str(e.value)


@pytest.mark.parametrize("make", [lambda L: inner.GD(2.2 / L), lambda L: inner.Adam(1e6)], ids=["gd>2/L", "adam1e6"])
def test_divergence_below_inf_is_caught(make):
    # a learning rate just above the stability limit grows the loss by orders of magnitude long before inf
    p = ridge()
    X = p.data["X_train"]
    L = float(torch.linalg.eigvalsh(X.T @ X / X.shape[0]).max()) + math.exp(-1.0)
    with pytest.raises(inner.DivergenceError, match="diverged"):
        inner.run(p, p.init_hparams(), make(L), steps=400)
    from metahpo_lib import hypergrad
    with pytest.raises(inner.DivergenceError, match="diverged"):
        hypergrad.unrolled(p, p.init_hparams(), make(L), steps=400)
    inner.run(p, p.init_hparams(), inner.GD(1.8 / L), steps=400)  # a stable learning rate does not trip it


def test_graph_to_given_params_is_kept():
    # a meta-learned initialisation (chapter 06): d theta_T / d theta_0 must flow through run
    p = ridge(per_feature=False)
    h = p.init_hparams()
    w0 = torch.randn(8, dtype=torch.float64, requires_grad=True)
    wT = inner.run(p, h, inner.GD(0.1), steps=3, params={"w": w0})["w"]
    X = p.data["X_train"]
    A = X.T @ X / X.shape[0] + math.exp(-1.0) * torch.eye(8, dtype=torch.float64)
    M = torch.linalg.matrix_power(torch.eye(8, dtype=torch.float64) - 0.1 * A, 3)  # d w3 / d w0
    v = torch.randn(8, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(wT @ v, w0)[0], M.T @ v)


def test_a_user_optimiser_plugs_in_without_editing_the_library():
    class SignGD(inner.InnerOptimizer):
        def __init__(self, lr):
            self.lr = lr

        def step(self, params, grads, state, hparams, t):
            return {k: p - self.lr_at(hparams, t) * grads[k].sign() for k, p in params.items()}, state

    from metahpo_lib import hypergrad
    p = ridge()
    w = inner.run(p, p.init_hparams(), SignGD(0.01), steps=5)["w"]
    assert torch.allclose(w.abs(), torch.full_like(w, 0.05))
    g = hypergrad.unrolled(p, p.init_hparams(), SignGD(0.01), steps=5, mode="forward")
    assert g["log_alpha"].shape == (8,)


def test_unrolled_works_inside_no_grad():
    from metahpo_lib import hypergrad

    p = inner.with_optimizer_hparams(ridge(), momentum=0.5)
    opt = inner.Momentum(0.1, momentum="logit_momentum")
    want = hypergrad.unrolled(p, p.init_hparams(), opt, steps=30, truncate=10)
    with torch.no_grad():
        got = hypergrad.unrolled(p, p.init_hparams(), opt, steps=30, truncate=10)
    assert all(torch.allclose(got[k], want[k], rtol=1e-12) for k in want)
