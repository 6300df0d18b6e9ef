"""metahpo_lib.optim: SGD-HD and Adam-HD against a hand-written reference of Baydin et al.'s updates."""

import numpy as np
import pytest
import torch

from metahpo_lib import optim
from metahpo_lib.data import load


def quadratic(seed=0, d=5):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((d, d))
    A = M @ M.T / d + np.eye(d)
    b = rng.standard_normal(d)
    return A, b  # f(x) = 0.5 x^T A x - b^T x,  grad = A x - b


def reference_sgd_hd(A, b, x0, lr, beta, steps):
    x, alpha, prev = x0.copy(), lr, None
    lrs = []
    for _ in range(steps):
        g = A @ x - b
        if prev is not None:
            alpha = alpha + beta * float(g @ prev)
        x = x - alpha * g
        prev = g
        lrs.append(alpha)
    return x, lrs


def reference_adam_hd(A, b, x0, lr, beta, steps, b1=0.9, b2=0.999, eps=1e-8):
    x, alpha, m, v, u = x0.copy(), lr, np.zeros_like(x0), np.zeros_like(x0), None
    lrs = []
    for t in range(1, steps + 1):
        g = A @ x - b
        if u is not None:
            alpha = alpha + beta * float(g @ u)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        u = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        x = x - alpha * u
        lrs.append(alpha)
    return x, lrs


def run_torch(opt_cls, A, b, x0, steps, device, split=True, **kw):
    At, bt = torch.tensor(A, device=device), torch.tensor(b, device=device)
    # two parameter tensors in one group: the dot product must run over both
    xs = [torch.tensor(x0[:2], device=device, requires_grad=True), torch.tensor(x0[2:], device=device, requires_grad=True)]
    opt = opt_cls(xs, **kw)
    lrs = []
    for _ in range(steps):
        x = torch.cat(xs)
        loss = 0.5 * x @ At @ x - bt @ x
        opt.zero_grad()
        loss.backward()
        opt.step()
        lrs.append(opt.param_groups[0]["lr"])
    return torch.cat(xs).detach().cpu().numpy(), lrs


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_matches_hand_reference(device, name):
    A, b = quadratic()
    x0 = np.random.default_rng(1).standard_normal(5)
    if name == "sgd":
        want, want_lrs = reference_sgd_hd(A, b, x0, lr=0.01, beta=0.01, steps=30)
        got, lrs = run_torch(optim.SGDHD, A, b, x0, 30, device, lr=0.01, meta_lr=0.01)
    else:
        want, want_lrs = reference_adam_hd(A, b, x0, lr=0.01, beta=1e-3, steps=30)
        got, lrs = run_torch(optim.AdamHD, A, b, x0, 30, device, lr=0.01, meta_lr=1e-3)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lrs, want_lrs, rtol=1e-10)
    assert lrs[-1] > 0.01  # the lr grew: the successive gradients were aligned


def test_zero_meta_lr_is_plain_optimizer():
    A, b = quadratic(2)
    x0 = np.zeros(5)
    got, lrs = run_torch(optim.SGDHD, A, b, x0, 10, "cpu", lr=0.05, meta_lr=0.0)
    ref, _ = run_torch(torch.optim.SGD, A, b, x0, 10, "cpu", lr=0.05)
    np.testing.assert_allclose(got, ref, rtol=1e-13)
    got, _ = run_torch(optim.AdamHD, A, b, x0, 10, "cpu", lr=0.05, meta_lr=0.0)
    ref, _ = run_torch(torch.optim.Adam, A, b, x0, 10, "cpu", lr=0.05)
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    assert set(lrs) == {0.05}


def test_closure_and_fit_on_digits():
    s = load("digits", dtype=torch.float32)
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 10)
    opt = optim.SGDHD(model.parameters(), lr=1e-3, meta_lr=1e-3)
    hist = optim.fit(model, opt, s.X_train, s.y_train, epochs=2, batch_size=64)
    assert len(hist["loss"]) == len(hist["lr"]) == 2 * -(-s.X_train.shape[0] // 64)
    assert hist["lr"][-1] > 1e-3
    loss = opt.step(lambda: torch.nn.functional.cross_entropy(model(s.X_train), s.y_train))
    assert torch.isfinite(loss)


def test_bad_input():
    w = [torch.zeros(3, requires_grad=True)]
    for cls in (optim.SGDHD, optim.AdamHD):
        with pytest.raises(ValueError, match="lr"):
            cls(w, lr=0.0)
        with pytest.raises(ValueError, match="meta_lr"):
            cls(w, lr=0.1, meta_lr=-1)
        with pytest.raises(TypeError, match="lr"):
            cls(w, lr="fast")
        with pytest.raises(ValueError, match="meta_lr"):
            cls(w, lr=0.1, meta_lr=float("inf"))
    with pytest.raises(ValueError, match="betas"):
        optim.AdamHD(w, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="epsilon"):
        optim.AdamHD(w, epsilon=0)
    X = torch.randn(64, 2) * 10
    y = torch.randn(64)

    def mse(out, target):
        return (out.squeeze(-1) - target).pow(2).mean()

    for cls in (torch.optim.SGD, optim.SGDHD):
        model = torch.nn.Linear(2, 1)
        opt = cls(model.parameters(), lr=10.0)
        with pytest.raises(ValueError, match=r"(loss|learning rate) became (nan|inf)"):
            optim.fit(model, opt, X, y, epochs=50, batch_size=8, loss_fn=mse)
