"""Bayesian optimisation pieces (notebook 01): GP posterior, marginal likelihood, expected improvement,
TPE's Parzen densities, the unit-cube map and the BO loop, each against an independent float64 reference."""

import math

import numpy as np
import pytest
import torch

from metahpo_lib import hpo
from metahpo_lib.hpo import bayesopt


def _data(seed, n=7, d=2, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g, dtype=torch.float64)
    y = torch.sin(5 * X[:, 0]) + X[:, -1] ** 2 + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return X.to(device), y.to(device)


def test_gp_posterior_matches_a_direct_solve(device):
    X, y = _data(0, device=device)
    Xs = torch.rand(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device)
    ell, noise = 0.3, 1e-4
    gp = bayesopt.fit_gp(X, y, lengthscale=ell, noise=noise)
    mean, std = gp.predict(Xs)
    assert mean.device == X.device and mean.dtype == torch.float64
    # reference: numpy, explicit inverse, the formulas of the docstring on standardised y
    Xn, Xsn, yn = X.cpu().numpy(), Xs.cpu().numpy(), y.cpu().numpy()
    k = lambda A, B: np.exp(-0.5 * ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1) / ell ** 2)  # noqa: E731
    mu, sd = yn.mean(), yn.std(ddof=1)
    Kinv = np.linalg.inv(k(Xn, Xn) + noise * np.eye(len(Xn)))
    ks = k(Xn, Xsn)
    want_mean = mu + sd * ks.T @ Kinv @ ((yn - mu) / sd)
    want_std = sd * np.sqrt(np.clip(1 - np.einsum("ij,ik,kj->j", ks, Kinv, ks), 0, None))
    np.testing.assert_allclose(mean.cpu().numpy(), want_mean, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(std.cpu().numpy(), want_std, rtol=1e-6, atol=1e-8)


def test_gp_interpolates_and_reverts_to_the_prior_far_away():
    X, y = _data(2)
    gp = bayesopt.fit_gp(X, y, lengthscale=0.2)
    mean, std = gp.predict(X)
    assert torch.allclose(mean, y, atol=1e-4) and float(std.max()) < 1e-2
    far_mean, far_std = gp.predict(torch.full((1, 2), 50.0, dtype=torch.float64))
    assert far_mean.item() == pytest.approx(y.mean().item()) and far_std.item() == pytest.approx(y.std().item())


def test_log_marginal_likelihood_is_a_gaussian_log_density():
    X, y = _data(3)
    ell, noise = 0.4, 1e-3
    K = bayesopt.rbf_kernel(X, X, ell) + noise * torch.eye(len(y), dtype=torch.float64)
    want = torch.distributions.MultivariateNormal(torch.zeros(len(y), dtype=torch.float64), K).log_prob(y)
    assert bayesopt.log_marginal_likelihood(X, y, ell, noise).item() == pytest.approx(want.item(), rel=1e-10)


def test_fit_gp_picks_the_best_length_scale_of_the_grid():
    X, y = _data(4, n=10)
    gp = bayesopt.fit_gp(X, y)
    z = (y - y.mean()) / y.std()
    scores = [bayesopt.log_marginal_likelihood(X, z, ell).item() for ell in bayesopt.LENGTHSCALES]
    assert gp.lengthscale == bayesopt.LENGTHSCALES[int(np.argmax(scores))]


@pytest.mark.parametrize("mean, std, best, xi", [(0.3, 0.5, 0.1, 0.0), (-0.2, 0.05, 0.0, 0.01), (2.0, 1.5, -1.0, 0.3)])
def test_expected_improvement_matches_numerical_integration(mean, std, best, xi):
    # E[max(best - xi - f, 0)], f ~ N(mean, std^2), by the trapezoid rule on a fine grid
    f = np.linspace(mean - 12 * std, mean + 12 * std, 400_001)
    density = np.exp(-0.5 * ((f - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
    want = np.trapezoid(np.maximum(best - xi - f, 0) * density, f)
    got = bayesopt.expected_improvement(torch.tensor([mean], dtype=torch.float64),
                                        torch.tensor([std], dtype=torch.float64), best, xi)
    assert got.item() == pytest.approx(want, rel=1e-7, abs=1e-12)


def test_expected_improvement_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mean, std = torch.tensor([0.0, 0.5, -0.3], dtype=torch.float64), torch.tensor([1.0, 0.2, 0.7], dtype=torch.float64)
    f = mean + std * torch.randn(1_000_000, 3, generator=g, dtype=torch.float64)
    gains = (0.1 - f).clamp_min(0)
    se = gains.std(0) / math.sqrt(len(f))
    ei = bayesopt.expected_improvement(mean, std, 0.1)
    assert bool(((ei - gains.mean(0)).abs() < 4 * se).all())


def test_expected_improvement_edge_cases(device):
    mean = torch.tensor([0.0, 1.0, -1.0], device=device)
    ei = bayesopt.expected_improvement(mean, torch.zeros(3, device=device), best=0.5)
    assert ei.tolist() == [0.5, 0.0, 1.5] and ei.device == mean.device
    big_xi = bayesopt.expected_improvement(mean, torch.ones(3, device=device), best=0.5, xi=1.0)
    assert bool((big_xi < bayesopt.expected_improvement(mean, torch.ones(3, device=device), best=0.5)).all())


def test_parzen_densities_match_the_formula():
    X, y = _data(5, n=8, d=1)
    Xs = torch.linspace(0, 1, 5, dtype=torch.float64)[:, None]
    h = 0.15
    l, g = bayesopt.parzen_densities(X, y, Xs, gamma=0.25, bandwidth=h)
    order = np.argsort(y.numpy())
    good, bad = X.numpy()[order[:2], 0], X.numpy()[order[2:], 0]
    pdf = lambda c: np.exp(-0.5 * ((Xs.numpy() - c[None, :]) / h) ** 2).mean(1) / (h * math.sqrt(2 * math.pi))  # noqa: E731
    np.testing.assert_allclose(l.numpy(), pdf(good), rtol=1e-12)
    np.testing.assert_allclose(g.numpy(), pdf(bad), rtol=1e-12)


def test_unit_cube_round_trip():
    space = {"a": hpo.Float(1e-3, 1e2, log=True), "b": hpo.Float(-1.0, 3.0), "n": hpo.Int(1, 9)}
    configs = hpo.random_search(lambda c: 0.0, space, 20, seed=0).configs
    back = bayesopt.from_unit(space, bayesopt.to_unit(space, configs))
    for c, d in zip(configs, back):
        assert d["a"] == pytest.approx(c["a"], rel=1e-12) and d["b"] == pytest.approx(c["b"]) and d["n"] == c["n"]


def test_bayes_opt_is_seeded_and_beats_random_search_on_a_smooth_function():
    space = {"x": hpo.Float(-2.0, 2.0), "y": hpo.Float(-2.0, 2.0)}
    f = lambda c: (c["x"] - 0.7) ** 2 + 0.5 * (c["y"] + 0.4) ** 2  # noqa: E731
    runs = [bayesopt.bayes_opt(f, space, 12, seed=s, n_candidates=200) for s in range(3)]
    assert runs[0].configs == bayesopt.bayes_opt(f, space, 12, seed=0, n_candidates=200).configs and len(runs[0]) == 12
    assert all(bo.best_value < hpo.random_search(f, space, 12, seed=s).best_value for s, bo in enumerate(runs))


def test_bayes_opt_skips_failed_trials():
    f = lambda c: float("nan") if c["x"] > 0.5 else (c["x"] - 0.2) ** 2  # noqa: E731
    h = bayesopt.bayes_opt(f, {"x": hpo.Float(0.0, 1.0)}, 8, n_init=2, seed=0, n_candidates=200)
    assert len(h) == 8 and math.isfinite(h.best_value) and abs(h.best_config["x"] - 0.2) < 0.1


def test_bad_inputs_are_named():
    one = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="std must be >= 0"):
        bayesopt.expected_improvement(one, -one, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        bayesopt.expected_improvement(one, torch.ones(2, dtype=torch.float64), 0.0)
    with pytest.raises(ValueError, match="xi"):
        bayesopt.expected_improvement(one, one, 0.0, xi=-1.0)
    with pytest.raises(ValueError, match="best"):
        bayesopt.expected_improvement(one, one, float("nan"))
    with pytest.raises(ValueError, match="same n"):
        bayesopt.fit_gp(torch.zeros(3, 1, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="lengthscale"):
        bayesopt.fit_gp(torch.zeros(3, 1, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), lengthscale=0.0)
    with pytest.raises(ValueError, match="columns"):
        bayesopt.fit_gp(torch.zeros(3, 1, dtype=torch.float64), one, lengthscale=1.0).predict(torch.zeros(2, 2))
    with pytest.raises(TypeError, match="Categorical"):
        bayesopt.bayes_opt(lambda c: 0.0, {"c": hpo.Categorical("ab")}, 3)
    with pytest.raises(ValueError, match="budget"):
        bayesopt.bayes_opt(lambda c: 0.0, {"x": hpo.Float(0.0, 1.0)}, 0)
    with pytest.raises(TypeError, match="objective"):
        bayesopt.bayes_opt(None, {"x": hpo.Float(0.0, 1.0)}, 3)
    with pytest.raises(ValueError, match="at least 2 trials"):
        bayesopt.parzen_densities(torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64),
                                  torch.zeros(1, 1, dtype=torch.float64))
