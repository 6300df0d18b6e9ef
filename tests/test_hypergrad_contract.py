"""One contract for every hypergradient method (as Optuna runs one test suite against every
sampler): the same call shape, the keys / shapes / dtype / device of ``hparams``, inputs left
untouched, a detached result with ``.info``, and agreement with ``hypergrad.exact`` on ridge."""

import pytest
import torch

from metahpo_lib import data, hypergrad, inner, problems

#: options that make each method accurate on the contract problem, and the relative error it must reach
CONTRACT = {
    "exact": ({}, 1e-14),
    "finite_difference": ({}, 1e-6),
    "spsa": ({"samples": 1}, 1e-6),          # one hyperparameter: SPSA's direction is the axis, exact to O(eps^2)
    "unrolled": ({"optimizer": inner.GD(0.2), "steps": 1500}, 1e-8),
    "implicit": ({}, 1e-10),
}


def test_every_method_is_in_the_contract():
    assert set(CONTRACT) == set(hypergrad.METHODS)


def contract_problem(device, per_feature):
    s = data.load("diabetes", seed=0, device=device)
    return problems.ridge(s.X_train, s.y_train, s.X_val, s.y_val, per_feature=per_feature, log_alpha=-1.0)


@pytest.mark.parametrize("method", sorted(CONTRACT))
@pytest.mark.parametrize("per_feature", [False, True], ids=["scalar", "per_feature"])
def test_contract(method, per_feature, device):
    options, tol = CONTRACT[method]
    if method == "spsa" and per_feature:
        pytest.skip("SPSA is a noisy estimate when there is more than one hyperparameter (tested in its own file)")
    p = contract_problem(device, per_feature)
    h = p.init_hparams()
    h_before = {k: v.clone() for k, v in h.items()}
    g = hypergrad.METHODS[method](p, h, **options)
    assert isinstance(g, hypergrad.HypergradResult) and isinstance(g.info, dict)
    assert g.info["method"] == method
    assert set(g) == set(h)
    for k in h:
        assert g[k].shape == h[k].shape and g[k].dtype == h[k].dtype and g[k].device == h[k].device
        assert not g[k].requires_grad
        assert torch.equal(h[k], h_before[k]) and not h[k].requires_grad  # input untouched
    want = hypergrad.exact(p, h)
    for k in h:
        assert float((g[k] - want[k]).norm() / want[k].norm()) <= tol, (method, k)


@pytest.mark.parametrize("method", sorted(CONTRACT))
def test_contract_bad_input(method):
    p = contract_problem("cpu", False)
    options, _ = CONTRACT[method]
    fn = hypergrad.METHODS[method]
    with pytest.raises(TypeError, match="problem"):
        fn("ridge", p.init_hparams(), **options)
    with pytest.raises(ValueError, match="hparams"):
        fn(p, {"alpha": torch.tensor(0.0, dtype=torch.float64)}, **options)
    with pytest.raises(ValueError, match="NaN"):
        fn(p, {"log_alpha": torch.tensor(float("nan"), dtype=torch.float64)}, **options)
    with pytest.raises(TypeError, match="float64"):
        fn(p, {"log_alpha": torch.tensor(0.0, dtype=torch.float32)}, **options)
    with pytest.raises(ValueError, match="'meta' device"):
        fn(p, {"log_alpha": torch.tensor(0.0, dtype=torch.float64, device="meta")}, **options)
