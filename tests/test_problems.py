import numpy as np
import pytest
import torch

from metahpo_lib import problems


def _data(device, n=60, m=40, d=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X, Xv = torch.randn(n, d, generator=g, dtype=dtype), torch.randn(m, d, generator=g, dtype=dtype)
    w = torch.randn(d, generator=g, dtype=dtype)
    y, yv = X @ w + 0.3 * torch.randn(n, generator=g, dtype=dtype), Xv @ w + 0.3 * torch.randn(m, generator=g, dtype=dtype)
    return [t.to(device) for t in (X, y, Xv, yv)]


@pytest.mark.parametrize("per_feature", [False, True])
def test_ridge_closed_form_matches_numpy_lstsq(device, per_feature):
    X, y, Xv, yv = _data(device)
    p = problems.ridge(X, y, Xv, yv, per_feature=per_feature)
    la = torch.linspace(-2, 1, 6, dtype=torch.float64, device=device) if per_feature else torch.tensor(-0.5, dtype=torch.float64, device=device)
    w = p.solve_inner({"log_alpha": la})["w"]
    assert w.device == X.device
    n = X.shape[0]
    alpha = la.exp().expand(6).cpu().numpy()
    A = np.vstack([X.cpu().numpy() / np.sqrt(n), np.diag(np.sqrt(alpha))])
    b = np.concatenate([y.cpu().numpy() / np.sqrt(n), np.zeros(6)])
    np.testing.assert_allclose(w.cpu().numpy(), np.linalg.lstsq(A, b, rcond=None)[0], rtol=1e-10, atol=1e-12)


def test_ridge_closed_form_is_stationary_point_of_inner_loss(device):
    X, y, Xv, yv = _data(device)
    p = problems.ridge(X, y, Xv, yv)
    hp = {"log_alpha": torch.tensor(0.3, dtype=torch.float64, device=device)}
    w = p.solve_inner(hp)["w"].requires_grad_(True)
    (g,) = torch.autograd.grad(p.inner_loss({"w": w}, hp), w)
    assert g.norm() < 1e-12
    assert p.outer_loss({"w": w}, hp).item() == pytest.approx(((Xv @ w - yv) ** 2).mean().item() / 2)


def test_ridge_init_shapes():
    X, y, Xv, yv = _data("cpu")
    assert problems.ridge(X, y, Xv, yv).init_hparams()["log_alpha"].shape == ()
    assert problems.ridge(X, y, Xv, yv, per_feature=True).init_hparams()["log_alpha"].shape == (6,)
    assert problems.ridge(X, y, Xv, yv).init_params()["w"].shape == (6,)


@pytest.mark.parametrize("classes", [2, 4])
def test_logistic_losses_match_sklearn_style_reference(classes):
    g = torch.Generator().manual_seed(1)
    X, Xv = torch.randn(50, 3, generator=g, dtype=torch.float64), torch.randn(20, 3, generator=g, dtype=torch.float64)
    y, yv = torch.arange(50) % classes, torch.arange(20) % classes
    p = problems.logistic(X, y, Xv, yv, per_feature=True)
    params = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in p.init_params().items()}
    hp = {"log_alpha": torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)}
    logits = X @ params["W"] + params["b"]
    if classes == 2:
        prob = torch.sigmoid(logits)
        nll = -(y * prob.log() + (1 - y) * (1 - prob).log()).mean()
        pen = 0.5 * (hp["log_alpha"].exp() * params["W"] ** 2).sum()
    else:
        nll = -logits.log_softmax(-1)[torch.arange(50), y].mean()
        pen = 0.5 * (hp["log_alpha"].exp()[:, None] * params["W"] ** 2).sum()
    assert p.inner_loss(params, hp).item() == pytest.approx((nll + pen).item(), rel=1e-12)
    assert problems.predict_logistic(params, Xv).shape == (20,)


def test_bad_inputs_name_the_argument():
    X, y, Xv, yv = _data("cpu")
    with pytest.raises(ValueError, match="X_train and y_train"):
        problems.ridge(X, y[:-1], Xv, yv)
    with pytest.raises(TypeError, match="X_train must be a floating-point"):
        problems.ridge(X.long(), y, Xv, yv)
    with pytest.raises(ValueError, match="y_val contains NaN"):
        problems.ridge(X, y, Xv, torch.full_like(yv, float("nan")))
    with pytest.raises(ValueError, match="X_val must match X_train"):
        problems.ridge(X, y, Xv[:, :3], yv)
    with pytest.raises(TypeError, match="y_train must hold integer class labels"):
        problems.logistic(X, y, Xv, yv)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        problems.ridge(X.numpy(), y, Xv, yv)
    p = problems.ridge(X, y, Xv, yv)
    with pytest.raises(ValueError, match=r"missing \['log_alpha'\], unexpected \['lr'\]"):
        p.check_hparams({"lr": torch.tensor(0.1)})
    with pytest.raises(ValueError, match="must have shape"):
        p.check_hparams({"log_alpha": torch.zeros(3, dtype=torch.float64)})
    with pytest.raises(TypeError, match="floating-point"):
        p.check_hparams({"log_alpha": torch.tensor(1)})


def test_hparams_must_be_finite_and_match_the_problem_dtype():
    X, y, Xv, yv = _data("cpu")
    p = problems.ridge(X, y, Xv, yv)
    with pytest.raises(ValueError, match=r"hparams\['log_alpha'\] contains NaN"):
        p.check_hparams({"log_alpha": torch.tensor(float("nan"), dtype=torch.float64)})
    with pytest.raises(TypeError, match="must be torch.float64 on cpu"):
        p.check_hparams({"log_alpha": torch.tensor(0.0, dtype=torch.float32)})
    with pytest.raises(ValueError, match="labels must lie in"):
        problems.logistic(X, (y > 0).long(), Xv, (yv > 0).long() - 1)


def test_empty_data_sets_are_refused():
    X, y, Xv, yv = _data("cpu")
    with pytest.raises(ValueError, match="X_train has no rows"):
        problems.ridge(X[:0], y[:0], Xv, yv)
    with pytest.raises(ValueError, match="X_train has no rows"):
        problems.logistic(X[:0], (y[:0] > 0).long(), Xv, (yv > 0).long())
    with pytest.raises(ValueError, match="X_val has no rows"):
        problems.ridge(X, y, Xv[:0], yv[:0])


def test_losses_must_return_scalar_tensors():
    def make(inner_loss):
        return problems.Bilevel(inner_loss, lambda p, h: p["w"].sum(), init_params=lambda: {"w": torch.zeros(3)},
                                init_hparams=lambda: {"a": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="inner_loss must return a scalar tensor .* got shape \\(3,\\)"):
        make(lambda p, h: p["w"] ** 2).inner_loss({"w": torch.zeros(3)}, {"a": torch.tensor(1.0)})
    with pytest.raises(TypeError, match="inner_loss must return a scalar torch.Tensor, got float"):
        make(lambda p, h: 1.0).inner_loss({"w": torch.zeros(3)}, {"a": torch.tensor(1.0)})
    with pytest.raises(TypeError, match="outer_loss must be a function"):
        problems.Bilevel(lambda p, h: p["w"].sum(), 3.0, init_params=lambda: {"w": torch.zeros(3)},
                         init_hparams=lambda: {"a": torch.tensor(1.0)})
