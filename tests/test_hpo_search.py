import math
import random

import pytest
import torch

from metahpo_lib import hpo
from metahpo_lib.hpo.search import grid_configs


def test_grid_fits_budget_and_covers_range():
    space = {"a": hpo.Float(1e-3, 1e3, log=True), "b": hpo.Float(0, 1)}
    configs = grid_configs(space, 30)
    assert len(configs) == 25
    assert min(c["a"] for c in configs) == pytest.approx(1e-3) and max(c["a"] for c in configs) == pytest.approx(1e3)
    assert sorted({round(c["b"], 12) for c in configs}) == [0, 0.25, 0.5, 0.75, 1]
    assert len(grid_configs({"c": hpo.Categorical("xyz"), "n": hpo.Int(1, 3)}, 100)) == 9


def test_random_search_is_seeded_in_range_and_log_uniform():
    space = {"a": hpo.Float(1e-4, 1e4, log=True), "n": hpo.Int(2, 5), "c": hpo.Categorical(["x", "y"])}
    h1 = hpo.random_search(lambda c: math.log(c["a"]) ** 2, space, 400, seed=5)
    h2 = hpo.random_search(lambda c: math.log(c["a"]) ** 2, space, 400, seed=5)
    assert h1.configs == h2.configs and len(h1) == 400
    a = [c["a"] for c in h1.configs]
    assert all(1e-4 <= x <= 1e4 for x in a)
    below_one = sum(x < 1 for x in a) / len(a)
    assert 0.4 < below_one < 0.6  # log-uniform: half the mass below the geometric midpoint
    assert {c["n"] for c in h1.configs} == {2, 3, 4, 5} and {c["c"] for c in h1.configs} == {"x", "y"}


def test_seed_int_or_generator():
    space = {"x": hpo.Float(0, 1)}
    f = lambda c: c["x"]  # noqa: E731
    g = torch.Generator().manual_seed(3)
    a, b = hpo.random_search(f, space, 5, seed=g), hpo.random_search(f, space, 5, seed=g)
    assert a.configs != b.configs  # a generator is consumed: consecutive calls differ
    g2 = torch.Generator().manual_seed(3)
    assert hpo.random_search(f, space, 5, seed=g2).configs == a.configs  # and is reproducible
    assert hpo.int_seed(11) == 11  # an int is passed on unchanged (published numbers stay)
    assert hpo.random_search(f, space, 5, seed=11).configs == hpo.random_search(f, space, 5, seed=11).configs


def test_history_best_so_far():
    h = hpo.History()
    for v in [3.0, float("nan"), 1.0, 2.0, 0.5]:
        h.add({"v": v}, v)
    assert h.best_so_far == [3.0, 3.0, 1.0, 1.0, 0.5]
    assert h.best_value == 0.5 and h.best_config == {"v": 0.5} and h.best_index == 4
    other = hpo.History([{"v": 0.1}], [0.1])
    assert len(h.extend(other)) == 6 and h.best_value == 0.1


def test_grid_search_evaluates_every_point():
    calls = []
    h = hpo.grid_search(lambda c: calls.append(c) or (c["x"] - 0.3) ** 2, {"x": hpo.Float(0, 1)}, 11)
    assert len(calls) == 11 and h.best_config["x"] == pytest.approx(0.3)


@pytest.mark.parametrize("low, high, log", [(0, 3, False), (1, 9, True), (-5, 5, False), (2, 1000, True), (4, 5, False)])
def test_int_grid_and_samples_stay_inside_the_bounds(low, high, log):
    dim = hpo.Int(low, high, log=log)
    rng = random.Random(0)
    for k in range(1, 40):
        pts = dim.grid(k)
        assert all(isinstance(p, int) and low <= p <= high for p in pts) and len(pts) <= k
        if k >= 2:
            assert pts[0] == low and pts[-1] == high
    draws = [dim.sample(rng) for _ in range(300)]
    assert all(isinstance(x, int) and low <= x <= high for x in draws)


def test_int_bounds_must_be_integers():
    with pytest.raises(ValueError, match="Int low must be an integer"):
        hpo.Int(0.5, 3.5)  # would grid to 0 and 4, outside the bounds
    with pytest.raises(ValueError, match="Int high must be an integer"):
        hpo.Int(0, 3.5)
    with pytest.raises(TypeError, match="Int low must be an integer"):
        hpo.Int("0", 3)
    d = hpo.Int(1.0, 3.0)  # integral floats are fine and become ints
    assert (d.low, d.high) == (1, 3) and type(d.low) is int and d.grid(5) == [1, 2, 3]
    with pytest.raises(ValueError, match="need finite low < high"):
        hpo.Int(3, 3)


def test_bad_input():
    with pytest.raises(ValueError, match="space must be a non-empty dict"):
        hpo.random_search(lambda c: 0.0, {}, 5)
    with pytest.raises(ValueError, match="need finite low < high"):
        hpo.Float(1, 1)
    with pytest.raises(ValueError, match="need finite low < high"):
        hpo.Float(0, math.inf)
    with pytest.raises(ValueError, match="log scale needs low > 0"):
        hpo.Float(0, 1, log=True)
    with pytest.raises(ValueError, match="at least one choice"):
        hpo.Categorical([])
    with pytest.raises(ValueError, match="budget must be an integer >= 1"):
        hpo.random_search(lambda c: 0.0, {"a": hpo.Float(0, 1)}, 0)
    with pytest.raises(TypeError, match=r"space\['a'\] must be Float"):
        hpo.random_search(lambda c: 0.0, {"a": (0, 1)}, 3)
    with pytest.raises(TypeError, match="objective must be callable"):
        hpo.random_search(None, {"a": hpo.Float(0, 1)}, 3)
    with pytest.raises(TypeError, match="objective must be callable"):
        hpo.grid_search(None, {"a": hpo.Float(0, 1)}, 3)
    with pytest.raises(TypeError, match="seed must be an int or a torch.Generator"):
        hpo.random_search(lambda c: 0.0, {"a": hpo.Float(0, 1)}, 3, seed=1.5)


# ---- the one outer loop: descend, and hypergradient descent as a search


def test_descend_gd_matches_the_closed_form_and_keeps_inputs():
    A = torch.tensor([1.0, 0.1], dtype=torch.float64)
    x0 = {"w": torch.tensor([1.0, 1.0], dtype=torch.float64)}
    f = lambda x: (float(0.5 * (A * x["w"] ** 2).sum()), {"w": A * x["w"]})  # noqa: E731
    run = hpo.descend(f, x0, iterations=30, meta_lr=0.5, optimizer="gd")
    torch.testing.assert_close(run.hparams["w"], (1 - 0.5 * A) ** 30, rtol=1e-12, atol=0)
    assert run.values[0] == pytest.approx(0.55) and len(run.values) == 30
    assert torch.equal(x0["w"], torch.ones(2, dtype=torch.float64))  # the start is not modified


def test_descend_adam_matches_torch_adam_and_clips():
    x0 = {"a": torch.tensor([0.3, -2.0], dtype=torch.float64)}
    grad = lambda w: torch.stack([w[0] - 3.0, 4 * w[1] ** 3])  # noqa: E731
    run = hpo.descend(lambda x: (0.0, {"a": grad(x["a"])}), x0, iterations=40, meta_lr=0.1,
                      bounds={"a": (-1.5, torch.tensor([2.0, 5.0], dtype=torch.float64))})
    w = x0["a"].clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=0.1)
    for _ in range(40):
        w.grad = grad(w.detach())
        opt.step()
        with torch.no_grad():
            w.clamp_(torch.tensor([-1.5, -1.5], dtype=torch.float64), torch.tensor([2.0, 5.0], dtype=torch.float64))
    torch.testing.assert_close(run.hparams["a"], w.detach(), rtol=1e-12, atol=1e-12)
    assert float(run.hparams["a"][0]) == 2.0  # held at its upper bound


def test_descend_bad_input():
    x0 = {"a": torch.tensor(1.0)}
    ok = lambda x: (0.0, {"a": torch.tensor(1.0)})  # noqa: E731
    with pytest.raises(ValueError, match="iterations"):
        hpo.descend(ok, x0, iterations=0, meta_lr=0.1)
    with pytest.raises(ValueError, match="meta_lr"):
        hpo.descend(ok, x0, iterations=3, meta_lr=-1.0)
    with pytest.raises(ValueError, match="optimizer"):
        hpo.descend(ok, x0, iterations=3, meta_lr=0.1, optimizer="lbfgs")
    with pytest.raises(ValueError, match="bounds"):
        hpo.descend(ok, x0, iterations=3, meta_lr=0.1, bounds={"b": (0, 1)})
    with pytest.raises(ValueError, match="grads keyed"):
        hpo.descend(lambda x: (0.0, {"b": torch.tensor(1.0)}), x0, iterations=3, meta_lr=0.1)
    with pytest.raises(ValueError, match="diverged at iteration 0"):
        hpo.descend(lambda x: (float("nan"), {"a": torch.tensor(1.0)}), x0, iterations=3, meta_lr=0.1)
    with pytest.raises(TypeError, match="value_and_grad"):
        hpo.descend(None, x0, iterations=3, meta_lr=0.1)


def test_hypergradient_descent_search():
    space = {"x": hpo.Float(-4.0, 4.0), "y": hpo.Float(0.0, 1.0)}
    f = lambda c: (c["x"] - 1) ** 2 + (c["y"] + 1) ** 2  # noqa: E731
    g = lambda c: {"x": 2 * (c["x"] - 1), "y": 2 * (c["y"] + 1)}  # noqa: E731
    h = hpo.hypergradient_descent(f, space, 60, gradient=g, start={"x": -3.0, "y": 0.5})
    assert len(h) == 60 and h.configs[0] == {"x": -3.0, "y": 0.5}
    assert h.best_config["x"] == pytest.approx(1.0, abs=0.05) and all(0.0 <= c["y"] <= 1.0 for c in h.configs)
    assert hpo.hypergradient_descent(f, space, 1, gradient=g).configs == [{"x": 0.0, "y": 0.5}]  # default start
    with pytest.raises(ValueError, match="linear scale"):
        hpo.hypergradient_descent(f, {"x": hpo.Float(1e-3, 1.0, log=True)}, 3, gradient=g)
    with pytest.raises(ValueError, match="start"):
        hpo.hypergradient_descent(f, space, 3, gradient=g, start={"x": 0.0})
    with pytest.raises(TypeError, match="gradient"):
        hpo.hypergradient_descent(f, space, 3, gradient=None)


# ---- the method registry: one shared suite runs against every registered method

SPACE = {"x": hpo.Float(-2.0, 2.0), "y": hpo.Float(0.0, 1.0)}


def _quadratic():
    return hpo.SearchProblem(lambda c: (c["x"] - 0.5) ** 2 + c["y"], SPACE,
                             gradient=lambda c: {"x": 2 * (c["x"] - 0.5), "y": 1.0})


def _needs_optuna(name):
    if name in ("tpe", "gp"):
        pytest.importorskip("optuna")


# "mixture" transfers from other tables: it needs a TableBenchmark problem (tested in test_hpo_transfer.py)
TABLE_ONLY = {"mixture"}


def test_table_only_methods_refuse_a_plain_problem():
    for name in TABLE_ONLY:
        with pytest.raises(ValueError, match="problem must carry sources"):
            hpo.run_method(name, _quadratic(), 5, seed=0)


@pytest.mark.parametrize("name", sorted(set(hpo.METHODS) - {"zero_shot"} - TABLE_ONLY))
def test_every_registered_method(name):
    """The contract: a History of at most ``budget`` trials inside the space, the warm start
    evaluated first, reproducible for a given seed."""
    _needs_optuna(name)
    budget = 10
    h = hpo.run_method(name, _quadratic(), budget, seed=3)
    assert isinstance(h, hpo.History) and 1 <= len(h) <= budget
    assert all(set(c) == {"x", "y"} and -2 <= c["x"] <= 2 and 0 <= c["y"] <= 1 for c in h.configs)
    assert h.values == [(c["x"] - 0.5) ** 2 + c["y"] for c in h.configs]
    assert hpo.run_method(name, _quadratic(), budget, seed=3).configs == h.configs
    warm = {"x": 0.25, "y": 0.75}
    hw = hpo.run_method(f"mine+{name}", _quadratic(), budget, seed=3, starts={"mine": [warm]})
    assert hw.configs[0] == warm and len(hw) <= budget


def test_zero_shot_starts_and_warm_start_size():
    port = [{"x": float(i) / 10, "y": 0.0} for i in range(5)]
    h = hpo.run_method("portfolio", _quadratic(), 3, starts={"portfolio": port})
    assert h.configs == port[:3]  # a zero-shot start: evaluated in order, no more than the budget
    h = hpo.run_method("portfolio+random", _quadratic(), 6, seed=0, starts={"portfolio": port}, warm_start_size=2)
    assert h.configs[:2] == port[:2] and h.configs[2] not in port and len(h) == 6
    assert hpo.parse_method("tpe") == (None, "tpe")
    assert hpo.parse_method("portfolio", ["portfolio"]) == ("portfolio", "zero_shot")
    assert hpo.parse_method("portfolio+gp", ["portfolio"]) == ("portfolio", "gp")


def test_register_a_new_baseline():
    @hpo.register("corners")
    def corners(problem, budget, *, seed, warm_start):
        h = hpo.History()
        for cfg in [{k: getattr(d, end) for k, d in problem.space.items()} for end in ("low", "high")][:budget]:
            h.add(cfg, problem.objective(cfg))
        return h

    try:
        assert hpo.METHODS["corners"] is corners
        assert hpo.run_method("corners", _quadratic(), 5).configs == [{"x": -2.0, "y": 0.0}, {"x": 2.0, "y": 1.0}]
        with pytest.raises(ValueError, match="already registered"):
            hpo.register("corners")(lambda problem, budget, *, seed, warm_start: hpo.History())
    finally:
        del hpo.METHODS["corners"]
    with pytest.raises(ValueError, match="without '\\+'"):
        hpo.register("a+b")


def test_registry_bad_input():
    with pytest.raises(ValueError, match="method must be a registered method"):
        hpo.run_method("smac", _quadratic(), 3)
    with pytest.raises(ValueError, match="method must be a registered method"):
        hpo.run_method("predictor+tpe", _quadratic(), 3)  # no such start
    with pytest.raises(ValueError, match="warm start only"):
        hpo.run_method("zero_shot", _quadratic(), 3)
    with pytest.raises(ValueError, match="needs a problem with a gradient"):
        hpo.run_method("hgd", hpo.SearchProblem(lambda c: c["x"], SPACE), 3)
    with pytest.raises(TypeError, match="problem must have"):
        hpo.run_method("random", lambda c: 0.0, 3)
    with pytest.raises(ValueError, match="budget"):
        hpo.run_method("random", _quadratic(), 0)
    with pytest.raises(ValueError, match="warm_start_size"):
        hpo.run_method("p+random", _quadratic(), 3, starts={"p": [{"x": 0.0, "y": 0.0}]}, warm_start_size=0)
    with pytest.raises(TypeError, match="seed"):
        hpo.run_method("random", _quadratic(), 3, seed="0")
    with pytest.raises(TypeError, match="objective must be callable"):
        hpo.SearchProblem(None, SPACE)


def test_starts_must_be_configurations_of_the_space():
    with pytest.raises(ValueError, match=r"starts\['p'\] must hold configurations"):
        hpo.run_method("p+random", _quadratic(), 3, starts={"p": [{"x": 0.0}]})
