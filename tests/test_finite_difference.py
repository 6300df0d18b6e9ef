"""hypergrad.finite_difference and hypergrad.spsa against hypergrad.exact (float64)."""

import math

import pytest
import torch

from metahpo_lib import hypergrad, inner, problems
from metahpo_lib.data import load, make_regression


def ridge(device=None, d=6):
    s = make_regression(150, d, seed=5, device=device)
    return problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val, per_feature=True)


def rel(a, b):
    return float((a - b).norm() / b.norm())


def test_central_matches_exact(device):
    p = ridge(device)
    h = {"log_alpha": torch.linspace(-3, 0, 6, dtype=torch.float64, device=device)}
    ref = hypergrad.exact(p, h)
    g = hypergrad.finite_difference(p, h, scheme="central")
    assert set(g) == {"log_alpha"} and g["log_alpha"].device == ref["log_alpha"].device
    assert rel(g["log_alpha"], ref["log_alpha"]) <= 1e-6
    assert g.info["inner_solves"] == 12 and g.info["scheme"] == "central"


def test_forward_is_less_accurate_and_costs_n_plus_one():
    p = ridge()
    h = {"log_alpha": torch.linspace(-3, 0, 6, dtype=torch.float64)}
    ref = hypergrad.exact(p, h)["log_alpha"]
    fwd = hypergrad.finite_difference(p, h, scheme="forward")
    cen = hypergrad.finite_difference(p, h, scheme="central")
    assert fwd.info["inner_solves"] == 7
    assert rel(fwd["log_alpha"], ref) <= 1e-4
    assert rel(cen["log_alpha"], ref) < rel(fwd["log_alpha"], ref)
    # truncation error: O(eps) forward, O(eps^2) central -- at eps = 1e-3 forward is far worse
    f3 = hypergrad.finite_difference(p, h, eps=1e-3, scheme="forward")["log_alpha"]
    c3 = hypergrad.finite_difference(p, h, eps=1e-3, scheme="central")["log_alpha"]
    assert rel(c3, ref) < 1e-2 * rel(f3, ref)


def test_float32_round_off_dominates_at_small_eps():
    s = make_regression(150, 6, seed=5, dtype=torch.float32)
    p = problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val, per_feature=True)
    h = {"log_alpha": torch.linspace(-3, 0, 6)}
    ref = hypergrad.exact(problems.ridge(*(t.double() for t in (s.X_train, s.y_train, s.X_val, s.y_val)),
                                         per_feature=True), {"log_alpha": h["log_alpha"].double()})["log_alpha"]
    good = hypergrad.finite_difference(p, h, scheme="central")  # default eps for float32
    bad = hypergrad.finite_difference(p, h, eps=1e-6, scheme="central")
    assert rel(good["log_alpha"].double(), ref) < 1e-2
    assert rel(bad["log_alpha"].double(), ref) > 3 * rel(good["log_alpha"].double(), ref)


def test_inner_solve_minimize_and_unrolled():
    p = ridge()
    h = {"log_alpha": torch.linspace(-2, 0, 6, dtype=torch.float64)}
    ref = hypergrad.exact(p, h)["log_alpha"]
    g = hypergrad.finite_difference(p, h, inner_solve=lambda hh: inner.minimize(p, hh))
    assert rel(g["log_alpha"], ref) <= 1e-5
    # a callable solver: differences of an unrolled inner loop match the unrolled hypergradient
    T, lr = 30, 0.2
    g_fd = hypergrad.finite_difference(p, h, inner_solve=lambda hh: inner.run(p, hh, inner.GD(lr), steps=T))
    g_un = hypergrad.unrolled(p, h, inner.GD(lr), steps=T)
    assert rel(g_fd["log_alpha"], g_un["log_alpha"]) <= 1e-6
    # logistic regression has no closed form: default solver is inner.minimize
    s = load("iris")
    q = problems.logistic(s.X_train, s.y_train, s.X_val, s.y_val, per_feature=True, log_alpha=-1.0)
    gq = hypergrad.finite_difference(q, q.init_hparams())
    gu = hypergrad.unrolled(q, q.init_hparams(), inner.GD(1.5), steps=500)
    assert gq.info["inner_solves"] == 8
    assert rel(gq["log_alpha"], gu["log_alpha"]) <= 1e-4


def test_spsa_is_unbiased_and_cost_does_not_grow_with_n():
    p = ridge(d=20)
    h = {"log_alpha": torch.full((20,), -1.0, dtype=torch.float64)}
    ref = hypergrad.exact(p, h)["log_alpha"]
    one = hypergrad.spsa(p, h, samples=1, seed=0)
    assert one.info["inner_solves"] == 2
    # the directional derivative along each sampled direction is exact: <g_hat, ref> > 0 on average
    many = hypergrad.spsa(p, h, samples=2000, seed=1)
    assert many.info["inner_solves"] == 4000
    cos = float(many["log_alpha"] @ ref / (many["log_alpha"].norm() * ref.norm()))
    cos1 = float(one["log_alpha"] @ ref / (one["log_alpha"].norm() * ref.norm()))
    assert cos > 0.95 and cos > cos1
    # reproducible with the same seed, different with another
    torch.testing.assert_close(hypergrad.spsa(p, h, seed=3)["log_alpha"], hypergrad.spsa(p, h, seed=3)["log_alpha"])
    gen = torch.Generator().manual_seed(3)
    torch.testing.assert_close(hypergrad.spsa(p, h, seed=gen)["log_alpha"], hypergrad.spsa(p, h, seed=3)["log_alpha"])


@pytest.mark.parametrize("eps", [0, -1e-3, float("nan"), float("inf")])
def test_bad_eps(eps):
    p = ridge()
    with pytest.raises(ValueError, match="eps"):
        hypergrad.finite_difference(p, p.init_hparams(), eps=eps)
    with pytest.raises(ValueError, match="eps"):
        hypergrad.spsa(p, p.init_hparams(), eps=eps)


def test_bad_input():
    p = ridge()
    h = p.init_hparams()
    with pytest.raises(TypeError, match="eps"):
        hypergrad.finite_difference(p, h, eps="small")
    with pytest.raises(ValueError, match="scheme"):
        hypergrad.finite_difference(p, h, scheme="backward")
    with pytest.raises(TypeError, match="inner_solve"):
        hypergrad.finite_difference(p, h, inner_solve="newton")
    with pytest.raises(TypeError, match="unexpected keyword argument 'solver'"):
        hypergrad.finite_difference(p, h, solver=None)
    with pytest.raises(ValueError, match="samples"):
        hypergrad.spsa(p, h, samples=0)
    with pytest.raises(TypeError, match="seed"):
        hypergrad.spsa(p, h, seed="zero")
    with pytest.raises(ValueError, match="hparams"):
        hypergrad.finite_difference(p, {"log_alpha": torch.zeros(3, dtype=torch.float64)})
    assert math.isclose(hypergrad.finite_difference(p, h).info["eps"], torch.finfo(torch.float64).eps ** (1 / 3))


def dense_ift(problem, hparams, params):
    """Independent reference: the implicit-function-theorem hypergradient with the Hessian formed
    densely (torch.func.hessian) and pseudo-inverted (the softmax's flat direction makes it singular)."""
    from metahpo_lib.tree import Flat
    fp, fh = Flat(params), Flat(hparams)
    x, y = fp.flat(params), fh.flat(hparams)
    inner_loss = lambda a, b: problem.inner_loss(fp.tree(a), fh.tree(b))  # noqa: E731
    H = torch.func.hessian(inner_loss)(x, y)
    B = torch.func.jacrev(torch.func.grad(inner_loss), 1)(x, y)
    gx, gy = torch.func.grad(lambda a, b: problem.outer_loss(fp.tree(a), fh.tree(b)), (0, 1))(x, y)
    return fh.tree(gy - B.T @ torch.linalg.pinv(H, hermitian=True, rtol=1e-10) @ gx)


def test_default_options_are_accurate_on_multiclass_logistic():
    # digits: 10 classes, one penalty per feature; the inner problem has no closed form and a flat direction
    s = load("digits")
    q = problems.logistic(s.X_train, s.y_train, s.X_val, s.y_val, per_feature=True)
    h = {"log_alpha": torch.linspace(-6, -2, 64, dtype=torch.float64)[torch.randperm(64, generator=torch.Generator().manual_seed(0))]}
    want = dense_ift(q, h, inner.minimize(q, h))["log_alpha"][:8]
    sub = problems.Bilevel(lambda p, hh: q.inner_loss(p, {"log_alpha": torch.cat([hh["a"], h["log_alpha"][8:]])}),
                           lambda p, hh: q.outer_loss(p, hh), q.init_params, lambda: {"a": h["log_alpha"][:8].clone()})
    central = hypergrad.finite_difference(sub, sub.init_hparams())["a"]   # the 8 first coordinates: 16 solves
    forward = hypergrad.finite_difference(sub, sub.init_hparams(), scheme="forward")["a"]
    scale = float(want.abs().max())
    assert float((central - want).abs().max()) <= 1e-5 * scale      # measured 3e-7 (relative)
    # forward differences carry their O(eps) truncation error at the textbook step sqrt(u):
    # measured 1.4e-6 absolute (before the inner solver reached round-off it was 5.0)
    assert float((forward - want).abs().max()) <= 1e-5
