"""hypergrad.unrolled: converged GD vs exact, reverse vs forward, truncation, learning-rate hypergradients."""

import pytest
import torch

from metahpo_lib import hypergrad, inner, problems
from metahpo_lib.data import load, make_regression


def ridge(device=None, d=6):
    s = make_regression(150, d, seed=7, device=device)
    return problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val, per_feature=True)


def rel(a, b):
    return float((a - b).norm() / b.norm())


def test_converged_gd_matches_exact(device):
    p = ridge(device)
    h = {"log_alpha": torch.linspace(-2, 0, 6, dtype=torch.float64, device=device)}
    ref = hypergrad.exact(p, h)["log_alpha"]
    g = hypergrad.unrolled(p, h, inner.GD(0.5), steps=1500)
    assert g["log_alpha"].device == ref.device
    assert rel(g["log_alpha"], ref) <= 1e-6
    short = hypergrad.unrolled(p, h, inner.GD(0.5), steps=10)
    assert rel(short["log_alpha"], ref) > 1e-3  # not converged: visibly different


@pytest.mark.parametrize("optimizer", [inner.GD(0.3), inner.Momentum(0.1), inner.Adam(0.05)], ids=repr)
@pytest.mark.parametrize("steps", [1, 7, 25])
def test_reverse_equals_forward(device, optimizer, steps):
    p = ridge(device)
    h = {"log_alpha": torch.linspace(-2, 0, 6, dtype=torch.float64, device=device)}
    r = hypergrad.unrolled(p, h, optimizer, steps=steps, mode="reverse")
    f = hypergrad.unrolled(p, h, optimizer, steps=steps, mode="forward", batch=4 if steps == 1 else None)
    assert f.info["passes"] == (2 if steps == 1 else 1) and r.info["passes"] == 1
    assert float((r["log_alpha"] - f["log_alpha"]).abs().max()) <= 1e-10 * max(1.0, float(r["log_alpha"].abs().max()))
    assert r.info["outer_loss"] == pytest.approx(f.info["outer_loss"], rel=1e-12)


@pytest.mark.parametrize("optimizer", ["gd", "momentum"])
def test_learning_rate_and_momentum_hypergradients(optimizer):
    p = ridge()
    q = inner.with_optimizer_hparams(p, lr=0.1, momentum=0.6 if optimizer == "momentum" else None)
    h = q.init_hparams()
    opt = inner.Momentum("log_lr", momentum="logit_momentum") if optimizer == "momentum" else inner.GD("log_lr")
    T = 40
    r = hypergrad.unrolled(q, h, opt, steps=T)
    f = hypergrad.unrolled(q, h, opt, steps=T, mode="forward")
    fd = hypergrad.finite_difference(q, h, inner_solve=lambda hh: inner.run(q, hh, opt, steps=T))
    for k in h:
        assert float((r[k] - f[k]).abs().max()) <= 1e-10
        assert rel(r[k], fd[k]) <= 1e-6, k
    assert float(r["log_lr"]) < 0 or float(r["log_lr"]) > 0  # nonzero: lr matters before convergence
    # a per-step learning-rate schedule: one hypergradient per step
    s = inner.with_optimizer_hparams(p, lr=0.1, schedule=T)
    hs = s.init_hparams()
    gs = hypergrad.unrolled(s, hs, inner.GD("log_lr"), steps=T)
    assert gs["log_lr"].shape == (T,)
    # the hypergradient of a constant lr is the sum over the schedule's entries
    c = inner.with_optimizer_hparams(p, lr=0.1)
    gc = hypergrad.unrolled(c, c.init_hparams(), inner.GD("log_lr"), steps=T)
    assert float(gs["log_lr"].sum()) == pytest.approx(float(gc["log_lr"]), rel=1e-10)


def test_truncation():
    p = ridge()
    h = {"log_alpha": torch.linspace(-2, 0, 6, dtype=torch.float64)}
    T = 200
    full = hypergrad.unrolled(p, h, inner.GD(0.05), steps=T)["log_alpha"]
    same = hypergrad.unrolled(p, h, inner.GD(0.05), steps=T, truncate=T)["log_alpha"]
    torch.testing.assert_close(full, same, rtol=1e-13, atol=1e-15)
    errs = [rel(hypergrad.unrolled(p, h, inner.GD(0.05), steps=T, truncate=K)["log_alpha"], full) for K in (1, 10, 100)]
    assert errs[0] > errs[1] > errs[2]
    r = hypergrad.unrolled(p, h, inner.GD(0.05), steps=T, truncate=10)
    f = hypergrad.unrolled(p, h, inner.GD(0.05), steps=T, truncate=10, mode="forward")
    assert float((r["log_alpha"] - f["log_alpha"]).abs().max()) <= 1e-12
    assert r.info["truncate"] == 10


def test_logistic_and_given_params():
    s = load("iris")
    q = problems.logistic(s.X_train, s.y_train, s.X_val, s.y_val, log_alpha=-2.0)
    h = q.init_hparams()
    r = hypergrad.unrolled(q, h, inner.Adam(0.5), steps=20)
    f = hypergrad.unrolled(q, h, inner.Adam(0.5), steps=20, mode="forward")
    assert float((r["log_alpha"] - f["log_alpha"]).abs().max()) <= 1e-10
    warm = inner.run(q, h, inner.GD(0.5), steps=5)
    g = hypergrad.unrolled(q, h, inner.GD(0.5), steps=15, params=warm)
    g2 = hypergrad.unrolled(q, h, inner.GD(0.5), steps=20, truncate=15)
    torch.testing.assert_close(g["log_alpha"], g2["log_alpha"])


def test_bad_input():
    p = ridge()
    h = p.init_hparams()
    with pytest.raises(ValueError, match="steps"):
        hypergrad.unrolled(p, h, inner.GD(0.1), steps=0)
    with pytest.raises(ValueError, match="truncate"):
        hypergrad.unrolled(p, h, inner.GD(0.1), steps=5, truncate=6)
    with pytest.raises(ValueError, match="truncate"):
        hypergrad.unrolled(p, h, inner.GD(0.1), steps=5, truncate=0)
    with pytest.raises(ValueError, match="mode"):
        hypergrad.unrolled(p, h, inner.GD(0.1), steps=5, mode="sideways")
    with pytest.raises(TypeError, match="optimizer"):
        hypergrad.unrolled(p, h, "lbfgs", steps=5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'lr'"):
        hypergrad.unrolled(p, h, inner.GD(0.1), steps=5, lr=0.1)
    with pytest.raises(ValueError, match="batch"):
        hypergrad.unrolled(p, h, inner.GD(0.1), steps=5, mode="forward", batch=0)
    with pytest.raises(TypeError, match="problem"):
        hypergrad.unrolled(None, h, inner.GD(0.1), steps=5)
    for mode in ("reverse", "forward"):
        with pytest.raises(inner.DivergenceError, match=r"at step \d+"):
            hypergrad.unrolled(p, h, inner.GD(50.0), steps=300, mode=mode)
