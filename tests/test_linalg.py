"""metahpo_lib.linalg: matrix-free solvers and Hessian-vector products, against dense float64 references."""

import math

import pytest
import torch

from metahpo_lib import linalg


def spd(n, cond, device, seed=0):
    """A random symmetric positive-definite matrix with eigenvalues spread over [1/cond, 1]."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    ev = torch.logspace(0, -math.log10(cond), n, dtype=torch.float64)
    return ((Q * ev) @ Q.T).to(device)


def rhs(n, device, seed=1):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(device)


def test_cg_matches_dense_solve(device):
    H, b = spd(60, 1e4, device), rhs(60, device)
    r = linalg.cg(lambda v: H @ v, b, iters=500, tol=1e-12)
    want = torch.linalg.solve(H, b)
    assert r.converged and r.x.device == b.device
    assert float((r.x - want).norm() / want.norm()) < 1e-8
    assert r.residuals[0] == pytest.approx(float(b.norm()))
    assert r.residuals[-1] <= 1e-12 * float(b.norm())
    assert len(r.residuals) == r.iters + 1
    assert float((b - H @ r.x).norm()) <= 1e-11 * float(b.norm())  # the true residual, not only the recursive one


def test_cg_on_dicts_and_with_preconditioners(device):
    # badly scaled diagonal: Jacobi preconditioning removes the scaling
    s = torch.logspace(0, 3, 40, dtype=torch.float64, device=device)
    H = s[:, None] * spd(40, 10, device) * s[None, :]
    b = rhs(40, device)
    want = torch.linalg.solve(H, b)

    def mv(v):
        y = H @ torch.cat([v["a"], v["b"].reshape(-1)])
        return {"a": y[:10], "b": y[10:].reshape(5, 6)}

    bd = {"a": b[:10], "b": b[10:].reshape(5, 6)}
    plain = linalg.cg(mv, bd, iters=1000, tol=1e-11)
    diag = torch.diagonal(H)
    jac = linalg.cg(mv, bd, iters=1000, tol=1e-11, precondition={"a": diag[:10], "b": diag[10:].reshape(5, 6)})
    fn = linalg.cg(mv, bd, iters=1000, tol=1e-11,
                   precondition=lambda r: {"a": r["a"] / diag[:10], "b": r["b"] / diag[10:].reshape(5, 6)})
    for r in (plain, jac, fn):
        assert r.converged and set(r.x) == {"a", "b"} and r.x["b"].shape == (5, 6)
        x = torch.cat([r.x["a"], r.x["b"].reshape(-1)])
        assert float((x - want).norm() / want.norm()) < 1e-7
    assert abs(jac.iters - fn.iters) <= 2  # same preconditioner, two roundings
    assert jac.iters < plain.iters / 2


def test_cg_warm_start_and_zero_rhs(device):
    H, b = spd(20, 100, device), rhs(20, device)
    x = torch.linalg.solve(H, b)
    r = linalg.cg(lambda v: H @ v, b, x0=x, tol=1e-8)
    assert r.converged and r.iters == 0
    z = linalg.cg(lambda v: H @ v, torch.zeros_like(b))
    assert z.converged and float(z.x.abs().max()) == 0


def test_cg_non_positive_definite_raises_or_warns(device):
    H = spd(30, 10, device) - 0.5 * torch.eye(30, dtype=torch.float64, device=device)
    b = rhs(30, device)
    with pytest.raises(linalg.SolverError, match="not positive definite"):
        linalg.cg(lambda v: H @ v, b, iters=100)
    with pytest.warns(RuntimeWarning, match="not positive definite"):
        r = linalg.cg(lambda v: H @ v, b, iters=100, on_failure="warn")
    assert not r.converged and bool(torch.isfinite(r.x).all())
    with pytest.raises(linalg.SolverError, match="not finite"):
        linalg.cg(lambda v: v * float("nan"), b)


def test_neumann_and_fixed_point_converge_and_agree(device):
    H, b = spd(30, 20, device), rhs(30, device)
    want = torch.linalg.solve(H, b)
    n = linalg.neumann(lambda v: H @ v, b, iters=2000, tol=1e-10, step=1.0)
    f = linalg.fixed_point(lambda v: H @ v, b, iters=2000, tol=1e-10, step=1.0)
    assert n.converged and f.converged and n.iters == f.iters
    assert float((n.x - want).norm() / want.norm()) < 1e-8
    assert torch.allclose(n.x, f.x, rtol=1e-9, atol=1e-12)
    assert n.residuals == pytest.approx(f.residuals, rel=1e-6)
    # residuals of a contraction decrease monotonically
    assert all(b_ <= a_ * (1 + 1e-12) for a_, b_ in zip(n.residuals, n.residuals[1:]))
    # default step from the power iteration also converges
    d = linalg.neumann(lambda v: H @ v, b, iters=2000, tol=1e-8)
    assert d.converged


def test_heavy_ball_needs_fewer_iterations(device):
    H, b = spd(50, 1e3, device), rhs(50, device)
    L, mu = 1.0, 1e-3
    kappa = L / mu
    plain = linalg.fixed_point(lambda v: H @ v, b, iters=20000, tol=1e-8, step=1.0)
    hb = linalg.fixed_point(lambda v: H @ v, b, iters=20000, tol=1e-8, step=4 / (L**0.5 + mu**0.5) ** 2,
                            momentum=((kappa**0.5 - 1) / (kappa**0.5 + 1)) ** 2)
    assert plain.converged and hb.converged
    assert hb.iters < plain.iters / 5


def test_neumann_step_too_large_is_detected(device):
    H, b = spd(20, 10, device), rhs(20, device)
    for solver in (linalg.neumann, linalg.fixed_point):
        with pytest.raises(linalg.SolverError, match="too large"):
            solver(lambda v: H @ v, b, iters=500, step=2.5)
        with pytest.warns(RuntimeWarning, match="growing"):
            r = solver(lambda v: H @ v, b, iters=500, step=2.5, on_failure="warn")
        assert not r.converged and bool(torch.isfinite(r.x).all()) and r.iters < 500


@pytest.mark.parametrize("solver", [linalg.cg, linalg.neumann, linalg.fixed_point])
def test_bad_arguments(solver):
    H, b = spd(5, 2, "cpu"), rhs(5, "cpu")
    mv = lambda v: H @ v  # noqa: E731
    with pytest.raises(ValueError, match="iters"):
        solver(mv, b, iters=0)
    with pytest.raises(ValueError, match="tol"):
        solver(mv, b, tol=0.0)
    with pytest.raises(ValueError, match="tol"):
        solver(mv, b, tol=-1e-3)
    with pytest.raises(TypeError, match="b must be"):
        solver(mv, [1.0, 2.0])
    with pytest.raises(TypeError, match="matvec"):
        solver("H", b)
    with pytest.raises(ValueError, match="matvec must return"):
        solver(lambda v: v[:2], b)
    with pytest.raises(ValueError, match="on_failure"):
        solver(mv, b, on_failure="ignore")
    if solver is not linalg.cg:
        with pytest.raises(ValueError, match="step"):
            solver(mv, b, step=0.0)


def test_cg_bad_preconditioner_and_x0():
    H, b = spd(5, 2, "cpu"), rhs(5, "cpu")
    with pytest.raises(ValueError, match="precondition"):
        linalg.cg(lambda v: H @ v, b, precondition=-torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="precondition"):
        linalg.cg(lambda v: H @ v, b, precondition=torch.ones(4, dtype=torch.float64))
    with pytest.raises(TypeError, match="precondition"):
        linalg.cg(lambda v: H @ v, b, precondition="jacobi")
    with pytest.raises(ValueError, match="x0"):
        linalg.cg(lambda v: H @ v, b, x0=torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="momentum"):
        linalg.fixed_point(lambda v: H @ v, b, momentum=1.0)


def small_loss(device):
    g = torch.Generator().manual_seed(3)
    X = torch.randn(40, 6, generator=g, dtype=torch.float64).to(device)
    y = torch.randint(0, 3, (40,), generator=g).to(device)

    def f(p):
        return torch.nn.functional.cross_entropy(X @ p["W"] + p["b"], y) + 0.1 * p["W"].pow(2).sum()

    params = {"W": 0.1 * torch.randn(6, 3, generator=g, dtype=torch.float64).to(device),
              "b": torch.randn(3, generator=g, dtype=torch.float64).to(device)}
    return f, params


def dense_hessian(f, params):
    keys = list(params)
    flat = torch.cat([params[k].reshape(-1) for k in keys])

    def ff(x):
        out, i = {}, 0
        for k in keys:
            out[k] = x[i:i + params[k].numel()].view_as(params[k])
            i += params[k].numel()
        return f(out)

    return torch.autograd.functional.hessian(ff, flat)


@pytest.mark.parametrize("method", ["double_backward", "jvp_grad", "vjp_grad", "autograd_functional"])
def test_hvp_methods_match_dense_hessian(device, method):
    f, params = small_loss(device)
    Hd = dense_hessian(f, params)
    v = {"W": torch.randn(6, 3, dtype=torch.float64, device=device), "b": torch.randn(3, dtype=torch.float64,
                                                                                     device=device)}
    got = linalg.hvp(f, params, method=method)(v)
    want = Hd @ torch.cat([v["W"].reshape(-1), v["b"]])
    assert torch.allclose(torch.cat([got["W"].reshape(-1), got["b"]]), want, rtol=1e-10, atol=1e-12)
    assert not params["W"].requires_grad  # inputs are not modified


def test_hvp_bad_input():
    f, params = small_loss("cpu")
    with pytest.raises(ValueError, match="method"):
        linalg.hvp(f, params, method="finite")
    with pytest.raises(TypeError, match="params"):
        linalg.hvp(f, [params["W"]])
    with pytest.raises(ValueError, match="scalar"):
        linalg.hvp(lambda p: p["W"], params)


def test_hessian_diagonal_and_max_eigenvalue(device):
    f, params = small_loss(device)
    Hd = dense_hessian(f, params)
    d = linalg.hessian_diagonal(f, params, chunk=7)
    assert torch.allclose(torch.cat([d["W"].reshape(-1), d["b"]]), torch.diagonal(Hd), rtol=1e-10, atol=1e-13)
    est = linalg.hessian_diagonal(f, params, samples=4000, seed=0)
    est = torch.cat([est["W"].reshape(-1), est["b"]])
    off = (Hd - torch.diag(torch.diagonal(Hd))).pow(2).sum(1).sqrt()  # Hutchinson noise scale per entry
    assert bool(((est - torch.diagonal(Hd)).abs() <= 5 * off / 4000**0.5 + 1e-12).all())
    mv = linalg.hvp(f, params)
    lam = linalg.max_eigenvalue(mv, params, iters=200)
    assert lam == pytest.approx(float(torch.linalg.eigvalsh(Hd)[-1]), rel=1e-6)


def test_max_eigenvalue_rejects_negative_definite():
    H = -spd(5, 2, "cpu")
    with pytest.raises(linalg.SolverError, match="not positive definite"):
        linalg.max_eigenvalue(lambda v: H @ v, rhs(5, "cpu"))
