"""hypergrad.implicit against hypergrad.exact (closed form) and a dense implicit-function-theorem reference."""

import math
import warnings

import pytest
import torch

from functools import partial

from metahpo_lib import data, hypergrad, inner, linalg, problems


def rel_err(got, want):
    return float((got - want).norm() / want.norm())


def ill_ridge(device, condition=1e6, log_alpha=math.log(1e-3)):
    """Per-feature ridge, n = 2000 training points, d = 200 features spread over `condition`."""
    s = data.make_regression(4000, 200, condition=condition, split=(0.5, 0.25, 0.25), seed=0, device=device)
    assert s.X_train.shape == (2000, 200)
    return problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val, per_feature=True, log_alpha=log_alpha)


def test_cg_reaches_1e8_on_ill_conditioned_per_feature_ridge(device):
    pr = ill_ridge(device)
    hp = pr.init_hparams()
    want = hypergrad.exact(pr, hp)["log_alpha"]
    X = pr.data["X_train"]
    ev = torch.linalg.eigvalsh(X.T @ X / X.shape[0])
    assert float(ev[-1] / ev[0]) > 1e5  # really ill-conditioned data
    # the default call: Jacobi-preconditioned CG, chosen by itself
    gj = hypergrad.implicit(pr, hp)
    assert set(gj) == {"log_alpha"} and gj["log_alpha"].shape == (200,) and gj["log_alpha"].device == want.device
    assert gj.info["converged"] and gj.info["residual"] <= 1e-10
    assert rel_err(gj["log_alpha"], want) <= 1e-8
    assert gj.info["hvps"] == gj.info["iters"] + 200  # the exact diagonal costs one product per parameter
    # plain CG, passed as a value: same accuracy, far more iterations on feature-scaled data
    g = hypergrad.implicit(pr, hp, solve=partial(linalg.cg, iters=1000, tol=1e-10))
    assert g.info["converged"] and rel_err(g["log_alpha"], want) <= 1e-8
    assert gj.info["iters"] < g.info["iters"] / 4
    assert isinstance(g.info["solve"], linalg.SolveResult) and g.info["hvps"] == g.info["iters"]


@pytest.mark.parametrize("solver", ["neumann", "fixed_point"])
def test_neumann_and_fixed_point_converge_when_well_conditioned(device, solver):
    pr = ill_ridge(device, condition=10.0, log_alpha=math.log(0.1))
    hp = pr.init_hparams()
    want = hypergrad.exact(pr, hp)["log_alpha"]
    solver = getattr(linalg, solver)
    g = hypergrad.implicit(pr, hp, solve=partial(solver, iters=3000, tol=1e-10))
    assert g.info["converged"]
    assert rel_err(g["log_alpha"], want) <= 1e-8
    # fewer terms, less accuracy: the error shrinks with the number of terms
    with pytest.warns(RuntimeWarning, match="stopped at relative residual"):  # truncated on purpose
        errs = [rel_err(hypergrad.implicit(pr, hp, solve=partial(solver, iters=k, tol=1e-14, step=1.0))["log_alpha"], want)
                for k in (2, 8, 32)]
    assert errs[0] > errs[1] > errs[2]


def test_neumann_equals_fixed_point_from_zero():
    pr = ill_ridge("cpu", condition=10.0, log_alpha=math.log(0.1))
    hp = pr.init_hparams()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # not converged in 7 terms: intended
        a = hypergrad.implicit(pr, hp, solve=partial(linalg.neumann, iters=7, step=0.5))
        b = hypergrad.implicit(pr, hp, solve=partial(linalg.fixed_point, iters=7, step=0.5))
    assert torch.allclose(a["log_alpha"], b["log_alpha"], rtol=1e-10, atol=1e-14)


def test_scalar_hparam_and_float32(device):
    s = data.load("diabetes", device=device)
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-3)):
        pr = problems.ridge(s.X_train.to(dtype), s.y_train.to(dtype), s.X_val.to(dtype), s.y_val.to(dtype),
                            log_alpha=-2.0)
        hp = pr.init_hparams()
        want = hypergrad.exact(pr, hp)["log_alpha"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # float32: gradient norm ~1e-7, tol unreachable
            g = hypergrad.implicit(pr, hp, solve=partial(linalg.cg, tol=1e-6 if dtype == torch.float32 else 1e-10))
        assert g["log_alpha"].shape == () and g["log_alpha"].dtype == dtype
        assert abs(float(g["log_alpha"] - want)) <= tol * abs(float(want))


def dense_ift(problem, hparams, params):
    """Independent reference: form the Hessian and the mixed Jacobian densely with torch.func."""
    keys, hkeys = list(params), list(hparams)
    sizes = [params[k].numel() for k in keys]

    def unflat(x):
        return {k: c.view_as(params[k]) for k, c in zip(keys, torch.split(x, sizes))}

    th = torch.cat([params[k].reshape(-1) for k in keys])
    lam = torch.cat([hparams[k].reshape(-1) for k in hkeys])

    def unflat_h(y):
        return {k: c.view_as(hparams[k]) for k, c in zip(hkeys, torch.split(y, [hparams[k].numel() for k in hkeys]))}

    gin = torch.func.grad(lambda x, y: problem.inner_loss(unflat(x), unflat_h(y)))
    H = torch.func.jacrev(gin, 0)(th, lam)
    B = torch.func.jacrev(gin, 1)(th, lam)  # d(grad_theta)/d lambda
    gx, gy = torch.func.grad(lambda x, y: problem.outer_loss(unflat(x), unflat_h(y)), (0, 1))(th, lam)
    return gy - B.T @ torch.linalg.solve(H, gx)


def test_logistic_without_closed_form_uses_inner_minimize(device):
    s = data.load("wine", device=device)  # 13 features, 3 classes
    pr = problems.logistic(s.X_train, s.y_train, s.X_val, s.y_val, per_feature=True, log_alpha=-2.0)
    hp = {"log_alpha": torch.linspace(-3, 0, 13, dtype=torch.float64, device=device)}
    g = hypergrad.implicit(pr, hp, solve=partial(linalg.cg, tol=1e-12, iters=500))
    params = inner.minimize(pr, hp)  # the same default inner solve
    want = dense_ift(pr, hp, params)
    assert rel_err(g["log_alpha"], want) <= 1e-7
    assert g.info["grad_norm"] < 1e-8


def test_warm_start_with_q():
    pr = ill_ridge("cpu", condition=1e3, log_alpha=math.log(1e-2))
    hp = pr.init_hparams()
    g = hypergrad.implicit(pr, hp)
    info = g.info
    assert info["converged"] and info["residual"] <= 1e-10 and len(info["residuals"]) == info["solve"].iters + 1
    g2 = hypergrad.implicit(pr, hp, params=info["params"], solve=partial(linalg.cg, x0=info["q"]))
    assert g2.info["iters"] <= 2 and torch.allclose(g2["log_alpha"], g["log_alpha"], rtol=1e-8)


# ----------------------------------------------------------------------------- bad input
def test_non_stationary_params_warn_with_gradient_norm():
    pr = ill_ridge("cpu", condition=10.0, log_alpha=0.0)
    hp = pr.init_hparams()
    exact_params = pr.solve_inner(hp)
    off = {"w": exact_params["w"] + 1e-3}
    with pytest.warns(RuntimeWarning, match=r"not a stationary point.*\|\|grad_theta L_train\|\| = \d"):
        g = hypergrad.implicit(pr, hp, params=off)
    want = hypergrad.exact(pr, hp)["log_alpha"]
    assert rel_err(g["log_alpha"], want) > 1e-6  # biased, as the warning says
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hypergrad.implicit(pr, hp, params=exact_params)  # stationary: no warning
        hypergrad.implicit(pr, hp, params=off, stationarity_tol=None)  # silenced on request


def saddle_problem():
    """Inner loss with negative curvature in one direction: a stationary point that is a saddle."""
    def inner_loss(p, h):
        w = p["w"]
        return 0.5 * (h["a"] * w[0] ** 2 - w[1] ** 2)

    def outer_loss(p, h):
        return (p["w"] - 1).pow(2).sum()

    return problems.Bilevel(inner_loss, outer_loss, init_params=lambda: {"w": torch.zeros(2, dtype=torch.float64)},
                            init_hparams=lambda: {"a": torch.tensor(1.0, dtype=torch.float64)})


def test_non_positive_definite_hessian_is_reported():
    pr = saddle_problem()
    hp, params = pr.init_hparams(), pr.init_params()
    with pytest.raises(linalg.SolverError, match="not positive definite"):
        hypergrad.implicit(pr, hp, params=params)  # default: the diagonal is not positive, plain CG
    with pytest.raises(linalg.SolverError, match="not positive definite"):
        hypergrad.implicit(pr, hp, params=params, solve=linalg.cg)
    with pytest.warns(RuntimeWarning, match="not positive definite"):
        g = hypergrad.implicit(pr, hp, params=params, solve=partial(linalg.cg, on_failure="warn"))
    assert bool(torch.isfinite(g["a"]).all())
    with pytest.raises(linalg.SolverError, match="not positive definite"):
        hypergrad.implicit(pr, hp, params=params, solve=linalg.neumann)  # power iteration sees it
    with pytest.raises(linalg.SolverError, match="growing"):
        hypergrad.implicit(pr, hp, params=params, solve=partial(linalg.neumann, step=0.5, iters=200))


def test_neumann_step_too_large():
    pr = ill_ridge("cpu", condition=10.0, log_alpha=0.0)
    hp = pr.init_hparams()
    with pytest.raises(linalg.SolverError, match="step=.* is too large"):
        hypergrad.implicit(pr, hp, solve=partial(linalg.neumann, step=50.0, iters=500))
    with pytest.raises(linalg.SolverError, match="too large"):
        hypergrad.implicit(pr, hp, solve=partial(linalg.fixed_point, step=50.0, iters=500))


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(solve=partial(linalg.cg, iters=0)), ValueError, "iters"),
    (dict(solve=partial(linalg.cg, iters=2.5)), ValueError, "iters"),
    (dict(solve=partial(linalg.cg, tol=0.0)), ValueError, "tol"),
    (dict(solve="cg"), TypeError, "solve must be a function"),
    (dict(solve=partial(linalg.neumann, precondition="jacobi")), TypeError, "precondition"),
    (dict(solve=partial(linalg.cg, step=0.1)), TypeError, "step"),
    (dict(solve=partial(linalg.neumann, step=-1.0)), ValueError, "step"),
    (dict(solve=partial(linalg.fixed_point, momentum=1.5)), ValueError, "momentum"),
    (dict(stationarity_tol=0.0), ValueError, "stationarity_tol"),
    (dict(solve=partial(linalg.cg, on_failure="ignore")), ValueError, "on_failure"),
    (dict(tol=1e-8), TypeError, "unexpected keyword argument 'tol'"),
    (dict(params={"v": torch.zeros(200, dtype=torch.float64)}), ValueError, "params"),
    (dict(params={"w": torch.zeros(3, dtype=torch.float64)}), ValueError, "params"),
])
def test_bad_arguments(kwargs, exc, match):
    pr = ill_ridge("cpu", condition=10.0, log_alpha=0.0)
    with pytest.raises(exc, match=match):
        hypergrad.implicit(pr, pr.init_hparams(), **kwargs)


def test_bad_problem_and_hparams():
    pr = ill_ridge("cpu", condition=10.0, log_alpha=0.0)
    with pytest.raises(TypeError, match="problem"):
        hypergrad.implicit("ridge", pr.init_hparams())
    with pytest.raises(ValueError, match="hparams"):
        hypergrad.implicit(pr, {"alpha": torch.zeros(200, dtype=torch.float64)})


def test_losses_that_are_not_scalar_tensors_are_refused():
    for bad, exc, match in [(lambda p, h: (p["w"] - 1).pow(2), ValueError, "inner_loss must return a scalar"),
                            (lambda p, h: 1.0, TypeError, "inner_loss must return a scalar torch.Tensor")]:
        pr = problems.Bilevel(bad, lambda p, h: p["w"].sum(), init_params=lambda: {"w": torch.zeros(3, dtype=torch.float64)},
                              init_hparams=lambda: {"a": torch.tensor(1.0, dtype=torch.float64)})
        with pytest.raises(exc, match=match):
            hypergrad.implicit(pr, pr.init_hparams(), params=pr.init_params())


def test_hparams_on_the_meta_device_are_refused():
    pr = ill_ridge("cpu", condition=10.0, log_alpha=0.0)
    with pytest.raises(ValueError, match="'meta' device"):
        hypergrad.implicit(pr, {"log_alpha": torch.zeros(200, dtype=torch.float64, device="meta")})
