import pytest
import torch

from metahpo_lib import hypergrad, problems
from metahpo_lib.data import load, make_regression


def central_difference(problem, hparams, key, h=1e-5):
    """Independent reference: central differences of the closed-form outer objective."""
    base = hparams[key].detach().clone()
    out = torch.zeros_like(base)
    for i in range(base.numel()):
        vals = []
        for s in (1, -1):
            v = base.clone().flatten()
            v[i] += s * h
            hp = {**hparams, key: v.reshape(base.shape)}
            vals.append(problem.outer_loss(problem.solve_inner(hp), hp))
        out.view(-1)[i] = (vals[0] - vals[1]) / (2 * h)
    return out


@pytest.mark.parametrize("per_feature", [False, True])
def test_exact_matches_central_differences(device, per_feature):
    s = load("diabetes", seed=1, device=device)
    p = problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val, per_feature=per_feature)
    g = torch.Generator().manual_seed(0)
    la = (-1.0 + torch.randn(p.init_hparams()["log_alpha"].shape, generator=g, dtype=torch.float64)).to(device)
    hg = hypergrad.exact(p, {"log_alpha": la})
    assert set(hg) == {"log_alpha"} and hg["log_alpha"].shape == la.shape and hg["log_alpha"].device == la.device
    fd = central_difference(p, {"log_alpha": la}, "log_alpha")
    rel = (hg["log_alpha"] - fd).norm() / fd.norm()
    assert rel <= 1e-6, rel


def test_exact_matches_closed_form_formula_on_ill_conditioned_ridge():
    s = make_regression(400, 30, condition=1e4, seed=2)
    p = problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val, per_feature=True)
    la = torch.linspace(-6, -2, 30, dtype=torch.float64)
    # dL/dlog_alpha_j = -alpha_j * w_j * (A^{-1} grad_w L_val)_j
    n, m = s.X_train.shape[0], s.X_val.shape[0]
    A = s.X_train.T @ s.X_train / n + torch.diag(la.exp())
    w = torch.linalg.solve(A, s.X_train.T @ s.y_train / n)
    gw = s.X_val.T @ (s.X_val @ w - s.y_val) / m
    want = -la.exp() * w * torch.linalg.solve(A, gw)
    got = hypergrad.exact(p, {"log_alpha": la})["log_alpha"]
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-14)


def test_exact_does_not_touch_inputs_and_needs_closed_form():
    s = load("diabetes")
    p = problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val)
    la = torch.tensor(0.0, dtype=torch.float64)
    hypergrad.exact(p, {"log_alpha": la})
    assert not la.requires_grad and la.grad is None
    no_closed_form = problems.logistic(s.X_train, (s.y_train > 0).long(), s.X_val, (s.y_val > 0).long())
    with pytest.raises(ValueError, match="no closed-form solve_inner"):
        hypergrad.exact(no_closed_form, no_closed_form.init_hparams())
    with pytest.raises(ValueError, match="hparams must have keys"):
        hypergrad.exact(p, {"alpha": la})
    with pytest.raises(TypeError, match="problem must be"):
        hypergrad.exact("ridge", {"log_alpha": la})
